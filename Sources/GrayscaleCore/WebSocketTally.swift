import Foundation

/// The WebSockets each version opened (upgrades answered 101) and those its upstream
/// dropped without a close frame (1006), over the current step.
///
/// **Why drops hold a step instead of rolling it back.** Drops come in bursts that have
/// nothing to do with a release: a pod's restart, a drained node, a balancer's reset drop
/// every socket of one version at once, and the canary's few pods make such a burst look
/// like the canary's fault. No test on drops keeps the rollout's α without knowing which
/// pod each socket was on, so drops never roll a canary back. They do gate it: a step
/// does not pass while the canary's sockets drop more often than stable's (a one-sided
/// binomial test at level `level`: given D drops in all, the canary's count is
/// Binomial(D, its share of opened sockets) if it is no worse), and the channel is told.
/// A false hold costs time, never users; a canary that kills its sockets stays at the
/// step it was caught at until a human rolls it back or moves it by hand.
public struct WebSocketTally: Codable, Hashable, Sendable {
    public var canaryOpened: Int
    public var canaryDropped: Int
    public var stableOpened: Int
    public var stableDropped: Int
    /// The end of the last span in which a canary socket dropped (seconds since 1970).
    public var lastCanaryDropAt: Double?

    public init(canaryOpened: Int = 0, canaryDropped: Int = 0, stableOpened: Int = 0, stableDropped: Int = 0, lastCanaryDropAt: Double? = nil) {
        self.canaryOpened = canaryOpened
        self.canaryDropped = canaryDropped
        self.stableOpened = stableOpened
        self.stableDropped = stableDropped
        self.lastCanaryDropAt = lastCanaryDropAt
    }

    /// Adds one span's counts, ending at `time` (clamped: a hostile proxy cannot overflow them).
    public mutating func add(canary: VersionObservation, stable: VersionObservation, at time: Date) {
        func add(_ a: Int, _ b: Int?) -> Int { min(VersionEvidence.countLimit, a + min(max(b ?? 0, 0), VersionEvidence.countLimit)) }
        canaryOpened = add(canaryOpened, canary.webSocketsOpened)
        canaryDropped = add(canaryDropped, canary.webSocketsDropped)
        stableOpened = add(stableOpened, stable.webSocketsOpened)
        stableDropped = add(stableDropped, stable.webSocketsDropped)
        if (canary.webSocketsDropped ?? 0) > 0 { lastCanaryDropAt = time.timeIntervalSince1970 }
    }

    /// Why the step may not pass at `now`, or nil. A burst (a pod's restart) holds the step
    /// for `quiet` seconds after the canary's last drop, then lets it go; a canary that keeps
    /// dropping its sockets stays held.
    public func problem(now: Date, quiet: Int) -> String? {
        guard let last = lastCanaryDropAt, now.timeIntervalSince1970 - last < Double(max(quiet, 1)) else { return nil }
        return problem
    }

    /// The start of every hold reason this gate gives: a hold that only updates its counts is not told again.
    public static let reasonPrefix = "the canary's WebSockets dropped without a close frame more often than stable's"

    /// Level of the one-sided test; with at least `minimumDrops` canary drops.
    public static let level = 0.001
    public static let minimumDrops = 3

    /// Why the step may not pass, or nil.
    public var problem: String? {
        let drops = canaryDropped + stableDropped, opened = canaryOpened + stableOpened
        guard canaryDropped >= Self.minimumDrops, opened > 0 else { return nil }
        // A canary's socket count can lag its drops across a span's edge: its share is at least a drop's worth.
        let share = min(1, max(Double(canaryOpened), 1) / Double(max(opened, 1)))
        let p = Self.upperTail(successes: canaryDropped, trials: drops, probability: share)
        guard p < Self.level else { return nil }
        return Self.reasonPrefix + " (\(canaryDropped) of \(canaryOpened) "
            + "opened this step, against \(stableDropped) of \(stableOpened) on stable; p = \(p < 1e-6 ? "<1e-6" : String(format: "%.1g", p))). "
            + "Drops are not judged for rollback (they come in bursts no test can tell from a pod's restart): roll back (-r) or move it by hand"
    }

    /// P(X ≥ k) for X ~ Binomial(n, p), summed exactly from k up (in log space, each term
    /// from the one before) until the terms no longer count.
    static func upperTail(successes k: Int, trials n: Int, probability p: Double) -> Double {
        guard k > 0 else { return 1 }
        guard k <= n else { return 0 }
        guard p < 1 else { return 1 }
        guard p > 0 else { return 0 }
        // At or below the mean the tail is about a half or more: nothing to hold for, and no long sum.
        guard Double(k) > Double(n) * p else { return 1 }
        let logOdds = log(p) - log1p(-p)
        var logTerm = lgamma(Double(n) + 1) - lgamma(Double(k) + 1) - lgamma(Double(n - k) + 1) + Double(k) * log(p) + Double(n - k) * log1p(-p)
        let first = logTerm
        var sum = 0.0  // of exp(term - first)
        var i = k
        while i <= n, i - k < 10_000_000 {
            let relative = exp(logTerm - first)
            sum += relative
            // Past the mode the terms fall geometrically: stop once they no longer change the sum.
            if relative < 1e-17 * sum, Double(i) > Double(n) * p { break }
            logTerm += log(Double(n - i)) - log(Double(i + 1)) + logOdds
            i += 1
        }
        return min(1, exp(first) * sum)
    }
}
