/// How a rollout proceeds: the steps, how long each lasts at least, how the canary
/// is judged, when it may advance, and whom to tell. Read from `policies/*.yaml`.
public struct RolloutPolicy: Hashable, Sendable {
    /// The policy's name (its file name without `.yaml` unless the file says otherwise).
    public var name: String
    /// The service this policy is for; nil for a default policy.
    public var service: String?
    /// Percent of users at each step, in hundredths of a percent, strictly increasing.
    public var steps: [Int]
    /// Seconds a step lasts at least before the next one.
    public var stepMinimum: Int
    public var nonAuthWeight: NonAuthWeight
    public var analysis: Analysis
    public var window: PromotionWindow
    public var smokeChecks: [SmokeCheck]
    public var slack: Slack?
    /// appIds that always get the canary (internal testers) and that never do. Routed
    /// and counted, but not evidence: the hash did not choose them.
    public var allowList: [String]
    public var denyList: [String]
    /// Whether users may opt in or out with `X-Grayscale-Channel` (not evidence either).
    public var optIn: Bool
    /// Hundredths of a percent of randomized users kept on stable at the last step, until
    /// the final verdict; then the canary takes everyone. Without it the last step would
    /// judge nothing: with every user on the canary there is nothing to compare.
    public var holdback: Int
    /// Seconds a release must have been announced (`grayscale release announce`) before the
    /// promotion window it starts in opens; nil: no announcement needed.
    public var announce: Int? = nil
    /// What a failure of one service of a platform release does to the others: roll them
    /// all back (`together`, the default) or only the one that failed (`alone`).
    public var rollback: PlatformRollback = .together
    /// Before the first step, copies of a share of stable's safe requests (GET and HEAD)
    /// go to the canary, whose answers are compared with stable's and discarded: evidence
    /// with no user exposed. nil: no mirror phase.
    public var mirror: Mirror? = nil
    /// Seconds the canary's WebSockets get to close (code 1012) after a rollback before they
    /// are cut; nil: the proxy's own setting.
    public var webSocketDrain: Int? = nil

    /// `mirror:` in a policy.
    public struct Mirror: Hashable, Sendable {
        /// Hundredths of a percent of stable's safe requests copied to the canary.
        public var share: Int
        /// Seconds the mirror phase lasts at least.
        public var duration: Int
        /// Mirrored requests (compared pairs) the phase needs at least before the first step.
        public var minRequests: Int
        /// Seconds after which a phase that has not compared `minRequests` ends anyway (little
        /// safe traffic, a metrics source without pairs), said in the channel; the steps judge on.
        public var maxDuration: Int
        /// Routes besides GET and HEAD the operator marks safe to copy (`POST /v1/query`: a
        /// method and a path prefix); a copy carries the request's body (up to 64 KiB).
        public var routes: [MirrorRoute]

        public init(share: Int, duration: Int, minRequests: Int, maxDuration: Int? = nil, routes: [MirrorRoute] = []) {
            self.share = share
            self.duration = duration
            self.minRequests = minRequests
            self.maxDuration = maxDuration ?? 3 * duration
            self.routes = routes
        }
    }

    /// The canary's width at step `index`: the policy's percent, except that the last
    /// step keeps the holdback on stable until the final verdict.
    public func width(ofStep index: Int) -> Int {
        index == steps.count - 1 ? min(steps[index], Bucket.count - holdback) : steps[index]
    }

    /// The last step whose width is at most `width` (-1 before the first): where a split
    /// set by hand, or resumed, stands in the policy.
    public func step(forWidth width: Int) -> Int {
        steps.indices.last { self.width(ofStep: $0) <= width } ?? -1
    }

    /// Whether the policy says anything about lists or opt-in; if not, the split keeps
    /// whatever rules a human set with `traffic rules`.
    public var routesLists: Bool { !allowList.isEmpty || !denyList.isEmpty || optIn }

    public enum NonAuthWeight: Hashable, Sendable {
        /// Requests without a token get the canary with the width of the user range.
        case followsStep
        /// A fixed weight in hundredths of a percent.
        case fixed(Int)
    }

    public struct Analysis: Hashable, Sendable {
        /// Seconds between two judgements.
        public var interval: Int
        /// Canary requests a step needs at least before it may pass.
        public var minRequests: Int
        public var errorRate: ErrorRate
        public var latency: Latency
        /// Per-version Prometheus queries judged against stable inside the same α.
        public var metrics: [CustomMetric] = []
    }

    /// A judged metric of one's own (as Kayenta, Argo Rollouts and Flagger offer): a
    /// Prometheus query per version, compared with stable's each analysis interval.
    public struct CustomMetric: Hashable, Sendable, Codable {
        public enum Direction: String, Hashable, Sendable, Codable {
            /// Lower is better (error ratios, cold starts): a canary above stable is worse.
            case lower
            /// Higher is better (cache hit rate): a canary below stable is worse.
            case higher
        }

        public var name: String
        /// PromQL with `{{service}}`, `{{version}}`, `{{label}}` and `{{window}}`.
        public var query: String
        public var direction: Direction
        /// The smallest difference from stable, in the query's unit, that counts as worse.
        public var minEffect: Double

        public init(name: String, query: String, direction: Direction, minEffect: Double) {
            self.name = name
            self.query = query
            self.direction = direction
            self.minEffect = minEffect
        }
    }

    public struct ErrorRate: Hashable, Sendable {
        /// Bound on the probability of ever rolling back a release as good as stable, over
        /// the whole rollout and every check (errors and latency share it).
        public var alpha: Double
        /// Bound on the probability that a step advances although the canary makes units
        /// fail `detectRatio` times as often as stable.
        public var beta: Double
        /// How much worse than stable (ratio of failing units) a canary must be caught.
        public var detectRatio: Double
    }

    public struct Latency: Hashable, Sendable {
        /// The smallest slowdown, in milliseconds, that counts: the latency test asks whether
        /// the canary's distribution is more than this slower than stable's. nil: not judged.
        public var minDifferenceMs: Double?
    }

    public struct SmokeCheck: Hashable, Sendable {
        public var name: String
        public var method: String
        public var path: String
        public var expectStatus: Int
        /// Seconds before the check counts as failed.
        public var timeout: Int
    }

    public struct Slack: Hashable, Sendable {
        public var channel: String
        /// Slack user ids allowed to change traffic through the bot.
        public var operators: [String]
    }
}

extension RolloutPolicy {
    /// The built-in defaults; `policies/default.yaml` spells out the same values.
    public static let standard = RolloutPolicy(
        name: "default",
        service: nil,
        steps: [100, 500, 2500, 5000, 10_000],
        stepMinimum: 600,
        nonAuthWeight: .followsStep,
        analysis: Analysis(
            interval: 60,
            minRequests: 50,
            errorRate: ErrorRate(alpha: 0.01, beta: 0.01, detectRatio: 5),
            latency: Latency(minDifferenceMs: 50)
        ),
        window: try! PromotionWindow(days: [.wednesday], start: TimeOfDay(minutes: 14 * 60),
                                     end: TimeOfDay(minutes: 18 * 60), timeZone: "Asia/Shanghai"),
        smokeChecks: [],
        slack: nil,
        allowList: [],
        denyList: [],
        optIn: false,
        holdback: 2000
    )
}

/// `rollback:` in a policy: how a platform release's services fall when one fails.
public enum PlatformRollback: String, Codable, Hashable, Sendable, CaseIterable {
    case together
    case alone
}
