/// The release bot's replies, in the design document's shape:
///
///     Executor: @kaiyuzeng
///     GrayScale Status: Done
///     Stable Version 7(v 2.1.0) : other
///     Canary Version 8(v 2.1.1) appid range: [20 - 55]
///     Non-Auth GrayScale Weight: 36%
///
/// followed by the rollout's step and the last verdict with its reason.
public enum BotReply {
    public static func status(executor: String, status: String, split: TrafficSplit?, rollout: RolloutState?, steps: Int) -> String {
        var lines = ["Executor: @\(executor)", "GrayScale Status: \(status)"]
        if let split { lines += split.statusLines }
        lines += rolloutLines(rollout, steps: steps)
        return lines.joined(separator: "\n")
    }

    public static func rolloutLines(_ rollout: RolloutState?, steps: Int) -> [String] {
        guard let rollout, rollout.phase.isActive else { return [] }
        var line = "Rollout: \(rollout.phase.rawValue)"
        if rollout.step >= 0 { line += ", step \(rollout.step + 1) of \(steps)" }
        if rollout.manual { line += ", manual mode (resume to continue)" }
        var lines = [line]
        if let hold = rollout.holdReason, !rollout.manual { lines.append("Holding: \(hold)") }
        if let verdict = rollout.lastVerdict { lines.append("Last verdict: \(verdict.outcome.rawValue): \(verdict.reason)") }
        return lines
    }

    /// `rules`: who gets the canary and why.
    public static func rules(executor: String, split: TrafficSplit, policy: RolloutPolicy) -> String {
        var lines = ["Executor: @\(executor)", "GrayScale Status: Done", "Service: \(split.service) (split revision \(split.revision))"]
        if let canary = split.canary {
            lines.append("Canary \(canary.release) appid range: \(canary.range), salt \(canary.salt)")
        } else {
            lines.append("Canary: none (all traffic to stable)")
        }
        lines.append("Non-Auth GrayScale Weight: \(formatHundredths(split.nonAuthWeight))%")
        lines += split.ruleLines
        lines.append("Policy: \(policy.name), steps \(policy.steps.map { formatHundredths($0) + "%" }.joined(separator: " → ")), window \(policy.window.summary)")
        return lines.joined(separator: "\n")
    }

    public static let help = """
        Release bot commands (-m names the service):
        -c -m engine              start the canary on the policy's first step
        -g -m engine -p 30        canary gets percent buckets 0-29 (30% of users)
        -g -m engine -p 20:55     canary gets percent buckets 20 through 55 (36%)
        -f -m engine [--force]    finish: the canary becomes stable
        -r -m engine              roll all traffic back to stable
        -l -m engine              list traffic
        rules -m engine           routing rules: range, salt, weights, lists, window
        pause | resume -m engine  stop or continue automatic steps
        status -m engine          the rollout's step and last verdict
        Long forms: --init --gray --finish --rollback --list --module --percent --non-auth
        """
}
