import Foundation
import GrayscaleCore
import Synchronization

/// A scenario replayed under its policy, beside the two baselines on the same traffic.
public struct SimulationReport: Codable, Sendable, Equatable {
    public var scenario: String
    public var description: String
    public var seed: UInt64
    public var policy: String
    public var grayscale: SimulationRun
    public var noGrayscale: SimulationRun
    public var fixedSteps: SimulationRun
    public var expectations: [ExpectationResult]
    public var passed: Bool

    public struct ExpectationResult: Codable, Sendable, Equatable {
        public var name: String
        public var expected: String
        public var actual: String
        public var ok: Bool
    }

    public static func make(_ scenario: Scenario, seed: UInt64? = nil) -> SimulationReport {
        let seed = seed ?? scenario.seed
        let grayscale = SimulationEngine.run(scenario, mode: .grayscale, seed: seed)
        let results = scenario.expect.check(outcome: grayscale.outcome, usersHurt: grayscale.usersHurt, rolledBackAfter: grayscale.rolledBackAfter)
        return SimulationReport(
            scenario: scenario.name, description: scenario.description, seed: seed, policy: scenario.policySource,
            grayscale: grayscale,
            noGrayscale: SimulationEngine.run(scenario, mode: .noGrayscale, seed: seed),
            fixedSteps: SimulationEngine.run(scenario, mode: .fixedSteps, seed: seed),
            expectations: results, passed: results.allSatisfy(\.ok))
    }


    /// The side-by-side table a person reads.
    public var text: String {
        func cell(_ value: String) -> String { value.padding(toLength: 14, withPad: " ", startingAt: 0) }
        func row(_ name: String, _ value: (SimulationRun) -> String) -> String {
            name.padding(toLength: 22, withPad: " ", startingAt: 0) + cell(value(grayscale)) + cell(value(fixedSteps)) + value(noGrayscale)
        }
        let duration: (Int?) -> String = { $0.map(formatDuration) ?? "-" }
        var lines = ["\(scenario): \(description)", "policy \(policy), seed \(seed)",
                     row("", { $0.mode == .grayscale ? "grayscale" : $0.mode == .fixedSteps ? "fixed steps" : "no grayscale" }),
                     row("outcome", \.outcome),
                     row("detected after", { duration($0.detectedAfter) }),
                     row("rolled back after", { duration($0.rolledBackAfter) }),
                     row("requests", { String($0.requests) }),
                     row("requests failed", { String($0.requestsFailed) }),
                     row("users hurt", { String($0.usersHurt) }),
                     row("user-minutes exposed", { String(format: "%.0f", $0.userMinutesExposed) }),
                     row("false rollback", { $0.falseRollback ? "yes" : "no" })]
        if let reason = grayscale.rollbackReason { lines.append("why: \(reason)") }
        for result in expectations {
            lines.append("expect \(result.name) \(result.expected): \(result.actual) \(result.ok ? "ok" : "FAILED")")
        }
        return lines.joined(separator: "\n")
    }
}

/// `--runs N`: the spread of outcomes over seeds.
public struct MonteCarloReport: Codable, Sendable {
    public var scenario: String
    public var runs: Int
    /// Over the runs in which a bad release's fault began (all runs of a harmless scenario).
    public var usersHurt: Distribution
    /// Runs in which a bad release's fault began.
    public var faultRuns: Int
    public var rolledBackAfter: Distribution?
    public var rollbackRate: Double
    /// Of runs whose rolled-back release had no fault.
    public var falseRollbackRate: Double
    public var simulatedRequests: Int

    public struct Distribution: Codable, Sendable {
        public var mean: Double
        public var p50: Double
        public var p95: Double

        init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            mean = (sorted.reduce(0, +) / Double(sorted.count) * 100).rounded() / 100
            p50 = sorted[(sorted.count - 1) / 2]
            p95 = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.95).rounded(.up)) - 1)]
        }
    }

    public static func make(_ scenario: Scenario, runs: Int) -> MonteCarloReport {
        // Runs are independent and seeded by their index: the cores share them.
        let slots = Mutex([SimulationRun?](repeating: nil, count: runs))
        DispatchQueue.concurrentPerform(iterations: runs) { index in
            let run = SimulationEngine.run(scenario, mode: .grayscale, seed: scenario.seed &+ UInt64(index))
            slots.withLock { $0[index] = run }
        }
        let results = slots.withLock { $0.map { $0! } }
        let faulty = results.filter { $0.faultStartedAt != nil }
        let judged = scenario.releases.contains(where: \.isBad) ? faulty : results
        return MonteCarloReport(
            scenario: scenario.name, runs: runs,
            usersHurt: Distribution(judged.map { Double($0.usersHurt) }) ?? Distribution([0])!, faultRuns: faulty.count,
            rolledBackAfter: Distribution(results.compactMap(\.rolledBackAfter).map(Double.init)),
            rollbackRate: Double(results.filter { $0.outcome == "rolledBack" }.count) / Double(runs),
            falseRollbackRate: Double(results.filter(\.falseRollback).count) / Double(runs),
            simulatedRequests: results.reduce(0) { $0 + $1.requests })
    }
}

extension Scenario.Expectations {
    /// Each expectation the scenario states, against what a run did.
    func check(outcome actualOutcome: String, usersHurt: Int, rolledBackAfter: Int?) -> [SimulationReport.ExpectationResult] {
        var results: [SimulationReport.ExpectationResult] = []
        if let outcome {
            results.append(.init(name: "outcome", expected: outcome, actual: actualOutcome, ok: actualOutcome == outcome))
        }
        if let most = affectedUsersAtMost {
            results.append(.init(name: "affectedUsersAtMost", expected: "≤ \(most)", actual: String(usersHurt), ok: usersHurt <= most))
        }
        if let within = rollbackWithin {
            results.append(.init(name: "rollbackWithin", expected: "≤ \(formatDuration(within))",
                                 actual: rolledBackAfter.map(formatDuration) ?? "no rollback", ok: rolledBackAfter.map { $0 <= within } ?? false))
        }
        return results
    }
}

/// A report as stable JSON: sorted keys, the same bytes for the same seed.
public protocol StableJSON: Encodable {}

extension StableJSON {
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }
}

extension SimulationReport: StableJSON {}
