import Foundation
import GrayscaleCore
import GrayscaleDemo
import GrayscaleIntegrations
import GrayscaleStore
import GrayscaleTestSupport
import NIOConcurrencyHelpers
import NIOPosix
import Testing

/// Three `grayscale serve` replicas on one real PostgreSQL, a rollout in progress and
/// traffic through every live proxy. The leader is SIGKILLed at 20 seeded points (and
/// restarted, as a supervisor would); PostgreSQL itself is restarted in the middle.
/// `GRAYSCALE_FAILOVER_SEED=n` replays a run. Named Chaos*: it runs with the chaos suite,
/// alone, so that the other suites do not starve its timing on two cores.
@Suite("Chaos: PostgreSQL replicas, failover and a database restart", .serialized)
struct ChaosPostgresFailoverTests {
    static let steps = [1, 5, 25, 50, 100]
    static let widths = steps.map { $0 == 100 ? 8000 : $0 * 100 }

    final class Replica {
        let name: String
        let config: URL
        let log: URL
        let proxyPort: Int
        let adminPort: Int
        var process = Process()

        init(name: String, directory: URL, database: String, policies: URL, stats: String) throws {
            self.name = name
            proxyPort = PostgresServer.freePort()
            adminPort = PostgresServer.freePort()
            config = directory.appendingPathComponent("\(name).yaml")
            log = directory.appendingPathComponent("\(name).log")
            try """
                database: \(database)
                policies: \(policies.path)
                proxy: {listen: "127.0.0.1:\(proxyPort)", accessLog: \(directory.appendingPathComponent("\(name)-access.log").path), statsWindow: 1s}
                admin: {listen: "127.0.0.1:\(adminPort)"}
                controller: {tick: 100ms, lease: 1s, stats: ["\(stats)"]}
                """.write(to: config, atomically: true, encoding: .utf8)
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        }

        func start() throws {
            process = try CLIRunner.launch(["serve", "--config", config.path], log: log,
                                           environment: PostgresServer.environment.merging(["GRAYSCALE_ADMIN_TOKEN": "failover-admin"]) { $1 })
        }

        var pid: Int32 { process.processIdentifier }
    }

    struct Report: CustomStringConvertible {
        var seed: UInt64
        var kills = 0, releases = 0, requests = 0, failedRequests = 0, takeovers: [Double] = [], standbyCommands = 0
        var databaseDown = 0.0, requestsWhileDown = 0, failedWhileDown = 0, progressAfterRestart = false
        var description: String {
            let sorted = takeovers.sorted()
            let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
            return "failover seed \(seed): \(kills) leaders SIGKILLed, \(releases) releases; takeover median \(String(format: "%.2f", median)) s, "
                + "max \(String(format: "%.2f", sorted.last ?? 0)) s (lease 1 s); \(requests) requests through the surviving proxies, \(failedRequests) failed; "
                + "PostgreSQL down \(String(format: "%.1f", databaseDown)) s: \(requestsWhileDown) requests meanwhile, \(failedWhileDown) failed; "
                + "rollout moved on after the restart: \(progressAfterRestart); bot commands through standby replicas' API: \(standbyCommands)"
        }
    }

