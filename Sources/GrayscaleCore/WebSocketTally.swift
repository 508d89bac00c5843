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

    public init(canaryOpened: Int = 0, canaryDropped: Int = 0, stableOpened: Int = 0, stableDropped: Int = 0) {
        self.canaryOpened = canaryOpened
        self.canaryDropped = canaryDropped
        self.stableOpened = stableOpened
        self.stableDropped = stableDropped
    }

    /// Adds one span's counts (clamped: a hostile proxy cannot overflow them).
    public mutating func add(canary: VersionObservation, stable: VersionObservation) {
        func add(_ a: Int, _ b: Int?) -> Int { min(VersionEvidence.countLimit, a + min(max(b ?? 0, 0), VersionEvidence.countLimit)) }
        canaryOpened = add(canaryOpened, canary.webSocketsOpened)
        canaryDropped = add(canaryDropped, canary.webSocketsDropped)
        stableOpened = add(stableOpened, stable.webSocketsOpened)
        stableDropped = add(stableDropped, stable.webSocketsDropped)
    }

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
        return "the canary's WebSockets dropped without a close frame more often than stable's (\(canaryDropped) of \(canaryOpened) "
            + "opened this step, against \(stableDropped) of \(stableOpened) on stable; p = \(p < 1e-6 ? "<1e-6" : String(format: "%.1g", p))). "
            + "Drops are not judged for rollback (they come in bursts no test can tell from a pod's restart): roll back (-r) or move it by hand"
    }

    /// P(X ≥ k) for X ~ Binomial(n, p), in log space (n up to the clamp; beyond 100,000 a normal approximation).
    static func upperTail(successes k: Int, trials n: Int, probability p: Double) -> Double {
        guard k > 0 else { return 1 }
        guard k <= n else { return 0 }
        guard p < 1 else { return 1 }
        guard p > 0 else { return 0 }
        if n > 100_000 {
            let mean = Double(n) * p, sd = (Double(n) * p * (1 - p)).squareRoot()
            return 0.5 * erfc((Double(k) - 0.5 - mean) / (sd * 2.0.squareRoot()))
        }
        var terms: [Double] = []
        let logP = log(p), logQ = log1p(-p)
        let logAll: Double = lgamma(Double(n) + 1)
        for i in k...n {
            let ways: Double = logAll - lgamma(Double(i) + 1) - lgamma(Double(n - i) + 1)
            let odds: Double = Double(i) * logP + Double(n - i) * logQ
            terms.append(ways + odds)
        }
        guard let top = terms.max() else { return 0 }
        return min(1, exp(top) * terms.reduce(0) { $0 + exp($1 - top) })
    }
}
