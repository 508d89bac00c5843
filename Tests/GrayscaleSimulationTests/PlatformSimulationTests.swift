import Foundation
import Testing
import GrayscaleCore
@testable import GrayscaleSimulation

/// Issue 16 point 5: a platform release replayed through the real reconciler, its services
/// under one salt advancing together, beside the same services released each on its own.
@Suite("Platform simulation")
struct HeavyPlatformSimulationTests {
    static let root = SimulationTests.root

    static func scenario(_ text: String) throws -> PlatformScenario {
        try PlatformScenario.parse(text, file: "test.yaml", workingDirectory: root.path)
    }

    /// Only the incompatibility: every service is fine alone, Engine's new events break Events' new consumer.
    static let incompatibleOnly = """
        name: incompatible-only
        seed: 5
        start: "2026-11-25T14:00:00+08:00"
        duration: 4h
        population: {users: 2000}
        traffic: {requestsPerUserPerHour: 20}
        policy: policies/platform.yaml
        platformRelease:
          label: 2.1.1
          services:
            engine: {number: 8}
            registry: {number: 5}
            events: {number: 3}
          incompatibilities:
            - {between: [engine, events], fails: events, errorRate: 0.5}
        """

    @Test("the library's platform scenario meets its expectations, with a report per service and for the platform")
    func library() async throws {
        let report = try await offThePool {
            PlatformReport.make(try PlatformScenario.load(path: Self.root.appendingPathComponent("simulations/platform-incompatible.yaml").path,
                                                          workingDirectory: Self.root.path))
        }
        #expect(report.passed, "\(report.expectations.filter { !$0.ok })")
        #expect(report.platform.services.map(\.service) == ["engine", "registry", "events"])
        // Rolled back together: every service back on stable, whichever failed first.
        #expect(report.platform.services.allSatisfy { $0.outcome == "rolledBack" })
        #expect(report.separate.services.first { $0.service == "engine" }?.outcome != "rolledBack", "alone, engine has no fault of its own")
        #expect(report.text.contains("one salt, together") && report.text.contains("registry 5"))
    }

    @Test("an incompatibility between two new services: one salt meets it with the first cohort and rolls all back within minutes; each on its own it is still unseen after 4 h (seeds 1–4)")
    func incompatibilityShowsEarlyUnderOneSalt() async throws {
        let scenario = try Self.scenario(Self.incompatibleOnly)
        let runs = try await offThePool {
            (1...4).map { seed in (PlatformSimulation.run(scenario, mode: .platform, seed: UInt64(seed)),
                                   PlatformSimulation.run(scenario, mode: .separate, seed: UInt64(seed))) }
        }
        for (together, alone) in runs {
            #expect(together.outcome == "rolledBack")
            #expect(together.services.allSatisfy { $0.outcome == "rolledBack" }, "\(together.services)")
            // The first cohort is 1% of 2,000 users: at most that many can have been hurt.
            #expect(together.usersHurt <= 20, "one salt hurt \(together.usersHurt)")
            #expect((together.rolledBackAfter ?? .max) <= 600, "one salt rolled back \(together.rolledBackAfter ?? -1) s after the first failure")
            // Each on its own, a user is on both new versions only by chance (1% × 1% at first): after the same
            // four hours the incompatibility is still unseen, and Events' canary goes on toward 100%.
            let events = alone.services.first { $0.service == "events" }
            #expect(events?.outcome == "inProgress", "\(alone.services)")
        }
    }

    @Test("a platform release with no fault and no incompatibility is not rolled back")
    func goodPlatformRelease() async throws {
        let text = Self.incompatibleOnly.components(separatedBy: "  incompatibilities:")[0]
        let run = try await offThePool { PlatformSimulation.run(try Self.scenario(text), mode: .platform) }
        #expect(run.outcome != "rolledBack", "\(run.services.compactMap(\.rollbackReason))")
        #expect(run.usersHurt == 0)
    }

    @Test("a broken platform scenario names the file, the line and the field", arguments: [
        ("name: x\nstart: \"2026-11-25T14:00:00Z\"\nduration: 1h\npopulation: {users: 10}\nplatformRelease:\n  label: p\n  services:\n    engine: {number: 8}\n",
         "test.yaml:8: platformRelease.services: needs at least two services"),
        ("name: x\nstart: \"2026-11-25T14:00:00Z\"\nduration: 1h\npopulation: {users: 10}\nplatformRelease:\n  label: p\n  services:\n    engine: {number: 8}\n    events: {number: 3}\n  incompatibilities:\n    - {between: [engine, gateway], fails: engine, errorRate: 0.5}\n",
         "test.yaml:11: platformRelease.incompatibilities[0].between: 'gateway' is not a service of the platform release"),
        ("name: x\nstart: \"2026-11-25T14:00:00Z\"\nduration: 1h\npopulation: {users: 10}\nplatformRelease:\n  label: p\n  services:\n    engine: {number: 8}\n    events: {number: 3}\n  incompatibilities:\n    - {between: [engine, events], fails: registry, errorRate: 0.5}\n",
         "test.yaml:11: platformRelease.incompatibilities[0].fails: must be one of engine, events"),
        ("name: x\nstart: \"2026-11-25T14:00:00Z\"\nduration: 1h\npopulation: {users: 10}\nplatformRelease:\n  label: p\n  services:\n    engine: {number: 8, faults: [{users: {trait: nobody}, errorRate: 0.5}]}\n    events: {number: 3}\n",
         "test.yaml:8: platformRelease.services.engine.faults[0].users.trait: unknown trait 'nobody' (population.traits has: )"),
    ])
    func broken(_ text: String, _ message: String) {
        #expect(throws: GrayscaleError(message)) { try PlatformScenario.parse(text, file: "test.yaml") }
    }
}
