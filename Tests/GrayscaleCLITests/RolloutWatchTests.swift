import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleStore
import Logging
import Testing
@testable import grayscale

/// `grayscale rollout status --watch` in a real terminal: tmux runs it in a pane, the test
/// changes the rollout through the database and a controller's ticks, and reads the
/// screen with capture-pane.
@Suite("rollout status --watch in a terminal (tmux)", .serialized)
struct RolloutWatchTests {
    struct Tmux {
        let session = "grayscale-watch-\(UUID().uuidString.prefix(8))"

        /// Runs `tmux ARGUMENTS`; its output when `output` (a command that starts the tmux server
        /// must not get a pipe: the server would keep it open, and reading it would never end).
        @discardableResult
        func run(_ arguments: [String], output: Bool = true) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["tmux"] + arguments
            let out = Pipe()
            process.standardOutput = output ? out : FileHandle.nullDevice
            process.standardError = output ? out : FileHandle.nullDevice
            try process.run()
            let data = output ? out.fileHandleForReading.readDataToEndOfFile() : Data()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }

        /// What the pane shows now.
        func screen() throws -> String { try run(["capture-pane", "-p", "-t", session]) }

        /// Waits (120 s at most) until the pane shows every one of `texts`; the screen either way.
        func waitFor(_ texts: [String]) async throws -> String {
            let deadline = ContinuousClock.now + .seconds(120)
            var shown = try screen()
            while !texts.allSatisfy(shown.contains), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                shown = try screen()
            }
            return shown
        }
    }

    @Test("waits for the rollout, redraws its step and cohort as they change, and exits 3 when it is rolled back")
    func watchUntilRolledBack() async throws {
        let cli = try CLIRunner()
        defer { cli.remove() }
        let policies = cli.directory.appendingPathComponent("policies")
        try FileManager.default.createDirectory(at: policies, withIntermediateDirectories: true)
        try """
            service: engine
            steps: [5, 50, 100]
            stepMinimum: 1h
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            """.write(to: policies.appendingPathComponent("engine.yaml"), atomically: true, encoding: .utf8)
        #expect(try cli.run(["release", "publish", "--service", "engine", "--number", "7", "--label", "v2.1.0", "--upstream", "http://127.0.0.1:9"]).status == 0)

        let tmux = Tmux()
        let command = "\(CLIRunner.binary.path) rollout status --service engine --db \(cli.database) --watch --interval 0.2; echo EXIT=$?; sleep 120"
        try tmux.run(["new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "40", command], output: false)
        defer { _ = try? tmux.run(["kill-session", "-t", tmux.session], output: false) }

        var screen = try await tmux.waitFor(["no rollout yet"])
        #expect(screen.contains("engine: no rollout yet"), "\(screen)")
        #expect(screen.contains("Every 200ms: grayscale rollout status --service engine --watch"), "\(screen)")

        // A canary is published and the controller starts its rollout: the screen is redrawn in place.
        #expect(try cli.run(["release", "publish", "--service", "engine", "--number", "8", "--label", "v2.1.1", "--upstream", "http://127.0.0.1:9"]).status == 0)
        let database = try GrayscaleDatabase.open(path: cli.database)
        let controller = ControllerService(database: database, policiesFolder: policies.path, metrics: NoMetrics(), logger: Logger(label: "test"))
        await controller.tickAll()
        screen = try await tmux.waitFor(["canary Version 8(v 2.1.1), progressing, step 1", "appid range: [0 - 4]"])
        #expect(screen.contains("canary Version 8(v 2.1.1), progressing, step 1"), "\(screen)")
        #expect(screen.contains("Canary Version 8(v 2.1.1) appid range: [0 - 4]"), "\(screen)")
        #expect(screen.contains("Judge: "), "\(screen)")
        #expect(!screen.contains("no rollout yet"), "the old frame is cleared: \(screen)")

        // Someone pins the split: the cohort, the manual mode and the event appear.
        #expect(try cli.run(["traffic", "set", "--service", "engine", "--range", "20:55", "--reason", "by hand"]).status == 0)
        await controller.tickAll()
        screen = try await tmux.waitFor(["[20 - 55]", "(manual)"])
        #expect(screen.contains("appid range: [20 - 55]"), "\(screen)")
        #expect(screen.contains("Judge: nothing: manual mode"), "\(screen)")

        // Rolled back: the last frame says so and the watch exits 3.
        #expect(try cli.run(["rollout", "order", "--service", "engine", "rollback"]).status == 0)
        await controller.tickAll()
        screen = try await tmux.waitFor(["EXIT="])
        #expect(screen.contains("Rollout ended: rolled back"), "\(screen)")
        #expect(screen.contains("EXIT=3"), "\(screen)")
    }

    @Test("a rollout already promoted: one frame, exit 0; a newer release superseding the watched one: exit 4")
    func endings() throws {
        let promoted = RolloutState(service: "engine", release: ReleaseRef(number: 8, label: "v8"), phase: .promoted,
                                    evidence: CanaryEvidence(policy: .standard), splitRevision: 1, now: Date())
        let frame = RolloutWatch.Frame(service: "engine", rollout: promoted, split: nil, verdicts: [], audit: [], following: promoted.release)
        #expect(RolloutWatch.ending(of: frame) == .promoted)
        var newer = promoted
        newer.release = ReleaseRef(number: 9, label: "v9")
        newer.phase = .progressing
        let superseded = RolloutWatch.Frame(service: "engine", rollout: newer, split: nil, verdicts: [], audit: [], following: promoted.release)
        #expect(RolloutWatch.ending(of: superseded) == .superseded)
        #expect(RolloutWatch.lines(superseded).first == "engine: the rollout of Version 8(v 8) was superseded by Version 9(v 9)")
        var going = frame
        going.rollout?.phase = .progressing
        #expect(RolloutWatch.ending(of: going) == nil)
    }
}
