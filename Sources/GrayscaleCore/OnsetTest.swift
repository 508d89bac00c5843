import Foundation

/// The error e-process for breakage that shows as a step's new cohort arrives. Most
/// release faults (a rejected input, a missing region, a bad dependency) hit a user on
/// their first request to the new version, so a bad canary's failing units come in a
/// burst just after each widening, while stable's failing units keep their steady rate.
///
/// It bets on the same events as the rest of the error test (a unit's failure under a
/// split, the canary's with probability p under the null; see `CanaryEvidence`) but
/// with a ratio that fades with the time since the step began:
/// r(t) = 1 + (r₀ − 1)·e^(−t/τ). The bet placed on a failure depends only on when it
/// happened and on what came before, never on its version, so each component's
/// likelihood-ratio product is a test martingale under "the canary is no worse" exactly
/// as the constant-ratio one is. A constant ratio high enough to catch a burst pays for
/// every stable failure for as long as the step lasts; a fading one stops paying once
/// the burst would have passed, so what a step's first minutes showed is kept.
///
/// At every step the whole wealth is bet again: the mixture's value when a step ends
/// is carried (a factor) and the new step starts a fresh mixture. Re-betting one's
/// wealth at a stopping time keeps a test martingale, so one failing canary user at a
/// small first step still counts at the next step.
///
/// **First requests.** The sharpest form of the same bet: a failure on a unit's first
/// request under the current split (`UnitEvent.fresh`). Whether a unit's first request
/// fails depends on the unit and on the version, never on its bucket, so among such
/// failures the canary's share is p under the null, the same p as any failure's: a
/// second family of components bets on these failures alone, with a constant ratio,
/// and ignores every other one. Stable's first requests fail at the background rate
/// (and a chronic broken client's, once per split), not at the rate of stable's failing
/// units, so these bets are not drained by stable's steady failures at any time in the
/// step, while a release that breaks a share f of users on their first request makes
/// the canary's first requests fail (f + b)/b times as often as stable's (b the
/// background): about 75 for the name-rule incident, 100 for 10% of requests failing.
///
/// What this assumes, beyond the rest of the test: that being moved to another version
/// does not by itself make a user's first request fail (a lost session, a cold cache);
/// a release whose users fail only because they moved is judged worse. The time-faded
/// components assume the same in a step's first minutes. The proxy marks first
/// requests as they arrive and records a unit's failures in arrival order
/// (`ProxyStatistics.record`), so which failure is first never depends on a version's
/// latency. A source that cannot mark them (Prometheus, a proxy older than the mark)
/// leaves these components at 1, and the time-faded ones then count half as much as
/// before they existed. A rollout stored before these components existed keeps its old
/// formula (`fresh` is nil) until it ends.
///
/// The components: r₀ = 20 is a fault that hits a few percent of users (the name-rule
/// incident: 7.5% of users, each failing on their first request, arrive about twenty
/// times as fast as stable's background on the canary's share), r₀ = 80 a fault that
/// hits a third of them; τ = 5 min is the first request of a user who calls a dozen
/// times an hour, τ = 20 min one who calls a few times. Grosser breakage is caught by
/// any component after two or three users.
public struct OnsetTest: Codable, Hashable, Sendable {
    /// r₀ of each component.
    public static let ratios: [Double] = [20, 80]
    /// τ of each component, in seconds.
    public static let fades: [Double] = [300, 1200]
    /// The ratios of the first-request components.
    public static let freshRatios: [Double] = [5, 20, 100, 500]

    /// log of the wealth carried from the steps before this one.
    public var logCarried: Double = 0
    /// log likelihood ratio of each (r₀, τ) component since this step began, r₀-major.
    public var logLR: [Double] = Array(repeating: 0, count: Self.ratios.count * Self.fades.count)
    /// log likelihood ratio of each first-request component (`freshRatios`) since this
    /// step began; nil in a rollout stored before they existed.
    public var fresh: [Double]? = Array(repeating: 0, count: Self.freshRatios.count)
    /// When this step began (seconds since 1970, data time); nil before any step.
    public var stepStartedAt: Double?

    public init() {}

    /// log of the e-value: the carried wealth times this step's mixture (all components weigh alike).
    public var logE: Double { logCarried + logMeanExp(logLR + (fresh ?? [])) }

    /// A new step: the mixture's value is carried and a fresh one starts.
    public mutating func startStep(at time: Double) {
        if stepStartedAt != nil { logCarried = logE }
        logLR = logLR.map { _ in 0 }
        fresh = fresh?.map { _ in 0 }
        stepStartedAt = time
    }

    /// `canary` and `stable` failures at `time`, each the canary's with probability `p`
    /// under the null; `fresh` when they were their units' first requests under the split.
    public mutating func add(p: Double, canary: Int, stable: Int, at time: Double, fresh isFresh: Bool = false) {
        let started = stepStartedAt ?? time
        stepStartedAt = started
        let elapsed = max(0, time - started)
        for (ratioIndex, ratio) in Self.ratios.enumerated() {
            for (fadeIndex, fade) in Self.fades.enumerated() {
                logLR[ratioIndex * Self.fades.count + fadeIndex] +=
                    CanaryEvidence.logLR(p: p, ratio: 1 + (ratio - 1) * exp(-elapsed / fade), canary: canary, stable: stable)
            }
        }
        guard isFresh, var components = fresh, components.count == Self.freshRatios.count else { return }
        for (index, ratio) in Self.freshRatios.enumerated() {
            components[index] += CanaryEvidence.logLR(p: p, ratio: ratio, canary: canary, stable: stable)
        }
        fresh = components
    }
}
