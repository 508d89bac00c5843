import Foundation

/// What one version did over one analysis interval, from whichever metrics source.
public struct VersionObservation: Codable, Hashable, Sendable {
    public var requests: Int
    /// Server-side errors (5xx, connect failures, timeouts).
    public var errors: Int
    /// The randomized traffic the judge may use (failing units, latency histogram); nil
    /// when the source cannot tell units apart (Prometheus), and errors then count per request.
    public var evidence: VersionEvidence?
    /// For people: percentiles of all of the version's traffic. The judge never uses them.
    public var p50Ms: Double?
    public var p99Ms: Double?
    /// WebSockets opened (upgrades answered 101) and dropped by the upstream without a close
    /// frame; nil from a source that does not count them.
    public var webSocketsOpened: Int?
    public var webSocketsDropped: Int?

    public init(requests: Int, errors: Int, evidence: VersionEvidence? = nil, p50Ms: Double? = nil, p99Ms: Double? = nil,
                webSocketsOpened: Int? = nil, webSocketsDropped: Int? = nil) {
        self.requests = requests
        self.errors = errors
        self.evidence = evidence
        self.p50Ms = p50Ms
        self.p99Ms = p99Ms
        self.webSocketsOpened = webSocketsOpened
        self.webSocketsDropped = webSocketsDropped
    }

    public var errorRate: Double { requests == 0 ? 0 : Double(errors) / Double(requests) }
}

/// Canary and stable over the same interval.
public struct IntervalObservation: Codable, Hashable, Sendable {
    public var from: Date
    public var to: Date
    public var canary: VersionObservation
    public var stable: VersionObservation
    /// The policy's own metrics, by name, when they were read for this span.
    public var custom: [String: CustomMetricSample]

    public init(from: Date, to: Date, canary: VersionObservation, stable: VersionObservation, custom: [String: CustomMetricSample] = [:]) {
        self.from = from
        self.to = to
        self.canary = canary
        self.stable = stable
        self.custom = custom
    }
}

/// One custom metric's value for both versions over the same span.
public struct CustomMetricSample: Codable, Hashable, Sendable {
    public var canary: Double
    public var stable: Double

    public init(canary: Double, stable: Double) {
        self.canary = canary
        self.stable = stable
    }
}

extension IntervalObservation {
    /// Only who failed: what a span read a second time may still say. A unit's failure
    /// counted again under the same split is no evidence (its odds are 0 or 1), but
    /// requests, latency and custom samples would count twice.
    public var failuresOnly: IntervalObservation {
        func strip(_ version: VersionObservation) -> VersionObservation {
            var evidence = VersionEvidence()
            evidence.failures = version.evidence?.failures ?? []
            return VersionObservation(requests: 0, errors: 0, evidence: evidence)
        }
        return IntervalObservation(from: from, to: to, canary: strip(canary), stable: strip(stable))
    }
}
