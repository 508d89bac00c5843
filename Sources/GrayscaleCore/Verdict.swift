import Foundation

/// The judgement of one analysis interval, with the numbers behind it.
public struct Verdict: Codable, Hashable, Sendable {
    public enum Outcome: String, Codable, Hashable, Sendable {
        case pass
        case fail
        case inconclusive
    }

    public var outcome: Outcome
    public var reason: String
    /// A failure that rolls back at once (every failure does since checks share one α).
    public var critical: Bool
    /// Counts, rates, the test statistic and its threshold: why, in numbers.
    public var numbers: [String: Double]

    public init(_ outcome: Outcome, _ reason: String, critical: Bool = false, numbers: [String: Double] = [:]) {
        self.outcome = outcome
        self.reason = reason
        self.critical = critical
        // Stored as JSON, which has no infinity: a number beyond any meaning is clamped.
        self.numbers = numbers.mapValues { $0.isNaN ? 0 : min(max($0, -Double.greatestFiniteMagnitude), .greatestFiniteMagnitude) }
    }
}
