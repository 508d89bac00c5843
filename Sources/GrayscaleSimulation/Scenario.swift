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
    public var expect: Expectations

    public struct Population: Sendable {
        public var users: Int
        public var anonymousShare: Double
        public var traits: [String: Double]
    }

    public struct Traffic: Sendable {
        public var requestsPerUserPerHour: Double
        public var shape: Shape

        public enum Shape: String, Sendable { case flat, businessHours = "business-hours" }
    }

    public struct Baseline: Sendable {
        public var errorRate: Double
        public var p50Ms: Double
        public var p99Ms: Double
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
}

public struct ScenarioCommand: Sendable {
    public var at: Int
    public var actor: String
    public var text: String
}
