import Foundation

/// Judges a canary against stable on the evidence so far. Pure: the evidence is passed
/// in and updated.
public enum CanaryJudge {
    /// - Parameters:
    ///   - observation: canary and stable over the span just ended.
    ///   - share: the canary's share of randomized users at the current step (0–1).
    ///   - stepRequests: canary requests since the current step began, this span included.
    public static func judge(_ observation: IntervalObservation, analysis: RolloutPolicy.Analysis, evidence: inout CanaryEvidence,
                             share: Double, stepRequests: Int) -> Verdict {
        let canary = observation.canary, stable = observation.stable
        if let canaryEvidence = canary.evidence, let stableEvidence = stable.evidence {
            evidence.update(canary: canaryEvidence, stable: stableEvidence, at: observation.to)
        } else {
            evidence.updateWithoutUnits(canaryRequests: canary.requests, canaryErrors: canary.errors,
                                        stableRequests: stable.requests, stableErrors: stable.errors, at: observation.to)
        }
        let threshold = 1 / evidence.alpha
        let progress = evidence.acceptanceProgress(share: share)
        let logE = evidence.logEValues
        var numbers: [String: Double] = [
            "canaryRequests": Double(canary.requests), "stableRequests": Double(stable.requests),
            "canaryErrors": Double(canary.errors), "stableErrors": Double(stable.errors),
            "eValue": exp(min(logE.combined, 690)), "threshold": threshold,
            "errorEValue": exp(min(logE.errors, 690)), "latencyEValue": exp(min(logE.latency, 690)),
            "canaryFailingUnits": Double(evidence.canaryFailures), "stableFailingUnits": Double(evidence.stableFailures),
            "canarySlowRequests": Double(evidence.canarySlow), "stableSlowRequests": Double(evidence.stableSlow),
            "acceptanceHave": Double(progress.have), "acceptanceNeed": Double(progress.need),
            "stepRequests": Double(stepRequests), "minRequests": Double(analysis.minRequests),
        ]
        if let p99 = canary.p99Ms { numbers["canaryP99Ms"] = p99 }
        if let p99 = stable.p99Ms { numbers["stableP99Ms"] = p99 }
        return verdict(evidence, logE: logE, numbers: numbers, progress: progress, stepRequests: stepRequests, minRequests: analysis.minRequests)
    }

    /// The verdict the evidence supports, in words a release engineer reads in Slack.
    static func verdict(_ evidence: CanaryEvidence, logE: (errors: Double, latency: Double, combined: Double), numbers: [String: Double],
                        progress: (have: Int, need: Int), stepRequests: Int, minRequests: Int) -> Verdict {
        let threshold = 1 / evidence.alpha
        let eValue = exp(min(logE.combined, 690))
        if logE.combined >= -log(evidence.alpha) {
            let latencyDrove = evidence.errorWeight < 1
                && log(1 - evidence.errorWeight) + logE.latency > log(evidence.errorWeight) + logE.errors
            let reason = latencyDrove
                ? String(format: "canary slower than stable by more than %.0f ms: e-value %@ reached 1/α = %.0f (%d canary and %d stable requests over stable's p99 threshold)",
                         evidence.latencyEffectMs ?? 0, format(eValue), threshold, evidence.canarySlow, evidence.stableSlow)
                : String(format: "canary errors above stable's: e-value %@ reached 1/α = %.0f (%d failing units on the canary, %d on stable)",
                         format(eValue), threshold, evidence.canaryFailures, evidence.stableFailures)
            return Verdict(.fail, reason, critical: true, numbers: numbers)
        }
        let ratio = format(evidence.detectRatio)
        if !evidence.accepts {
            return Verdict(.inconclusive, "waiting for evidence: \(progress.have) of \(progress.need) failing units needed to rule out a canary \(ratio)× worse than stable (e-value \(format(eValue)) of \(format(threshold)))",
                           numbers: numbers)
        }
        guard stepRequests >= minRequests else {
            return Verdict(.inconclusive, "too little traffic: \(stepRequests) canary requests this step, \(minRequests) needed", numbers: numbers)
        }
        if evidence.stepFailures == 0 {
            return Verdict(.pass, "canary healthy: no unit failed on either version in this step (\(stepRequests) canary requests)", numbers: numbers)
        }
        return Verdict(.pass, "canary healthy: a canary \(ratio)× worse than stable is ruled out (\(evidence.canaryFailures) failing units on the canary, \(evidence.stableFailures) on stable; e-value \(format(eValue)) of \(format(threshold)))",
                       numbers: numbers)
    }

    /// Two significant figures, without exponents for everyday sizes.
    static func format(_ value: Double) -> String {
        if value >= 1e6 { return String(format: "%.1e", value) }
        if value >= 10 || value == value.rounded() { return String(format: "%.0f", value) }
        return String(format: value >= 1 ? "%.1f" : "%.2f", value)
    }
}