    @Test("SIGKILL the leader of three replicas at 20 seeded points, restart PostgreSQL once: a new leader within 10 s, no step skipped or shrunk, no evidence twice, no request failed")
    func failover() async throws {
        let seed = ProcessInfo.processInfo.environment["GRAYSCALE_FAILOVER_SEED"].flatMap(UInt64.init) ?? 20_261_128
        var random = SeededRandom(seed: seed)
        var report = Report(seed: seed)
        print("failover seed \(seed) (replay with GRAYSCALE_FAILOVER_SEED=\(seed))")

        let server = try PostgresServer.start()
        let url = try server.createDatabase("failover")
        let cli = try CLIRunner()
        defer { cli.remove() }
        let group = MultiThreadedEventLoopGroup.singleton
        let upstream = try await DemoUpstream(host: "127.0.0.1", port: 0, label: "any", failDotted: false, group: group)
        // The rest of the fleet's statistics: healthy windows for the current releases.
        let stats = try StatsFixtureServer()
        defer { stats.stop() }
        let policies = cli.directory.appendingPathComponent("policies")
        try FileManager.default.createDirectory(at: policies, withIntermediateDirectories: true)
        try """
            name: default
            steps: [\(Self.steps.map(String.init).joined(separator: ", "))]
            stepMinimum: 1s
            analysis: {interval: 1s, minRequests: 1}
            slack: {channel: "#failover", operators: [failover]}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            """.write(to: policies.appendingPathComponent("default.yaml"), atomically: true, encoding: .utf8)

        var number = 7
        func publish() async throws {
            let output = try await cli.runOffThePool(["release", "publish", "--service", "engine", "--number", "\(number)", "--label", "v\(number)",
                                                      "--upstream", "http://127.0.0.1:\(upstream.port)", "--db", url], database: false)
            #expect(output.status == 0, "\(output.stderr)")
            stats.releases.withLockedValue { $0 = [number - 1, number] }
            number += 1
        }
        try await publish()
        try await publish()
        report.releases = 1

        let replicas = try (0..<3).map { try Replica(name: "r\($0)", directory: cli.directory, database: url, policies: policies, stats: stats.url) }
        for replica in replicas { try replica.start() }
        defer { for replica in replicas { Glibc.kill(replica.pid, SIGKILL); replica.process.waitUntilExit() } }
        let client = CurlHTTPClient()
        for replica in replicas { try await waitUntil(30) { (try? await client.send(OutboundRequest(url: "http://127.0.0.1:\(replica.adminPort)/healthz", timeout: 2)))?.status == 200 } }
        let database = try GrayscaleDatabase.open(path: url)
        defer { database.close() }
        // The fleet's routing long poll answers from any replica, woken by the NOTIFY of a change another one wrote.
        for replica in replicas {
            let admin = "http://127.0.0.1:\(replica.adminPort)/api/v1/routing"
            let current = try RoutingSnapshot.decode(try await client.send(OutboundRequest(url: admin, timeout: 5)).body)
            let next = try RoutingSnapshot.decode(try await client.send(OutboundRequest(url: admin + "?after=\(current.version.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)", timeout: 30)).body)
            #expect(next.version != current.version, "\(replica.name)'s long poll answered without a change")
            #expect(try database.split("engine").revision >= (next.services.first?.split?.revision ?? 0))
        }

        // Traffic through every live proxy, counted per proxy; a proxy about to be killed is taken out first.
        let live = NIOLockedValueBox<Set<Int>>(Set(replicas.map(\.proxyPort)))
        let counts = NIOLockedValueBox<(requests: Int, failed: Int, failures: [String])>((0, 0, []))
        let traffic = Task {
            var index = 0
            while !Task.isCancelled {
                let ports = live.withLockedValue { $0 }.sorted()
                guard !ports.isEmpty else { try? await Task.sleep(for: .milliseconds(20)); continue }
                index += 1
                let port = ports[index % ports.count]
                let response = try? await client.send(OutboundRequest(url: "http://127.0.0.1:\(port)/deploy?name=u\(index % 500)", timeout: 5))
                let stillLive = live.withLockedValue { $0.contains(port) }
                guard stillLive else { continue }  // it was taken out meanwhile: not a survivor
                counts.withLockedValue {
                    $0.requests += 1
                    if response?.status != 200 {
                        $0.failed += 1
                        $0.failures.append("proxy \(port): \(response.map { "HTTP \($0.status)" } ?? "no answer")")
                    }
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        defer { traffic.cancel() }

        var round = 0
        let deadline = Date().addingTimeInterval(300)
        while report.kills < 20, Date() < deadline {
            round += 1
            try await Task.sleep(for: .milliseconds(random.int(300...1_500)))
            if let rollout = try? database.rolloutState("engine"), !rollout.phase.isActive {
                try await publish()
                report.releases += 1
            }
            if round == 8 {
                try await restartPostgres(server, database, replicas: replicas, counts: counts, report: &report)
                continue
            }
            if round == 4 || round == 14 {
                try await commandsThroughStandbys(database, replicas: replicas, client: client, round: round)
                report.standbyCommands += 2
                continue
            }
            guard let before = try database.controllers(seenSince: .distantPast).lease, before.expiresAt > Date(),
                  let leader = replicas.first(where: { before.holder.split(separator: ":").dropLast().last.map(String.init) == "\($0.pid)" }) else {
                continue
            }
            let rolloutBefore = try database.rolloutState("engine")
            live.withLockedValue { _ = $0.remove(leader.proxyPort) }
            try await Task.sleep(for: .milliseconds(30))
            let killed = Date()
            Glibc.kill(leader.pid, SIGKILL)
            while leader.process.isRunning { try await Task.sleep(for: .milliseconds(5)) }
            report.kills += 1
            // Another replica leads, under a newer token.
            var tookOver = false
            while Date().timeIntervalSince(killed) < 10 {
                if let now = try? database.controllers(seenSince: .distantPast).lease, now.token > before.token, now.expiresAt > Date(), now.holder != before.holder {
                    tookOver = true
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            report.takeovers.append(Date().timeIntervalSince(killed))
            #expect(tookOver, "round \(round): no replica led within 10 s of killing \(leader.name)")
            // The rollout continues from its committed step.
            if let rolloutBefore, let after = try database.rolloutState("engine"), after.release == rolloutBefore.release {
                #expect(after.step >= rolloutBefore.step, "round \(round): the rollout went back from step \(rolloutBefore.step) to \(after.step)")
            }
            try leader.start()
            try await waitUntil(30) { (try? await client.send(OutboundRequest(url: "http://127.0.0.1:\(leader.adminPort)/healthz", timeout: 2)))?.status == 200 }
            live.withLockedValue { _ = $0.insert(leader.proxyPort) }
            try check(database, round: round)
        }
        // Left alone, the last rollout finishes.
        try await waitUntil(90) { (try? database.rolloutState("engine"))?.phase.isActive == false }
        #expect(try database.rolloutState("engine")?.phase == .promoted, "the last rollout ended \(String(describing: try? database.rolloutState("engine")?.phase))")
        try check(database, round: round + 1)
        traffic.cancel()
        let (requests, failed, failures) = counts.withLockedValue { $0 }
        report.requests = requests
        report.failedRequests = failed
        print(report)
        #expect(report.kills == 20)
        #expect(requests > 500, "traffic flowed")
        #expect(failed == 0, "requests through surviving proxies failed: \(failures.prefix(5))")
        #expect(report.progressAfterRestart)
        #expect(report.standbyCommands == 4)
    }

    /// Writes reach the database from any replica: a pause and a resume sent to the API of
    /// two replicas that do not lead, each carried out once and audited.
    func commandsThroughStandbys(_ database: GrayscaleDatabase, replicas: [Replica], client: CurlHTTPClient, round: Int) async throws {
        let lease = try database.controllers(seenSince: .distantPast).lease
        let standbys = replicas.filter { replica in lease?.holder.split(separator: ":").dropLast().last.map(String.init) != "\(replica.pid)" }
        guard standbys.count >= 2 else { return }
        for (replica, text) in [(standbys[0], "pause -m engine"), (standbys[1], "resume -m engine")] {
            let before = try database.auditLog(service: "engine", limit: 1_000_000).filter { $0.actor == "failover" }.count
            let response = try await client.send(OutboundRequest(
                method: "POST", url: "http://127.0.0.1:\(replica.adminPort)/api/v1/commands",
                headers: [("Authorization", "Bearer failover-admin"), ("Content-Type", "application/json")],
                body: Data(#"{"text": "\#(text)", "as": "failover"}"#.utf8), timeout: 30))
            #expect(response.status == 200, "round \(round): \(text) through \(replica.name): HTTP \(response.status) \(String(decoding: response.body, as: UTF8.self))")
            let audits = try database.auditLog(service: "engine", limit: 1_000_000).filter { $0.actor == "failover" }
            #expect(audits.count == before + 1, "round \(round): \(text) through \(replica.name) audited once")
        }
        #expect(try database.rolloutState("engine")?.manual != true, "round \(round): resumed")
    }

    /// PostgreSQL stops for a few seconds in the middle of a rollout: the proxies keep
    /// routing by the table they have, nothing is decided meanwhile, and after the restart
    /// the replicas reconnect and the rollout moves on.
    func restartPostgres(_ server: PostgresServer, _ database: GrayscaleDatabase, replicas: [Replica],
                         counts: NIOLockedValueBox<(requests: Int, failed: Int, failures: [String])>, report: inout Report) async throws {
        let revision = try database.split("engine").revision
        let before = counts.withLockedValue { ($0.requests, $0.failed) }
        let stopped = Date()
        try server.stopServer()
        try await Task.sleep(for: .seconds(3))
        let during = counts.withLockedValue { ($0.requests, $0.failed) }
        try server.startServer()
        report.databaseDown = Date().timeIntervalSince(stopped)
        report.requestsWhileDown = during.0 - before.0
        report.failedWhileDown = during.1 - before.1
        #expect(report.requestsWhileDown > 0, "traffic flowed while PostgreSQL was down")
        #expect(report.failedWhileDown == 0, "no request failed while PostgreSQL was down")
        // Nothing was decided while it was down, and the rollout moves on after.
        try await waitUntil(60) {
            guard let split = try? database.split("engine") else { return false }
            return split.revision > revision || (try? database.rolloutState("engine"))?.phase.isActive == false
        }
        let revisionAfter = try database.split("engine").revision
        let ended = try database.rolloutState("engine")?.phase.isActive == false
        report.progressAfterRestart = revisionAfter > revision || ended
    }

    func check(_ database: GrayscaleDatabase, round: Int) throws {
        for (_, problem) in try RolloutInvariants.check(database, widths: Self.widths, releases: 8...80) {
            Issue.record("round \(round): \(problem)")
        }
    }

    func waitUntil(_ seconds: Double, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("timed out after \(seconds) s")
    }
}

extension RoutingSnapshot {
    static func decode(_ body: Data) throws -> RoutingSnapshot {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(RoutingSnapshot.self, from: body)
    }
}
