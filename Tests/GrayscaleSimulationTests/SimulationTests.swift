import Foundation
import Testing
import GrayscaleCore
@testable import GrayscaleSimulation

/// Runs CPU-heavy work on a thread of its own, off the cooperative pool other tests need.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

@Suite("Simulation harness")
struct SimulationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Scenario paths (the policy) are relative to the working directory: the repository root.
    func load(_ name: String, policy: String? = nil) throws -> Scenario {
        try Scenario.load(path: Self.root.appendingPathComponent("simulations/\(name).yaml").path, policyOverride: policy,
                          workingDirectory: Self.root.path)
    }

    @Test("the same seed gives a byte-identical JSON report; another seed, other draws")
    func determinism() throws {
        let scenario = try load("yaml-name-rule")
        let first = SimulationReport.make(scenario).json()
        let second = SimulationReport.make(scenario).json()
        #expect(first == second)
        let other = SimulationReport.make(scenario, seed: scenario.seed + 1)
        #expect(other.json() != first)
        #expect(other.grayscale.requests != SimulationReport.make(scenario).grayscale.requests)
    }

    @Test("the name-rule incident under policies/default.yaml hurts at most 5 users; both baselines are reported")
    func nameRuleIncident() throws {
        let report = SimulationReport.make(try load("yaml-name-rule"))
        #expect(report.policy == "policies/default.yaml")
        #expect(report.grayscale.outcome == "rolledBack")
        #expect(report.grayscale.usersHurt <= 5)
        #expect(report.noGrayscale.mode == .noGrayscale)
        #expect(report.fixedSteps.mode == .fixedSteps)
        // Without grayscale every user with a dotted name who deploys before the rollback is hurt: about 194.
        #expect((150...240).contains(report.noGrayscale.usersHurt), "no grayscale hurt \(report.noGrayscale.usersHurt)")
        #expect(report.fixedSteps.usersHurt > report.grayscale.usersHurt)
        #expect(report.passed)
        let json = report.json()
        #expect(json.contains(#""noGrayscale""#) && json.contains(#""fixedSteps""#) && json.contains(#""usersHurt""#))
    }

    @Test("every scenario of the library meets its expectations")
    func library() async throws {
        let folder = Self.root.appendingPathComponent("simulations").path
        let files = try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { $0.hasSuffix(".yaml") && !PlatformScenario.isPlatform(path: folder + "/" + $0) }.sorted()
        #expect(files.count >= 9)
        let reports = try await offThePool { try files.map { SimulationReport.make(try load(String($0.dropLast(5)))) } }
        for (file, report) in zip(files, reports) {
            #expect(report.passed, "\(file): \(report.expectations.filter { !$0.ok })")
        }
    }

    @Test("good releases are not rolled back: noisy baseline, one noisy user")
    func goodReleases() throws {
        for name in ["good-noisy-baseline", "good-one-noisy-user"] {
            let report = SimulationReport.make(try load(name))
            #expect(report.grayscale.outcome == "promoted", "\(name)")
            #expect(!report.grayscale.falseRollback, "\(name)")
        }
    }

    @Test("Monte Carlo reports the spread of users hurt and of the time to rollback")
    func monteCarlo() async throws {
        let scenario = try load("yaml-name-rule")
        let report = try await offThePool { MonteCarloReport.make(scenario, runs: 20) }
        #expect(report.runs == 20)
        // A run whose 1% cohort holds fewer than two broken users waits at 1% for evidence
        // (hours at a 0.1% background): it is never promoted, and hurts no one else.
        #expect(report.rollbackRate >= 0.3)
        #expect(report.usersHurt.mean <= 5)
        #expect(report.usersHurt.p95 >= report.usersHurt.p50)
        #expect(report.rolledBackAfter != nil)
        // α = 1% bounds false rollbacks over many runs, not in every handful: 40 runs of a
        // harmless release on a 2% background stay within α + 3σ (≈ 5.7%), so at most 2.
        let good = try await offThePool { MonteCarloReport.make(try load("good-noisy-baseline"), runs: 40) }
        #expect(good.falseRollbackRate <= 2.0 / 40, "false rollbacks \(good.falseRollbackRate)")
    }

    @Test("the chart is an SVG with the timeline, the verdicts and the rollback")
    func chart() throws {
        let svg = SimulationChart.svg(SimulationReport.make(try load("yaml-name-rule")))
        #expect(svg.hasPrefix("<svg"))
        #expect(svg.hasSuffix("</svg>"))
        #expect(svg.contains("rollback"))
        #expect(svg.contains("canary % of users"))
    }

    /// Broken scenario files and the exact error each gives.
    static let broken: [(String, String)] = [
        ("missing-name", "missing-name.yaml:1: name: required"),
        ("bad-start", "bad-start.yaml:2: start: expected an ISO 8601 time with an offset, e.g. 2026-11-25T14:00:00+08:00 (got 'next wednesday')"),
        ("bad-duration", "bad-duration.yaml:3: duration: expected a duration such as 30s, 10m or 1h30m (got 'six hours')"),
        ("unknown-field", "unknown-field.yaml:6: expected: unknown field (known fields: name, description, seed, start, duration, population, traffic, baseline, releases, policy, commands, expect, noisyUsers, humanDelay, window, platform)"),
        ("unknown-trait", "unknown-trait.yaml:13: releases[0].faults[0].users.trait: unknown trait 'dotted' (population.traits has: dottedName)"),
        ("share-over-one", "share-over-one.yaml:6: population.anonymousShare: must be at least 0.0 and at most 0.99 (got '1.5')"),
        ("numbers-decrease", "numbers-decrease.yaml:7: releases[1].number: release numbers must increase (got 7 after 8)"),
        ("fault-without-effect", "fault-without-effect.yaml:11: releases[0].faults[0]: a fault needs errorRate or latencyMs"),
        ("bad-command", "bad-command.yaml:7: commands[0].text: -p percent range '55:20': buckets run 0 to 99 and LOW must not exceed HIGH"),
        ("bad-outcome", "bad-outcome.yaml:7: expect.outcome: expected rolledBack, promoted or inProgress (got 'fine')"),
        ("no-releases", "no-releases.yaml:5: releases: needs at least one release"),
        ("two-targets", "two-targets.yaml:11: releases[0].faults[0]: give at most one of users, anonymous, requests"),
    ]

    @Test("a broken scenario names the file, the line and the field", arguments: broken)
    func brokenScenario(file: String, message: String) throws {
        let url = try #require(Bundle.module.url(forResource: file, withExtension: "yaml", subdirectory: "Fixtures/broken-scenarios"))
        let error = #expect(throws: GrayscaleError.self) { try Scenario.load(path: url.path) }
        #expect(error?.message == url.deletingLastPathComponent().path + "/" + message)
    }

    @Test("a scenario's policy file that does not exist is named")
    func missingPolicy() throws {
        let url = try #require(Bundle.module.url(forResource: "missing-policy-file", withExtension: "yaml", subdirectory: "Fixtures/broken-scenarios"))
        let error = #expect(throws: GrayscaleError.self) { try Scenario.load(path: url.path) }
        #expect(error?.message.hasPrefix(url.path + ":6: policy: policies/does-not-exist.yaml: cannot read the policy file") == true)
    }
}
