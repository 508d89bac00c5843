import Foundation
import GRDB
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleServer
import GrayscaleStore
import GrayscaleTestSupport
import Logging
import Testing

/// Two `grayscale controller` processes on one SQLite file for a whole series of
/// rollouts (each verifying its smoke check first), while the suite SIGKILLs the leader
/// at random points (also during `verifying` and during a bot command), freezes it past
/// its lease (SIGSTOP), kills bot commands half-way and retries them by id, and takes the
/// metrics source down. After every fault the stored state must agree with itself.
/// `GRAYSCALE_CHAOS_SEED=n` replays a run's choices; `GRAYSCALE_CHAOS_KILLS=n` runs longer.
@Suite("Chaos: kills, freezes and faults with two controllers", .serialized)
struct ChaosTests {
    static let steps = [1, 5, 25, 50, 100]
    static let widths = steps.map { $0 == 100 ? 8000 : $0 * 100 }  // the last step holds 20% back until the final verdict

    struct Report: CustomStringConvertible {
        var seed: UInt64
        var kills = 0, freezes = 0, botCommands = 0, botKills = 0, metricsOutages = 0, releases = 0, verifyingKills = 0
        var terminations = 0, databaseLocks = 0, slackFailures = 0, slackDelivered = 0, slackTwice = 0
        /// Seconds from SIGKILL of the leader until another lease token decides.
        var takeovers: [Double] = []
        var splitsLost = 0, evidenceTwice = 0, evidenceLost = 0, stuck = 0, twoDeciders = 0, notificationsLost = 0, commandsTwice = 0
        var description: String {
            let faults = "kills survived \(kills) (\(verifyingKills) during verifying, \(botKills) bot commands killed), freezes \(freezes), "
                + "SIGTERMs \(terminations), database locked past the busy timeout \(databaseLocks), "
            let more = "bot commands \(botCommands), Slack answers 500 or 429 \(slackFailures) times, "
                + "metrics outages \(metricsOutages), releases \(releases)"
            let takeover = "takeover after SIGKILL of the leader: median \(ChaosTests.format(ChaosTests.median(takeovers))) s, "
                + "max \(ChaosTests.format(takeovers.max() ?? 0)) s (lease 1 s)"
            let outcome = "splits lost \(splitsLost), evidence read twice \(evidenceTwice), evidence skipped \(evidenceLost), rollouts stuck \(stuck), "
                + "moments with two deciders \(twoDeciders), notifications lost \(notificationsLost) (\(slackDelivered) delivered, "
                + "\(slackTwice) twice), commands applied twice \(commandsTwice)"
            return "chaos seed \(seed): " + faults + more + "; " + takeover + "; " + outcome
        }
    }

    /// Waits for a process without blocking a thread of the cooperative pool (other suites run on it meanwhile).
    static func exited(_ process: Process) async {
        var zombieSince: ContinuousClock.Instant?
        while process.isRunning, !gaveUp(process, zombieSince: &zombieSince) { try? await Task.sleep(for: .milliseconds(5)) }
    }

    /// The same for a `defer`, where nothing can be awaited.
    static func exitedNow(_ process: Process) {
        var zombieSince: ContinuousClock.Instant?
        while process.isRunning, !gaveUp(process, zombieSince: &zombieSince) { usleep(5_000) }
    }

