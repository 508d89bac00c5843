import Foundation

/// An anytime-valid test that the canary's error rate is no worse than stable's.
///
/// Conditioning on error events: under the null (canary as good as stable) each
/// event comes from the canary with probability ρ, the canary's share of requests
/// in its interval. Under the alternative "canary error rate r times stable's" that
/// probability is ρ·r / (ρ·r + 1 − ρ). The statistic is a mixture, with equal weights,
/// of the likelihood ratios for r in `ratios`: a nonnegative martingale under the
/// null, so by Ville's inequality the chance it ever reaches 1/α, however often it
/// is checked, is at most α.
///
/// Errors cluster by user (one broken client fails on every version), so an event is
/// a (user, interval) with at least one error, and each user gives at most
/// `perUserCap` events over the whole rollout: a single user cannot reach the
/// threshold alone. Anonymous errors count one event each.
public struct SequentialErrorTest: Codable, Hashable, Sendable {
    public var ratios: [Double]
    /// Log likelihood ratio of each alternative in `ratios`.
    public var logLikelihoodRatios: [Double]
    /// Events used so far per user (both versions).
    public var userEvents: [String: Int]
    public var perUserCap: Int
    public var canaryEvents: Int
    public var stableEvents: Int

    public init(detectRatio: Double, perUserCap: Int = 2) {
        // Around the ratio the policy asks to detect: milder and stronger regressions too.
        ratios = [max(1.5, detectRatio / 2.5), detectRatio, detectRatio * 4]
        logLikelihoodRatios = Array(repeating: 0, count: ratios.count)
        userEvents = [:]
        self.perUserCap = perUserCap
        canaryEvents = 0
        stableEvents = 0
    }

    /// The mixture likelihood ratio: evidence against "canary as good as stable".
    public var likelihoodRatio: Double {
        logLikelihoodRatios.map(exp).reduce(0, +) / Double(ratios.count)
    }

    /// Whether the evidence crossed 1/α: the canary is worse than stable.
    public func rejects(alpha: Double) -> Bool { likelihoodRatio >= 1 / alpha }

    /// Adds one interval's errors.
    public mutating func update(with observation: IntervalObservation) {
        let share = observation.canaryShare
        guard share > 0, share < 1 else { return }
        let canary = events(observation.canary)
        let stable = events(observation.stable)
        canaryEvents += canary
        stableEvents += stable
        for (index, ratio) in ratios.enumerated() {
            let alternative = share * ratio / (share * ratio + 1 - share)
            logLikelihoodRatios[index] += Double(canary) * log(alternative / share)
                + Double(stable) * log((1 - alternative) / (1 - share))
        }
    }

    /// The events a version contributes: capped per user, or per request without users.
    private mutating func events(_ version: VersionObservation) -> Int {
        guard let users = version.affectedUsers else { return version.errors }
        var count = version.anonymousErrors
        for user in users where userEvents[user, default: 0] < perUserCap {
            userEvents[user, default: 0] += 1
            count += 1
        }
        return count
    }
}
