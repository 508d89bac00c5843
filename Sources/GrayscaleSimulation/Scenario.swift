import Foundation
import GrayscaleCore

/// A past incident (or a good release) to replay against a policy.
public struct Scenario: Sendable {
    public var name: String
    public var description: String
    public var seed: UInt64
    public var start: Date
    /// Offset of the scenario's local time from UTC, from `start` (for the daily traffic shape).
    public var utcOffsetSeconds: Int
    /// Seconds simulated.
    public var duration: Int
    public var population: Population
    public var traffic: Traffic
    public var baseline: Baseline
    public var releases: [ScenarioRelease]
    public var policy: RolloutPolicy
    /// Where the policy came from (a path, or "inline").
    public var policySource: String
    public var commands: [ScenarioCommand]
    /// Users whose requests fail on every version (a broken client).
    public var noisyUsers: Int
    /// Seconds after the first error from a bad release before a human rolls it back (baselines).
    public var humanDelay: Int
    /// Seconds per statistics window: how often the controller sees new evidence.
    public var window: Int
    public var platform: Platform
    public var expect: Expectations

    /// How the platform takes a committed split: after `applyLag` seconds, a rollback after `rollbackDelay`.
    public struct Platform: Sendable {
        public var applyLag: Int
        public var rollbackDelay: Int
    }

    public struct Population: Sendable {
        public var users: Int
        public var anonymousShare: Double
        public var traits: [String: Double]
        /// Spread of activity between users: log-normal with this σ (0: everyone alike).
        public var activitySigma: Double = 0
        /// Anonymous clients that keep their sticky cookie (they carry `anonymousShare` of the requests).
        public var anonymousClients: Int = 500
        /// Of those, clients whose requests fail on every version (a broken script).
        public var brokenAnonymousClients: Int = 0
        /// The policy's allow-listed appIds as clients: requests per hour each, and the share that fail on every version.
        public var allowListedRequestsPerHour: Double = 0
        public var allowListedErrorRate: Double = 0
    }

    public struct Traffic: Sendable {
        public var requestsPerUserPerHour: Double
        public var shape: Shape
        /// Share of requests that are safe (GET, HEAD): what a mirror phase may copy to the canary.
        public var safeShare: Double = 0

        public enum Shape: String, Sendable { case flat, businessHours = "business-hours" }
    }

    /// Every version's background: errors, and a log-normal latency through p50 and p99.
    public struct Baseline: Sendable {
        public var errorRate: Double
        public var p50Ms: Double
        public var p99Ms: Double
        /// Extra latency of a version's first requests (cold instances), fading over `coldStartSeconds`.
        public var coldStartMs: Double = 0
        public var coldStartSeconds: Int = 0
    }

    public struct Expectations: Sendable {
        public var outcome: String?
        public var affectedUsersAtMost: Int?
        public var rollbackWithin: Int?
    }
}

public struct ScenarioRelease: Sendable {
    public var at: Int
    public var service: String
    public var number: Int
    public var label: String
    public var faults: [Fault]

    public var isBad: Bool { faults.contains { $0.errorRate > 0 || $0.latencyMs > 0 } }
}

/// Who a fault hits, how, and from when (seconds after its release).
public struct Fault: Sendable {
    public enum Target: Sendable, Equatable {
        case everyone
        case trait(String)
        case anonymous
        /// A share of all requests.
        case requests(Double)
    }

    public var target: Target
    public var errorRate: Double
    public var latencyMs: Double
    public var from: Int
    /// Starts only once the canary's width reaches this many hundredths of a percent.
    public var fromWidth: Int = 0
}

public struct ScenarioCommand: Sendable {
    public var at: Int
    public var actor: String
    public var text: String
}
