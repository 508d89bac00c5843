import Foundation
import GrayscaleCore
import GrayscaleDemo
import GrayscaleIntegrations
import GrayscaleServer
import GrayscaleStore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import Yams

/// `grayscale serve` as a separate process on loopback, with demo releases and users.
final class ServeHarness {
    static let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("grayscale")
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    let directory: URL
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let proxyPort: Int
    let adminPort: Int
    var serve: Process?
    var upstreams: [DemoUpstream] = []
    let client = CurlHTTPClient()

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("policies"), withIntermediateDirectories: true)
        proxyPort = try PrometheusServer.freePort()
        adminPort = try PrometheusServer.freePort()
        // The first step lasts longer than any test: a bad release must be caught there.
        try """
            name: e2e
            service: engine
            steps: [5, 25, 50, 100]
            stepMinimum: 4s
            analysis: {interval: 1s, minRequests: 10}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            slack: {channel: "#releases"}
            """.write(to: directory.appendingPathComponent("policies/engine.yaml"), atomically: true, encoding: .utf8)
        try """
            database: \(database)
            policies: \(directory.appendingPathComponent("policies").path)
            proxy: {listen: "127.0.0.1:\(proxyPort)", accessLog: \(accessLog), statsWindow: 1s}
            admin: {listen: "127.0.0.1:\(adminPort)"}
            controller: {tick: 1s}
            """.write(to: directory.appendingPathComponent("grayscale.yaml"), atomically: true, encoding: .utf8)
    }

    /// Adds lines to the configuration file (before `startServe`).
    func configure(appending extra: String) throws {
        let file = directory.appendingPathComponent("grayscale.yaml")
        let text = try String(contentsOf: file, encoding: .utf8)
        try (text.replacingOccurrences(of: "controller: {tick: 1s}", with: "") + extra).write(to: file, atomically: true, encoding: .utf8)
    }

    var database: String { directory.appendingPathComponent("grayscale.sqlite").path }
    var accessLog: String { directory.appendingPathComponent("access.log").path }
    var admin: String { "http://127.0.0.1:\(adminPort)" }

    @discardableResult
    func cli(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["GRAYSCALE_DB"] = database
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text
    }

    func upstream(label: String, failDotted: Bool) async throws -> String {
        let upstream = try await DemoUpstream(host: "127.0.0.1", port: 0, label: label, failDotted: failDotted, group: group)
        upstreams.append(upstream)
        return "http://127.0.0.1:\(upstream.port)"
    }

    func startServe() async throws {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = ["serve", "--config", directory.appendingPathComponent("grayscale.yaml").path]
        var environment = ProcessInfo.processInfo.environment
        environment["GRAYSCALE_ADMIN_TOKEN"] = "test-admin-token"
        process.environment = environment
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = directory.appendingPathComponent("serve.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        serve = process
        for _ in 0..<100 {
            if (try? await get("/healthz"))?.status == 200 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw GrayscaleError("grayscale serve did not start")
    }

    /// The end of what `grayscale serve` wrote to stderr: said when a test fails, since the
    /// harness's directory is removed after it.
    var serveLogTail: String {
        let text = (try? String(contentsOfFile: directory.appendingPathComponent("serve.log").path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(20).joined(separator: "\n")
    }

    func get(_ path: String) async throws -> OutboundResponse {
        try await client.send(OutboundRequest(url: admin + path, timeout: 20))
    }

    func json(_ path: String) async throws -> Any {
        try JSONSerialization.jsonObject(with: try await get(path).body)
    }

    func waitFor(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    func stop() async {
        if let serve, serve.isRunning {
            serve.terminate()
            serve.waitUntilExit()
        }
        for upstream in upstreams { try? await upstream.stop() }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs a tool and returns its exit status and standard output.
    static func run(_ tool: String, _ arguments: [String], input: String? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let out = Pipe(), inPipe = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(Data(input.utf8)) }
        try inPipe.fileHandleForWriting.close()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }
}

@Suite("grayscale serve end to end", .serialized)
struct ServeEndToEndTests {
    @Test("a failing canary is rolled back, visible in /metrics, the API, the access log and the dashboard")
    func failingCanary() async throws {
        let harness = try ServeHarness()
        do {
            try await runFailingCanary(harness)
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }

    func runFailingCanary(_ harness: ServeHarness) async throws {
        let stable = try await harness.upstream(label: "v2.1.0", failDotted: false)
        let bad = try await harness.upstream(label: "v2.1.1", failDotted: true)
        try harness.cli(["release", "publish", "--service", "engine", "--number", "7", "--label", "v2.1.0", "--upstream", stable])
        try await harness.startServe()
        try harness.cli(["release", "publish", "--service", "engine", "--number", "8", "--label", "v2.1.1", "--upstream", bad])
        let port = harness.proxyPort, group: EventLoopGroup = harness.group
        let traffic = Task { try await DemoTraffic(host: "127.0.0.1", port: port, users: 2000, requestsPerSecond: 300).run(group: group) }
        let rolledBack = try await harness.waitFor(150) {  // CI under load once needed more than 60 s
            ((try await harness.json("/api/v1/services/engine/rollout") as? [String: Any])?["rollout"] as? [String: Any])?["phase"] as? String == "rolledBack"
        }
        traffic.cancel()
        _ = try? await traffic.value
        #expect(rolledBack, "the controller did not roll the bad canary back")

        // The admin API: the rollout, its verdicts with their numbers.
        let report = try #require(try await harness.json("/api/v1/services/engine/rollout") as? [String: Any])
        let verdicts = try #require(report["verdicts"] as? [[String: Any]])
        let failing = try #require(verdicts.last { $0["outcome"] as? String == "fail" })
        #expect((failing["numbers"] as? [String: Double])?["eValue"] ?? 0 >= 100)
        let split = try #require(try await harness.json("/api/v1/services/engine/split") as? [String: Any])
        #expect(split["canary"] == nil || split["canary"] is NSNull, "the canary is gone from the split")

        // /metrics: by version, and it passes promtool.
        let metrics = String(decoding: try await harness.get("/metrics").body, as: UTF8.self)
        #expect(metrics.contains(#"grayscale_requests_total{service="engine",release="8",label="v2.1.1",route="canary",code="5xx"}"#))
        #expect(metrics.contains(#"grayscale_rollbacks_total{service="engine"} 1"#))
        let (status, promtool) = try ServeHarness.run("/usr/bin/promtool", ["check", "metrics"], input: metrics)
        #expect(status == 0, "promtool: \(promtool)")

        // The access log, filtered by version.
        let logs = try harness.cli(["logs", "--file", harness.accessLog, "--version", "8", "--format", "json"])
        // JSON lines: one object per line, as the proxy wrote them.
        let lines = try logs.split(separator: "\n").map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(!lines.isEmpty)
        #expect(lines.allSatisfy { $0["release"] as? Int == 8 })
        #expect(lines.contains { $0["status"] as? Int == 500 })

        // POST needs the admin token.
        let body = Data(#"{"text": "-l -m engine", "as": "tester"}"#.utf8)
        let unauthorized = try await harness.client.send(OutboundRequest(method: "POST", url: harness.admin + "/api/v1/commands",
                                                                         headers: [("Content-Type", "application/json")], body: body))
        #expect(unauthorized.status == 401)
        for wrong in ["Bearer test-admin-toke", "Bearer test-admin-tokenx", "Bearer TEST-ADMIN-TOKEN", "bearer test-admin-token", "test-admin-token"] {
            let refused = try await harness.client.send(OutboundRequest(method: "POST", url: harness.admin + "/api/v1/commands",
                                                                        headers: [("Authorization", wrong), ("Content-Type", "application/json")], body: body))
            #expect(refused.status == 401, "\(wrong)")
        }
        let listed = try await harness.client.send(OutboundRequest(method: "POST", url: harness.admin + "/api/v1/commands",
                                                                   headers: [("Authorization", "Bearer test-admin-token"), ("Content-Type", "application/json")],
                                                                   body: body))
        #expect(String(decoding: listed.body, as: UTF8.self).contains("Stable Version 7(v 2.1.0) : other"))

        // Every GET of openapi.yaml answers with the documented required fields.
        try await checkOpenAPI(harness)

        // A real Prometheus scraping /metrics answers error rate by version and for all versions.
        try await checkPrometheus(harness)

        // The dashboard in a real headless browser.
        try checkDashboard(harness)
    }

    func checkOpenAPI(_ harness: ServeHarness) async throws {
        let document = try #require(try Yams.load(yaml: String(contentsOf: ServeHarness.root.appendingPathComponent("openapi.yaml"), encoding: .utf8)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: Any])
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        func resolve(_ schema: [String: Any]) -> [String: Any] {
            guard let ref = schema["$ref"] as? String else { return schema }
            return schemas[String(ref.split(separator: "/").last!)] as? [String: Any] ?? [:]
        }
        var checked = 0
        for (path, item) in paths {
            guard let get = (item as? [String: Any])?["get"] as? [String: Any] else { continue }
            let url = path.replacingOccurrences(of: "{service}", with: "engine")
            let response = try await harness.get(url)
            #expect(response.status == 200, "GET \(url): \(response.status)")
            let schema = resolve(((((get["responses"] as? [String: Any])?["200"] as? [String: Any])?["content"] as? [String: Any])?["application/json"] as? [String: Any])?["schema"] as? [String: Any] ?? [:])
            let body = try JSONSerialization.jsonObject(with: response.body)
            let objects: [[String: Any]]
            let itemSchema: [String: Any]
            if schema["type"] as? String == "array" {
                objects = try #require(body as? [[String: Any]], "GET \(url) is not an array")
                itemSchema = resolve(schema["items"] as? [String: Any] ?? [:])
            } else {
                objects = [try #require(body as? [String: Any], "GET \(url) is not an object")]
                itemSchema = schema
            }
            for object in objects {
                for field in itemSchema["required"] as? [String] ?? [] {
                    #expect(object[field] != nil, "GET \(url): missing required \(field)")
                }
            }
            checked += 1
        }
        #expect(checked >= 7)
    }

    func checkPrometheus(_ harness: ServeHarness) async throws {
        let prometheus = try PrometheusServer(scraping: harness.adminPort)
        defer { prometheus.stop() }
        let source = PrometheusMetrics(baseURL: prometheus.url)
        // The canary's error rate: every series filtered by its version label.
        let canary = #"sum(grayscale_request_errors_total{service="engine",release="8",class!="rejected"}) / sum(grayscale_requests_total{service="engine",release="8"})"#
        let all = #"sum(grayscale_request_errors_total{service="engine",class!="rejected"}) / sum(grayscale_requests_total{service="engine"})"#
        var canaryRate: Double?, overall: Double?
        for _ in 0..<40 {
            try await Task.sleep(for: .seconds(1))
            canaryRate = try? await source.instant(canary, at: Date())
            overall = try? await source.instant(all, at: Date())
            if let canaryRate, canaryRate > 0, let overall, overall > 0 { break }
        }
        #expect((canaryRate ?? 0) > (overall ?? 1), "error rate of release 8 (\(canaryRate ?? -1)) should exceed all versions together (\(overall ?? -1))")
        // Every query of the Grafana dashboard is PromQL this Prometheus accepts, on metrics /metrics exports.
        for query in GrafanaDashboard.queries {
            let concrete = query.replacingOccurrences(of: "$service", with: "engine")
            await #expect(throws: Never.self, "\(concrete)") { _ = try await source.instant(concrete, at: Date()) }
        }
        // And every metric it names is one that this scrape has.
        let names = Set(GrafanaDashboard.queries.flatMap { query in
            query.split(whereSeparator: { !($0.isLetter || $0 == "_") }).filter { $0.hasPrefix("grayscale_") }.map(String.init)
        })
        #expect(names.count >= 8)
        for name in names.sorted() {
            let series = try await source.instant("count(\(name))", at: Date())
            #expect((series ?? 0) >= 1, "\(name) is not exported")
        }
    }

    func checkDashboard(_ harness: ServeHarness) throws {
        let chromium = try #require(["/usr/bin/chromium", "/usr/bin/chromium-browser"].first(where: FileManager.default.isExecutableFile),
                                    "chromium is not installed: make test installs it")
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=8000"]
        let (_, dom) = try ServeHarness.run(chromium, flags + ["--dump-dom", harness.admin + "/"])
        #expect(dom.contains("Stable Version 7(v 2.1.0) : other"), "dashboard did not render the split")
        #expect(dom.contains("rolledBack"))
        #expect(dom.contains("Error rate by version"))
        #expect(dom.contains("Audit log"))
        let screenshot = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-dashboard.png")
        try? FileManager.default.removeItem(at: screenshot)
        _ = try ServeHarness.run(chromium, flags + ["--window-size=1280,1100", "--screenshot=\(screenshot.path)", harness.admin + "/"])
        let png = try Data(contentsOf: screenshot)
        #expect(png.count > 10_000)
        #expect(png.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
    }
}

/// Keep-alive clients that note when each request was sent and whether it got a whole 200.
struct RequestLog: Sendable {
    var sentAt: Date
    var ok: Bool
}

func hammer(port: Int, group: EventLoopGroup, connections: Int, until stop: NIOLockedValueBox<Bool>) async -> [RequestLog] {
    await withTaskGroup(of: [RequestLog].self) { tasks in
        for connection in 0..<connections {
            tasks.addTask {
                var log: [RequestLog] = []
                var index = 0
                while !stop.withLockedValue({ $0 }) {
                    do {
                        let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                                return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                            }
                        }
                        try await channel.executeThenClose { inbound, outbound in
                            var responses = inbound.makeAsyncIterator()
                            while !stop.withLockedValue({ $0 }) {
                                index += 1
                                var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/deploy?name=app-\(index)")
                                head.headers.add(name: "host", value: "engine")
                                head.headers.add(name: "authorization", value: "Bearer " + DemoTraffic.token("user-\(connection)-\(index % 97)"))
                                let sent = Date()
                                do {
                                    try await outbound.write(.head(head))
                                    try await outbound.write(.end(nil))
                                    var status = 0, complete = false, close = false
                                    while let part = try await responses.next() {
                                        if case .head(let response) = part {
                                            status = Int(response.status.code)
                                            close = response.headers.first(name: "connection")?.lowercased() == "close"
                                        }
                                        if case .end = part { complete = true; break }
                                    }
                                    log.append(RequestLog(sentAt: sent, ok: complete && status == 200))
                                    if !complete || close { return }
                                } catch {
                                    log.append(RequestLog(sentAt: sent, ok: false))
                                    return
                                }
                            }
                        }
                    } catch {
                        try? await Task.sleep(for: .milliseconds(50))  // refused after shutdown: nothing was sent
                    }
                }
                return log
            }
        }
        var all: [RequestLog] = []
        for await log in tasks { all += log }
        return all
    }
}

extension ServeEndToEndTests {
    @Test("SIGTERM during traffic: no request already sent fails, and the next start resumes the rollout")
    func gracefulShutdown() async throws {
        let harness = try ServeHarness()
        do {
            let stable = try await harness.upstream(label: "v2.1.0", failDotted: false)
            let good = try await harness.upstream(label: "v2.1.1", failDotted: false)
            try harness.cli(["release", "publish", "--service", "engine", "--number", "7", "--label", "v2.1.0", "--upstream", stable])
            try await harness.startServe()
            try harness.cli(["release", "publish", "--service", "engine", "--number", "8", "--label", "v2.1.1", "--upstream", good])
            let stop = NIOLockedValueBox(false)
            let port = harness.proxyPort, group: EventLoopGroup = harness.group
            let clients = Task { await hammer(port: port, group: group, connections: 16, until: stop) }
            // Let the rollout get past its first step.
            let widened = try await harness.waitFor(40) {
                let report = try? await harness.json("/api/v1/services/engine/rollout") as? [String: Any]
                return (report?["rollout"] as? [String: Any])?["step"] as? Int ?? 0 >= 1
            }
            #expect(widened, "serve's log ends: \(harness.serveLogTail) (running: \(harness.serve?.isRunning ?? false))")
            // logrotate moves the access log away and signals: the proxy writes a new file at the path.
            try FileManager.default.moveItem(atPath: harness.accessLog, toPath: harness.accessLog + ".1")
            kill(harness.serve!.processIdentifier, SIGUSR1)
            let reopened = try await harness.waitFor(30) {
                ((try? String(contentsOfFile: harness.accessLog, encoding: .utf8)) ?? "").contains("\"service\":\"engine\"")
            }
            #expect(reopened, "SIGUSR1 did not reopen the access log")
            let terminatedAt = Date()
            harness.serve?.terminate()  // SIGTERM
            harness.serve?.waitUntilExit()
            try await Task.sleep(for: .milliseconds(300))
            stop.withLockedValue { $0 = true }
            let log = await clients.value
            let before = log.filter { $0.sentAt < terminatedAt }
            #expect(before.count > 100)
            let failedBefore = before.filter { !$0.ok }.count
            #expect(failedBefore == 0, "\(failedBefore) requests sent before SIGTERM failed")
            #expect(harness.serve?.terminationStatus == 0)

            // SIGTERM handed the lease over: the next start decides at once, not a lease period later.
            let database = try GrayscaleDatabase.open(path: harness.database)
            let leaseAtStop = try #require(try database.controllers(seenSince: .distantPast).lease)
            #expect(leaseAtStop.expiresAt <= Date(), "the stopped serve still holds the lease")
            let splitAtStop = try database.split("engine")
            let historyAtStop = try database.splitHistory("engine").count
            let rolloutAtStop = try #require(try database.rolloutState("engine"))
            // The next start continues the same rollout from its committed step: it takes the next step (or
            // promotes), and nothing in between is lost or repeated.
            let traffic = Task { try await DemoTraffic(host: "127.0.0.1", port: port, users: 2000, requestsPerSecond: 300).run(group: group) }
            try await harness.startServe()
            let progressed = try await harness.waitFor(40) {
                let rollout = try database.rolloutState("engine")
                return rollout.map { $0.step > rolloutAtStop.step || $0.phase == .promoted } ?? false
            }
            traffic.cancel()
            _ = try? await traffic.value
            #expect(progressed, "the restarted serve did not continue the rollout")
            let rolloutAfter = try #require(try database.rolloutState("engine"))
            #expect(rolloutAfter.release == rolloutAtStop.release)
            #expect(rolloutAfter.startedAt == rolloutAtStop.startedAt, "the same rollout, not a new one")
            let history = try database.splitHistory("engine")
            #expect(history[historyAtStop - 1].split == splitAtStop, "the split at the stop is in the history where it was")
            let next = history.dropFirst(historyAtStop).first?.split
            #expect(next.map { $0.canary == nil || $0.range.widthHundredths > splitAtStop.range.widthHundredths } ?? false,
                    "the first change after the restart widens the canary or ends it")
            #expect(try database.controllers(seenSince: .distantPast).lease?.token == leaseAtStop.token + 1)
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }
}