    /// Foundation on Linux now and then misses a child's exit: once (2026-12-07) a SIGKILLed
    /// controller stayed a zombie, `isRunning` stayed true and the suite waited until it was
    /// killed. A zombie has exited; Foundation gets 2 s to notice before the wait gives up on it.
    private static func gaveUp(_ process: Process, zombieSince: inout ContinuousClock.Instant?) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")"), stat.index(close, offsetBy: 2) < stat.endIndex,
              stat[stat.index(close, offsetBy: 2)] == "Z" else { return false }
        let since = zombieSince ?? .now
        zombieSince = since
        return ContinuousClock.now - since > .seconds(2)
    }

    static func format(_ value: Double) -> String { String(format: "%.2f", value) }

    static func median(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.sorted()[values.count / 2] }

    final class Controller {
        let cli: CLIRunner
        let arguments: [String]
        let log: URL
        var process: Process

        init(cli: CLIRunner, name: String, policies: URL, stats: String) throws {
            self.cli = cli
            arguments = ["controller", "--db", cli.database, "--policies", policies.path, "--stats", stats, "--tick", "100ms", "--lease", "1s"]
            log = cli.directory.appendingPathComponent("\(name).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process = Process()
            try start()
        }

        func start() throws { process = try CLIRunner.launch(arguments, log: log) }

        var pid: Int32 { process.processIdentifier }

        func kill(_ signal: Int32 = SIGKILL) async {
            Glibc.kill(pid, signal)
            if signal == SIGKILL || signal == SIGTERM { await ChaosTests.exited(process) }
        }
    }

    func writePolicy(in directory: URL) throws -> URL {
        let folder = directory.appendingPathComponent("policies")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try """
            name: default
            steps: [\(Self.steps.map(String.init).joined(separator: ", "))]
            stepMinimum: 1s
            analysis: {interval: 1s, minRequests: 1}
            smokeChecks: [{name: health, path: /healthz, expectStatus: 200, timeout: 2s}]
            slack: {channel: "#chaos", operators: [chaos]}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            """.write(to: folder.appendingPathComponent("default.yaml"), atomically: true, encoding: .utf8)
        return folder
    }

    /// Everything that must hold after any fault; adds what it finds to the report.
    func check(_ database: GrayscaleDatabase, _ report: inout Report, round: Int) throws {
        for (broken, problem) in try RolloutInvariants.check(database, widths: Self.widths, releases: 8...60) {
            switch broken {
            case .split: report.splitsLost += 1
            case .token: report.twoDeciders += 1
            case .evidenceSkipped: report.evidenceLost += 1
            case .evidenceTwice: report.evidenceTwice += 1
            }
            Issue.record("round \(round): \(problem)")
        }
        // Every decision the controller audited was also said in the channel (same transaction).
        // (The audit first: a tick committed between the two reads adds to both, but only the later read sees it.)
        let audited = try database.auditLog(service: "engine", limit: 1_000_000)
        let said = Set(try Self.notificationTexts(database.path))
        for entry in audited where entry.actor == Reconciler.actor {
            if let detail = entry.detail, !said.contains("engine: \(detail)") {
                report.notificationsLost += 1
                Issue.record("round \(round): audited but never notified: \(detail)")
            }
        }
    }

    /// Every notification written, delivered or not.
    static func notificationTexts(_ path: String) throws -> [String] {
        try DatabaseQueue(path: path).read { db in try String.fetchAll(db, sql: "SELECT text FROM notification WHERE deadAt IS NULL") }
    }

    func leader(_ database: GrayscaleDatabase, among controllers: [Controller]) throws -> Controller? {
        guard let lease = try database.controllers(seenSince: .distantPast).lease, lease.expiresAt > Date() else { return nil }
        let parts = lease.holder.split(separator: ":")
        guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]) else { return nil }
        return controllers.first { $0.pid == pid }
    }

    @Test("SIGKILL at ≥ 50 seeded points, freezes, killed bot commands and metrics outages: nothing lost, nothing twice, one decider")
    func chaos() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["GRAYSCALE_CHAOS_SEED"].flatMap(UInt64.init) ?? 20_261_128
        let killsWanted = environment["GRAYSCALE_CHAOS_KILLS"].flatMap(Int.init) ?? 50
        var random = SeededRandom(seed: seed)
        var report = Report(seed: seed)
        print("chaos seed \(seed) (replay with GRAYSCALE_CHAOS_SEED=\(seed))")

        let cli = try CLIRunner()
        defer { cli.remove() }
        let stats = try StatsFixtureServer()
        defer { stats.stop() }
        let policies = try writePolicy(in: cli.directory)
        var number = 7
        func publish() async throws {
            let output = try await cli.runOffThePool(["release", "publish", "--service", "engine", "--number", "\(number)", "--label", "v\(number)",
                                      "--upstream", stats.url])
            #expect(output.status == 0, "\(output.stderr)")
            stats.releases.withLockedValue { $0 = [number - 1, number] }
            number += 1
        }
        try await publish()
        try await publish()
        report.releases = 1
        let database = try GrayscaleDatabase.open(path: cli.database)
        // Slack fails often (500, 429 with Retry-After): the notifier delivers the outbox all the same.
        let slack = try FakeSlack()
        defer { slack.stop() }
        slack.script.withLockedValue { script in
            script = (0..<3_000).map { _ in
                let roll = random.int(0...99)
                return roll < 12 ? (status: 500, retryAfter: nil) : roll < 18 ? (status: 429, retryAfter: 1) : (status: 200, retryAfter: nil)
            }
        }
        let notifier = NotifierService(database: database, slack: SlackClient(target: .botToken("xoxb-chaos", apiBase: slack.url)),
                                       baseBackoff: 0.05, maxBackoff: 1, logger: Logger(label: "chaos.notifier"))
        let delivering = Task {
            while !Task.isCancelled {
                _ = try? await notifier.deliverDue()
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        defer { delivering.cancel() }
        let controllers = [try Controller(cli: cli, name: "a", policies: policies, stats: stats.url),
                           try Controller(cli: cli, name: "b", policies: policies, stats: stats.url)]
        defer { for controller in controllers { Glibc.kill(controller.pid, SIGCONT); Glibc.kill(controller.pid, SIGKILL); Self.exitedNow(controller.process) } }
        var commandNumber = 0
        var round = 0
        let deadline = Date().addingTimeInterval(240)
        while report.kills < killsWanted, Date() < deadline {
            round += 1
            try await Task.sleep(for: .milliseconds(random.int(50...400)))
            // A rollout that ended makes room for the next release, which verifies first.
            if let rollout = try database.rolloutState("engine"), !rollout.phase.isActive {
                try await publish()
                report.releases += 1
                try await Task.sleep(for: .milliseconds(random.int(0...300)))
            }
            let roll = random.int(0...99)
            let leading = try leader(database, among: controllers)
            let target = leading ?? controllers[random.int(0...1)]
            if round == 12 {
                // Another process holds the database's write lock past every busy timeout (5 s): ticks fail and are retried.
                let locker = try DatabaseQueue(path: cli.database)
                try await locker.writeWithoutTransaction { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    Thread.sleep(forTimeInterval: 6)
                    try db.execute(sql: "ROLLBACK")
                }
                try locker.close()
                report.databaseLocks += 1
            } else if roll < 8 {
                // SIGTERM in the middle of whatever the leader is doing: it finishes, hands the lease over and exits 0.
                await target.kill(SIGTERM)
                if target.process.terminationStatus != 0 {
                    Issue.record("round \(round): the controller exited \(target.process.terminationStatus) on SIGTERM")
                }
                report.terminations += 1
                try target.start()
            } else if roll < 60 {
                if try database.rolloutState("engine")?.phase == .verifying { report.verifyingKills += 1 }
                let before = try database.controllers(seenSince: .distantPast).lease
                let killed = Date()
                await target.kill()
                report.kills += 1
                try target.start()
                if leading != nil, let before {
                    // Another token decides within two lease periods (measured, not asserted: timing belongs to the report).
                    for _ in 0..<200 {
                        if let now = try database.controllers(seenSince: .distantPast).lease, now.token > before.token, now.expiresAt > Date() { break }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    report.takeovers.append(Date().timeIntervalSince(killed))
                }
            } else if roll < 72 {
                await target.kill(SIGSTOP)
                try await Task.sleep(for: .milliseconds(random.int(1_200...2_500)))
                await target.kill(SIGCONT)
                report.freezes += 1
            } else if roll < 92 {
                // A bot command, with the leader killed during it; half of the time the bot itself is killed and retried.
                commandNumber += 1
                let id = "chaos-\(seed)-\(commandNumber)"
                let text = random.chance(0.5) ? "pause -m engine" : "resume -m engine"
                let bot = Process()
                bot.executableURL = CLIRunner.binary
                bot.arguments = ["bot", "--db", cli.database, "--policies", policies.path, "--as", "chaos", "--command-id", id, text]
                bot.standardOutput = FileHandle.nullDevice
                bot.standardError = FileHandle.nullDevice
                try bot.run()
                try await Task.sleep(for: .milliseconds(random.int(0...150)))
                await target.kill()
                report.kills += 1
                if random.chance(0.5) {
                    Glibc.kill(bot.processIdentifier, SIGKILL)
                    report.botKills += 1
                }
                await Self.exited(bot)
                try target.start()
                let retry = try await cli.runOffThePool(["bot", "--policies", policies.path, "--as", "chaos", "--command-id", id, text])
                #expect(retry.status == 0)
                report.botCommands += 1
                if text.hasPrefix("pause") {
                    // Do not leave it paused for long: resume with a command of its own.
                    commandNumber += 1
                    try await cli.runOffThePool(["bot", "--policies", policies.path, "--as", "chaos", "--command-id", "chaos-\(seed)-\(commandNumber)", "resume -m engine"])
                }
            } else {
                stats.failing.withLockedValue { $0 = true }
                try await Task.sleep(for: .milliseconds(random.int(300...1_000)))
                stats.failing.withLockedValue { $0 = false }
                report.metricsOutages += 1
            }
            try check(database, &report, round: round)
        }
        // Exactly once: every command id was carried out once, and audited once.
        let chaosAudits = try database.auditLog(service: "engine", limit: 1_000_000).filter { $0.actor == "chaos" && $0.outcome == "done" }.count
        let carriedOut = (1...max(commandNumber, 1)).filter { (try? database.commandResult("chaos-\(seed)-\($0)")) != nil }.count
        if chaosAudits != carriedOut {
            report.commandsTwice += abs(chaosAudits - carriedOut)
            Issue.record("\(carriedOut) commands carried out, \(chaosAudits) audited")
        }
        // Left alone, the last rollout finishes.
        try await cli.runOffThePool(["bot", "--policies", policies.path, "--as", "chaos", "--command-id", "chaos-\(seed)-final", "resume -m engine"])
        let finish = Date().addingTimeInterval(120)
        while try database.rolloutState("engine")?.phase.isActive ?? true, Date() < finish {
            try await Task.sleep(for: .milliseconds(100))
        }
        if try database.rolloutState("engine")?.phase != .promoted {
            report.stuck += 1
            let rollout = try database.rolloutState("engine")
            let recent = try database.auditLog(service: "engine", limit: 1_000_000).suffix(12)
                .map { "\($0.at.timeIntervalSince1970) \($0.actor) \($0.action) \($0.outcome): \($0.detail ?? "")" }
            Issue.record("""
                the last rollout did not finish: \(rollout.map { "\($0.release) \($0.phase) step \($0.step) manual \($0.manual): \($0.holdReason ?? "")" } ?? "none")
                \(recent.joined(separator: "\n"))
                """)
        }
        try check(database, &report, round: round + 1)
        // Every notification reaches Slack once, whatever Slack answered meanwhile.
        for _ in 0..<600 where try !database.undeliveredNotifications().isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        let written = try Self.notificationTexts(cli.database)
        let delivered = slack.delivered.compactMap { $0.json["text"] }
        report.slackDelivered = delivered.count
        report.slackFailures = slack.received.withLockedValue { $0 }.filter { $0.json["_status"] != "200" }.count
        var remaining = Dictionary(written.map { ($0, 1) }, uniquingKeysWith: +)
        for text in delivered { remaining[text, default: 0] -= 1 }
        report.notificationsLost += remaining.values.filter { $0 > 0 }.reduce(0, +)
        report.slackTwice = remaining.values.filter { $0 < 0 }.reduce(0) { $0 - $1 }
        if report.slackTwice > 0 || remaining.values.contains(where: { $0 > 0 }) {
            Issue.record("notifications: \(written.count) written, \(delivered.count) delivered")
        }
        print(report)
        #expect(report.kills >= killsWanted)
        #expect(report.verifyingKills > 0, "the seed never killed during verifying")
    }

    @Test("a full disk under the controller: it stays up, says why, decides nothing, and goes on when space returns")
    func diskFull() async throws {
        let cli = try CLIRunner()
        defer { cli.remove() }
        let stats = try StatsFixtureServer()
        defer { stats.stop() }
        let policies = try writePolicy(in: cli.directory)
        for number in [7, 8] {
            let output = try await cli.runOffThePool(["release", "publish", "--service", "engine", "--number", "\(number)", "--label", "v\(number)",
                                      "--upstream", stats.url])
            #expect(output.status == 0)
        }
        // The disk has room for less than one page: every commit must grow the write-ahead log and fails.
        let database = try GrayscaleDatabase.open(path: cli.database)
        let log = cli.directory.appendingPathComponent("controller.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        process.arguments = ["--fsize=1000:unlimited", "--", CLIRunner.binary.path, "controller", "--db", cli.database, "--policies", policies.path,
                             "--stats", stats.url, "--tick", "100ms", "--lease", "1s"]
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        try await Task.sleep(for: .seconds(3))
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(process.isRunning, "the controller died on a full disk: \(text.suffix(500))")
        #expect(text.contains("disk I/O error") || text.contains("disk is full"), "\(text.suffix(500))")
        #expect(try database.rolloutState("engine") == nil, "nothing was decided without a place to write it")

        // Space returns: the same process goes on.
        let lift = Process()
        lift.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        lift.arguments = ["--pid", "\(process.processIdentifier)", "--fsize=unlimited"]
        try lift.run()
        await Self.exited(lift)
        #expect(lift.terminationStatus == 0, "prlimit could not lift the limit")
        var started = false
        for _ in 0..<100 where !started {
            try await Task.sleep(for: .milliseconds(100))
            started = (try database.rolloutState("engine")?.step ?? -1) >= 0
        }
        #expect(started, "the controller did not go on once the disk had room: \(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(500))")
    }
}
