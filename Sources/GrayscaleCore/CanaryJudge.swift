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
        evidence.updateCustom(observation.custom, at: observation.to)
        evidence.updateMirror(canary.evidence?.mirror)
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
        for metric in evidence.customMetrics {
            numbers["metric.\(metric.name).eValue"] = exp(min(evidence.customMetricLogE(metric.name), 690))
            if let sample = observation.custom[metric.name] {
                numbers["metric.\(metric.name).canary"] = sample.canary
                numbers["metric.\(metric.name).stable"] = sample.stable
            }
        }
        if let mirror = evidence.mirror {
            numbers["mirrorPairs"] = Double(mirror.pairs)
            numbers["mirrorCanaryOnlyFailures"] = Double(mirror.canaryOnlyFailures)
            numbers["mirrorStableOnlyFailures"] = Double(mirror.stableOnlyFailures)
            numbers["mirrorEValue"] = exp(min(mirror.logE, 690))
        }
        if let p99 = canary.p99Ms { numbers["canaryP99Ms"] = p99 }
        if let p99 = stable.p99Ms { numbers["stableP99Ms"] = p99 }
        return verdict(evidence, logE: logE, numbers: numbers, progress: progress, share: share, stepRequests: stepRequests,
                       minRequests: analysis.minRequests)
    }

    /// The verdict the evidence supports, in words a release engineer reads in Slack.
    static func verdict(_ evidence: CanaryEvidence, logE: (errors: Double, latency: Double, combined: Double), numbers: [String: Double],
                        progress: (have: Int, need: Int), share: Double, stepRequests: Int, minRequests: Int) -> Verdict {
        let threshold = 1 / evidence.alpha
        let eValue = exp(min(logE.combined, 690))
        if logE.combined >= -log(evidence.alpha) {
            // Name the check that carries most of the e-value.
            let latencyWeight = 1 - evidence.errorWeight - evidence.customWeight * Double(evidence.customMetrics.count)
            var drivers: [(share: Double, reason: String)] = [(log(evidence.errorWeight) + logE.errors, String(
                format: "canary errors above stable's: e-value %@ reached 1/α = %.0f (%d failing units on the canary, %d on stable)",
                format(eValue), threshold, evidence.canaryFailures, evidence.stableFailures))]
            if latencyWeight > 1e-12 {
                drivers.append((log(latencyWeight) + logE.latency, String(
                    format: "canary slower than stable by more than %.0f ms: e-value %@ reached 1/α = %.0f (%d canary and %d stable requests over stable's p99 threshold)",
                    evidence.latencyEffectMs ?? 0, format(eValue), threshold, evidence.canarySlow, evidence.stableSlow)))
            }
            if let custom = evidence.strongestCustomMetric, let metric = evidence.customMetrics.first(where: { $0.name == custom.name }) {
                drivers.append((log(evidence.customWeight) + custom.logE,
                                "canary worse than stable on \(metric.name) (\(metric.direction == .lower ? "higher" : "lower") by more than \(format(metric.minEffect)) in \(evidence.customWorse[metric.name] ?? 0) of \(evidence.customSeen[metric.name] ?? 0) intervals): e-value \(format(eValue)) reached 1/α = \(format(threshold))"))
            }
            if let mirror = evidence.mirror {
                drivers.append((log(mirror.weight) - log(1 - mirror.weight) + mirror.logE,
                                "\(mirror.summary): e-value \(format(eValue)) reached 1/α = \(format(threshold))"))
            }
            let reason = drivers.max { $0.share < $1.share }!.reason
            return Verdict(.fail, reason, critical: true, numbers: numbers)
        }
        let ratio = format(evidence.detectRatio)
        if !evidence.accepts(share: share) {
            return Verdict(.inconclusive, "waiting for evidence: \(progress.have) of \(progress.need) failing units needed to rule out a canary \(ratio)× worse than stable (e-value \(format(eValue)) of \(format(threshold)))",
                           numbers: numbers)
        }
        guard stepRequests >= minRequests else {
            return Verdict(.inconclusive, "too little traffic: \(stepRequests) canary requests this step, \(minRequests) needed", numbers: numbers)
        }
        if share >= 1 {
            return Verdict(.pass, "every user is on the canary (no holdback): nothing to compare; \(stepRequests) canary requests this step", numbers: numbers)
        }
        if evidence.stepFailures == 0 {
            let bound = -log(evidence.beta) / Double(max(1, stepRequests)) * 100
            return Verdict(.pass, String(format: "canary healthy: no unit failed on either version in this step; a canary failing %@%% of requests or more is ruled out (%d canary requests)",
                                         format(bound), stepRequests), numbers: numbers)
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
