import Foundation

/// Judges one analysis interval of a canary against stable. Pure: the sequential
/// test's state is passed in and updated.
public enum CanaryJudge {
    /// - Parameters:
    ///   - observation: canary and stable over the interval just ended.
    ///   - stepRequests: canary requests since the current step began, this interval included.
    public static func judge(_ observation: IntervalObservation, analysis: RolloutPolicy.Analysis,
                             test: inout SequentialErrorTest, stepRequests: Int) -> Verdict {
        test.update(with: observation)
        let canary = observation.canary, stable = observation.stable
        let threshold = 1 / analysis.errorRate.alpha
        var numbers: [String: Double] = [
            "canaryRequests": Double(canary.requests), "stableRequests": Double(stable.requests),
            "canaryErrors": Double(canary.errors), "stableErrors": Double(stable.errors),
            "canaryErrorRate": canary.errorRate, "stableErrorRate": stable.errorRate,
            "canaryShare": observation.canaryShare, "likelihoodRatio": test.likelihoodRatio, "threshold": threshold,
            "canaryEvents": Double(test.canaryEvents), "stableEvents": Double(test.stableEvents),
            "stepRequests": Double(stepRequests), "minRequests": Double(analysis.minRequests),
        ]
        if let p99 = canary.p99Ms { numbers["canaryP99Ms"] = p99 }
        if let p99 = stable.p99Ms { numbers["stableP99Ms"] = p99 }

        if test.rejects(alpha: analysis.errorRate.alpha) {
            return Verdict(.fail, String(format: "canary errors above stable's: likelihood ratio %.1f reached 1/α = %.0f (canary %d of %d requests failed, stable %d of %d)",
                                         test.likelihoodRatio, threshold, canary.errors, canary.requests, stable.errors, stable.requests),
                           critical: true, numbers: numbers)
        }
        let enoughInInterval = canary.requests >= analysis.minRequests && stable.requests >= analysis.minRequests
        if let maxRate = analysis.errorRate.maxRate, canary.requests >= analysis.minRequests, canary.errorRate > maxRate {
            return Verdict(.fail, String(format: "canary error rate %.2f%% is over the %.2f%% bound (%d of %d requests)",
                                         canary.errorRate * 100, maxRate * 100, canary.errors, canary.requests),
                           critical: true, numbers: numbers)
        }
        if enoughInInterval, let failure = latencyFailure(canary: canary, stable: stable, latency: analysis.latency) {
            return Verdict(.fail, failure, numbers: numbers)
        }
        guard stepRequests >= analysis.minRequests else {
            return Verdict(.inconclusive, "too little traffic: \(stepRequests) canary requests this step, \(analysis.minRequests) needed",
                           numbers: numbers)
        }
        return Verdict(.pass, String(format: "canary healthy: %d of %d requests failed (stable %d of %d), likelihood ratio %.2f below %.0f",
                                     canary.errors, canary.requests, stable.errors, stable.requests, test.likelihoodRatio, threshold),
                       numbers: numbers)
    }

    static func latencyFailure(canary: VersionObservation, stable: VersionObservation, latency: RolloutPolicy.Latency) -> String? {
        if let bound = latency.p99MaxMs, let p99 = canary.p99Ms, p99 > bound {
            return String(format: "canary p99 latency %.0f ms is over the %.0f ms bound", p99, bound)
        }
        if let ratio = latency.p99MaxRatio, let canaryP99 = canary.p99Ms, let stableP99 = stable.p99Ms, stableP99 > 0,
           canaryP99 > ratio * stableP99, canaryP99 - stableP99 >= latency.minDifferenceMs {
            return String(format: "canary p99 latency %.0f ms is over %.2f× stable's %.0f ms", canaryP99, ratio, stableP99)
        }
        if let ratio = latency.p50MaxRatio, let canaryP50 = canary.p50Ms, let stableP50 = stable.p50Ms, stableP50 > 0,
           canaryP50 > ratio * stableP50, canaryP50 - stableP50 >= latency.minDifferenceMs {
            return String(format: "canary p50 latency %.0f ms is over %.2f× stable's %.0f ms", canaryP50, ratio, stableP50)
        }
        return nil
    }
}
