import Foundation
import GrayscaleCore
import GrayscaleDemo
import GrayscaleIntegrations
import GrayscaleServer
import GrayscaleStore
import Testing

@Suite("A fleet of proxies following one controller", .serialized)
struct FleetTests {
    @Test("three proxies follow the controller's splits, keep serving without it, and their statistics add up in its verdicts")
    func fleet() async throws {
        let harness = try ServeHarness()
        var proxies: [Process] = []
        do {
            let ports = try (0..<3).map { _ in (proxy: try PrometheusServer.freePort(), admin: try PrometheusServer.freePort()) }
            try harness.configure(appending: """
                controller:
                  tick: 1s
                  stats: [\(ports.map { "\"http://127.0.0.1:\($0.admin)\"" }.joined(separator: ", "))]
                """)
            // The rollout stays on its first step: this test is about routing and statistics, not steps.
            let policy = harness.directory.appendingPathComponent("policies/engine.yaml")
            try String(contentsOf: policy, encoding: .utf8).replacingOccurrences(of: "stepMinimum: 4s", with: "stepMinimum: 10m")
                .write(to: policy, atomically: true, encoding: .utf8)
            let stable = try await harness.upstream(label: "v2.1.0", failDotted: false)
            let canary = try await harness.upstream(label: "v2.1.1", failDotted: false)
            try harness.cli(["release", "publish", "--service", "engine", "--number", "7", "--label", "v2.1.0", "--upstream", stable])
            try harness.cli(["release", "publish", "--service", "engine", "--number", "8", "--label", "v2.1.1", "--upstream", canary])
            try await harness.startServe()
            for (index, port) in ports.enumerated() {
                let process = Process()
                process.executableURL = ServeHarness.binary
                process.arguments = ["proxy", "--controller", harness.admin, "--listen", "127.0.0.1:\(port.proxy)", "--admin", "127.0.0.1:\(port.admin)",
                                     "--stats-window", "1s", "--access-log", harness.directory.appendingPathComponent("fleet-\(index).log").path]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                proxies.append(process)
            }
            let client = CurlHTTPClient()
            func version(through port: Int, appId: String) async -> String? {
                let response = try? await client.send(OutboundRequest(url: "http://127.0.0.1:\(port)/v1/deploy?name=x", headers: [("Authorization", "Bearer " + DemoTraffic.token(appId))], timeout: 5))
                return response?.header("x-grayscale-version")
            }
            // Every proxy has a routing table (the controller may already have given the canary its first step).
            // Three processes start on a machine the Monte Carlo suites may be saturating: a deadline, not a timing goal.
            let started = try await harness.waitFor(60) {
                var all = true
                for port in ports {
                    let seen = await version(through: port.proxy, appId: "someone")
                    all = all && (seen?.hasPrefix("engine@") ?? false)
                }
                return all
            }
            #expect(started, "the proxies never got the routing table")

            // A split set on the controller's database reaches all three.
            let changedAt = Date()
            try harness.cli(["traffic", "set", "--service", "engine", "--range", "20:55"])
            let salt = try #require(try GrayscaleDatabase.open(path: harness.database).split("engine").canary?.salt)
            let range = try CanaryRange.parse(percent: "20:55")
            let canaryUser = try #require((0..<10_000).map { "user-\($0)" }.first { range.contains(Bucket.of(appId: $0, salt: salt)) })
            var reachedAll: Date?
            // However busy the machine (the Monte Carlo suites may share it): up to 30 s.
            let deadline = Date().addingTimeInterval(30)
            while reachedAll == nil, Date() < deadline {
                var all = true
                for port in ports {
                    let seen = await version(through: port.proxy, appId: canaryUser)
                    all = all && seen == "engine@8 (v2.1.1)"
                }
                if all { reachedAll = Date() } else { try await Task.sleep(for: .milliseconds(50)) }
            }
            let propagation = try #require(reachedAll).timeIntervalSince(changedAt)
            print("the split reached all three proxies after \(Int(propagation * 1000)) ms (the CLI process included)")

            // Traffic through two of them only: the controller's verdicts count it.
            let database = try GrayscaleDatabase.open(path: harness.database)
            let before = try database.verdicts("engine", release: 8, limit: 1000).count
            _ = try await harness.waitFor(30) { try database.verdicts("engine", release: 8, limit: 1000).count > before + 1 }
            let countedBefore = try database.verdicts("engine", release: 8, limit: 1000).reduce(0) {
                $0 + Int(($1.numbers["canaryRequests"] ?? 0) + ($1.numbers["stableRequests"] ?? 0))
            }
            var sent = countedBefore
            for port in ports.dropFirst() {
                for index in 0..<150 {
                    _ = await version(through: port.proxy, appId: "fleet-user-\(index)")
                    sent += 1
                }
            }
            func counted() throws -> Int {
                try database.verdicts("engine", release: 8, limit: 1000).reduce(0) {
                    $0 + Int(($1.numbers["canaryRequests"] ?? 0) + ($1.numbers["stableRequests"] ?? 0))
                }
            }
            _ = try await harness.waitFor(45) { try counted() >= sent }
            let total = try counted()
            let last = try database.verdicts("engine", release: 8, limit: 3).map(\.reason)
            #expect(total >= sent, "the controller's verdicts counted \(total) of the \(sent) requests sent through two fleet proxies; last verdicts: \(last)")

            // The controller stops: the proxies keep the last table.
            harness.serve?.interrupt()
            harness.serve?.waitUntilExit()
            for port in ports {
                // A deadline, not a timing goal: one request may time out while other suites saturate the machine.
                var seen: String?
                _ = try await harness.waitFor(30) {
                    seen = await version(through: port.proxy, appId: canaryUser)
                    return seen != nil
                }
                #expect(seen == "engine@8 (v2.1.1)", "a proxy stopped serving the last table")
            }
        } catch {
            for process in proxies { process.terminate() }
            await harness.stop()
            throw error
        }
        for process in proxies {
            process.terminate()
            process.waitUntilExit()
        }
        await harness.stop()
    }
}
