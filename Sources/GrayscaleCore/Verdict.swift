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
    /// A failure that rolls back at once rather than after `failureLimit` intervals.
    public var critical: Bool
    /// Counts, rates, the test statistic and its threshold: why, in numbers.
    public var numbers: [String: Double]

    public init(_ outcome: Outcome, _ reason: String, critical: Bool = false, numbers: [String: Double] = [:]) {
        self.outcome = outcome
        self.reason = reason
        self.critical = critical
        self.numbers = numbers
    }
}
