import Foundation
import Glibc
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
        /// A tmux server of the test's own (`-L`), killed at the end with everything in it.
        let socket = "grayscale-watch-\(UUID().uuidString.prefix(8))"
        let session = "watch"

        /// Runs `tmux ARGUMENTS` and returns what it printed. Spawned with posix_spawn, not
        /// Foundation's Process: Process learns that a child ended when every copy of a socket it
        /// hands the child is closed, and the tmux server that `new-session` starts keeps its copy.
        @discardableResult
        func run(_ arguments: [String]) throws -> String {
            var pipe: [Int32] = [0, 0]
            guard Glibc.pipe(&pipe) == 0 else { throw GrayscaleError("pipe: errno \(errno)") }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, pipe[1], 2)
            posix_spawn_file_actions_addclose(&actions, pipe[0])
            posix_spawn_file_actions_addclose(&actions, pipe[1])
            // The test runner's children inherit blocked signals; tmux and the watch get none.
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            var none = sigset_t()
            sigemptyset(&none)
            posix_spawnattr_setsigmask(&attributes, &none)
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
            let argv = (["tmux", "-L", socket] + arguments).map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var pid: pid_t = 0
            let spawned = posix_spawnp(&pid, "tmux", &actions, &attributes, argv, environ)
            close(pipe[1])
            defer { close(pipe[0]) }
            guard spawned == 0 else { throw GrayscaleError("tmux: posix_spawnp: \(spawned)") }
            // The server `new-session` starts inherits the pipe too: read only until the client ends.
            var output = Data()
            var buffer = [UInt8](repeating: 0, count: 65536)
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 {
                var poll = pollfd(fd: pipe[0], events: Int16(POLLIN), revents: 0)
                if Glibc.poll(&poll, 1, 20) > 0 {
                    let count = read(pipe[0], &buffer, buffer.count)
                    if count > 0 { output.append(contentsOf: buffer[..<count]) }
                }
            }
            var poll = pollfd(fd: pipe[0], events: Int16(POLLIN), revents: 0)
            while Glibc.poll(&poll, 1, 0) > 0, poll.revents & Int16(POLLIN) != 0 {
                let count = read(pipe[0], &buffer, buffer.count)
                guard count > 0 else { break }
                output.append(contentsOf: buffer[..<count])
            }
            return String(decoding: output, as: UTF8.self)
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
        // `timeout`: a test process that dies leaves no watch running.
        let command = "timeout 600 \(CLIRunner.binary.path) rollout status --service engine --db \(cli.database) --watch --interval 0.2; echo EXIT=$?; sleep 600"
        try tmux.run(["new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "40", command])
        defer { _ = try? tmux.run(["kill-server"]) }

        var screen = try await tmux.waitFor(["no canary"])
        #expect(screen.contains("engine: no canary; waiting for one to be published"), "\(screen)")
        #expect(screen.contains("Every 0.2s: grayscale rollout status --service engine --watch"), "\(screen)")

        // A canary is published, then the controller starts its rollout: the screen is redrawn in place.
        #expect(try cli.run(["release", "publish", "--service", "engine", "--number", "8", "--label", "v2.1.1", "--upstream", "http://127.0.0.1:9"]).status == 0)
        screen = try await tmux.waitFor(["waiting for the controller"])
        #expect(screen.contains("engine: canary Version 8(v 2.1.1) published; waiting for the controller to start its rollout"), "\(screen)")
        let database = try GrayscaleDatabase.open(path: cli.database)
        let controller = ControllerService(database: database, policiesFolder: policies.path, metrics: NoMetrics(), logger: Logger(label: "test"))
        await controller.tickAll()
        screen = try await tmux.waitFor(["canary Version 8(v 2.1.1), progressing, step 1", "appid range: [0 - 4]"])
        #expect(screen.contains("canary Version 8(v 2.1.1), progressing, step 1"), "\(screen)")
        #expect(screen.contains("Canary Version 8(v 2.1.1) appid range: [0 - 4]"), "\(screen)")
        #expect(screen.contains("Judge: "), "\(screen)")
        #expect(!screen.contains("waiting for the controller"), "the old frame is cleared: \(screen)")

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

    @Test("endings: the followed release's rollout decides; a finished row of an older release is not it; a row replaced by a newer release's, the release's status")
    func endings() throws {
        func state(_ number: Int, _ phase: RolloutState.Phase) -> RolloutState {
            RolloutState(service: "engine", release: ReleaseRef(number: number, label: "v\(number)"), phase: phase,
                         evidence: CanaryEvidence(policy: .standard), splitRevision: 1, now: Date())
        }
        func release(_ number: Int, _ status: ReleaseStatus) -> Release {
            Release(service: "engine", number: number, label: "v\(number)", upstream: "http://127.0.0.1:9", salt: "s", status: status, publishedAt: Date())
        }
        func frame(rollout: RolloutState?, releases: [Release], following: Int?) -> RolloutWatch.Frame {
            RolloutWatch.Frame(service: "engine", rollout: rollout, split: nil, releases: releases, verdicts: [], audit: [],
                               following: following.map { ReleaseRef(number: $0, label: "v\($0)") })
        }
        // Release 9 just published; the stored row is release 8's, promoted: the watch waits for 9's rollout.
        let waiting = frame(rollout: state(8, .promoted), releases: [release(8, .stable), release(9, .canary)], following: 9)
        #expect(RolloutWatch.ending(of: waiting) == nil)
        #expect(RolloutWatch.lines(waiting) == ["engine: canary Version 9(v 9) published; waiting for the controller to start its rollout"])
        #expect(RolloutWatch.ending(of: frame(rollout: state(9, .progressing), releases: [release(9, .canary)], following: 9)) == nil)
        #expect(RolloutWatch.ending(of: frame(rollout: state(9, .promoted), releases: [release(9, .stable)], following: 9)) == .promoted)
        #expect(RolloutWatch.ending(of: frame(rollout: state(9, .rolledBack), releases: [release(9, .rolledBack)], following: 9)) == .rolledBack)
        // 9 ended and 10's rollout replaced its row between two reads: 9's status says how it ended.
        for (status, ending) in [(ReleaseStatus.rolledBack, RolloutWatch.Ending.rolledBack), (.stable, .promoted), (.superseded, .superseded)] {
            let replaced = frame(rollout: state(10, .progressing), releases: [release(9, status), release(10, .canary)], following: 9)
            #expect(RolloutWatch.ending(of: replaced) == ending)
        }
        #expect(RolloutWatch.lines(frame(rollout: nil, releases: [release(8, .stable)], following: nil)) == ["engine: no canary; waiting for one to be published"])
    }
}
