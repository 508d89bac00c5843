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
    public var allowList: [String]
    public var denyList: [String]
    /// Whether users may opt in or out with `X-Grayscale-Channel`.
    public var optIn: Bool

    public enum NonAuthWeight: Hashable, Sendable {
        /// Requests without a token get the canary with the width of the user range.
        case followsStep
        /// A fixed weight in hundredths of a percent.
        case fixed(Int)
    }

    public struct Analysis: Hashable, Sendable {
        /// Seconds between two judgements.
        public var interval: Int
        /// Requests each version needs in an interval before any verdict; fewer is inconclusive.
        public var minRequests: Int
        public var errorRate: ErrorRate
        public var latency: Latency
        /// Consecutive failed intervals before a rollback.
        public var failureLimit: Int
    }

    public struct ErrorRate: Hashable, Sendable {
        /// Bound on the probability of rolling back a release as good as stable, over the whole rollout.
        public var alpha: Double
        /// Bound on the probability of missing a release whose error rate is `detectRatio` times stable's.
        public var beta: Double
        /// The error-rate ratio against stable the sequential test is built to detect.
        public var detectRatio: Double
        /// A canary error rate above this fails at once (critical), whatever stable does.
        public var maxRate: Double?
    }

    public struct Latency: Hashable, Sendable {
        public var p50MaxRatio: Double?
        public var p99MaxRatio: Double?
        /// Absolute p99 bound in milliseconds.
        public var p99MaxMs: Double?
        /// Ratios only fail when the canary is also at least this many milliseconds slower:
        /// at a few milliseconds, a ratio is noise.
        public var minDifferenceMs: Double
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
            errorRate: ErrorRate(alpha: 0.01, beta: 0.01, detectRatio: 5, maxRate: 0.2),
            latency: Latency(p50MaxRatio: 1.5, p99MaxRatio: 1.5, p99MaxMs: 2000, minDifferenceMs: 50),
            failureLimit: 2
        ),
        window: try! PromotionWindow(days: [.wednesday], start: TimeOfDay(minutes: 14 * 60),
                                     end: TimeOfDay(minutes: 18 * 60), timeZone: "Asia/Shanghai"),
        smokeChecks: [],
        slack: nil,
        allowList: [],
        denyList: [],
        optIn: false
    )
}
