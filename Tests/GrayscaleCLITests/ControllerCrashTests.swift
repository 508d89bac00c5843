import Foundation
import GrayscaleCore
import GrayscaleStore
import Testing

@Suite("Controller crash safety", .serialized)
struct ControllerCrashTests {
    static let steps = [1, 2, 5, 10, 25, 50, 75, 100]

    func writePolicy(in directory: URL) throws -> URL {
        let folder = directory.appendingPathComponent("policies")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try """
            name: default
            steps: [\(Self.steps.map(String.init).joined(separator: ", "))]
            stepMinimum: 1s
            analysis: {interval: 1s, minRequests: 1}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            """.write(to: folder.appendingPathComponent("default.yaml"), atomically: true, encoding: .utf8)
        return folder
    }

    func startController(_ cli: CLIRunner, policies: URL, stats: String) throws -> Process {
        let process = Process()
        process.executableURL = CLIRunner.binary
        process.arguments = ["controller", "--db", cli.database, "--policies", policies.path, "--stats", stats, "--tick", "100ms"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// The stored split, its history and the audit log agree, and the split is a step of the policy.
    func checkConsistency(_ database: GrayscaleDatabase, round: Int) throws {
        let state = try database.serviceState("engine")
        let split = try #require(state.split)
        let widths = Self.steps.map { $0 == 100 ? 8000 : $0 * 100 }  // the last step holds 20% back until the final verdict
        if let canary = split.canary {
            #expect(canary.range.isEmpty || (canary.range.lower == 0 && widths.contains(canary.range.upper)),
                    "round \(round): split \(canary.range) is not a step of the policy")
        }
        let history = try database.splitHistory("engine")
        #expect(history.map(\.revision) == Array(1...history.count), "round \(round): history has gaps")
        #expect(history.last?.split == split, "round \(round): the split is not the last of its history")
        // The canary's share only grows during the rollout: never back to 0%, never a jump past a step.
        let canaryWidths = history.compactMap { $0.split.canary?.release.number == 8 ? $0.split.range.widthHundredths : nil }
        for (before, after) in zip(canaryWidths, canaryWidths.dropFirst()) {
            #expect(after >= before, "round \(round): the canary shrank from \(before) to \(after)")
            if before > 0 { #expect(widths.firstIndex(of: after)! <= widths.firstIndex(of: before)! + 1, "round \(round): skipped a step") }
        }
        // Every split the controller wrote is in the audit log with that split.
        let audited = Set(try database.auditLog(service: "engine", limit: 10_000).compactMap { $0.splitAfter?.revision })
        for change in history where change.actor == "grayscale-controller" {
            #expect(audited.contains(change.revision), "round \(round): split revision \(change.revision) has no audit entry")
        }
        if let rollout = try database.rolloutState("engine"), rollout.phase.isActive, rollout.step >= 0, let canary = split.canary {
            #expect(widths[rollout.step] == canary.range.widthHundredths, "round \(round): rollout step \(rollout.step) disagrees with split \(canary.range)")
        }
    }

    @Test("killed at 20 random points and restarted, the controller continues the same rollout; split and audit stay consistent")
    func killAndRestart() async throws {
        let cli = try CLIRunner()
        defer { cli.remove() }
        let stats = try StatsFixtureServer()
        defer { stats.stop() }
        let policies = try writePolicy(in: cli.directory)
        for (number, label) in [(7, "v7"), (8, "v8")] {
            let output = try cli.run(["release", "publish", "--service", "engine", "--number", "\(number)", "--label", label, "--upstream", "http://127.0.0.1:1"])
            #expect(output.status == 0)
        }
        var random = SystemRandomNumberGenerator()
        var maxWidthSeen = 0
        for round in 1...20 {
            let process = try startController(cli, policies: policies, stats: stats.url)
            try await Task.sleep(for: .milliseconds(Int.random(in: 150...700, using: &random)))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let database = try GrayscaleDatabase.open(path: cli.database)
            try checkConsistency(database, round: round)
            let width = try database.split("engine").canary?.range.widthHundredths ?? 10_000
            #expect(width >= maxWidthSeen, "round \(round): restart lost progress (\(width) after \(maxWidthSeen))")
            maxWidthSeen = max(maxWidthSeen, width)
        }
        print("after 20 kills the canary had reached \(maxWidthSeen / 100)% of users")
        #expect(maxWidthSeen >= 500, "the rollout should have made progress between kills")
        // Left alone, it finishes the rollout.
        let process = try startController(cli, policies: policies, stats: stats.url)
        let database = try GrayscaleDatabase.open(path: cli.database)
        for _ in 0..<200 where try database.serviceState("engine").stable?.number != 8 {
            try await Task.sleep(for: .milliseconds(100))
        }
        process.terminate()
        process.waitUntilExit()
        #expect(try database.serviceState("engine").stable?.number == 8)
        #expect(try database.rolloutState("engine")?.phase == .promoted)
        try checkConsistency(database, round: 21)
    }
}
