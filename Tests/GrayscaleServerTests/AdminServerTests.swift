import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleProxy
@testable import GrayscaleServer
import GrayscaleStore
import Logging
import NIOCore
import NIOPosix
import Prometheus
import Testing
import Yams

/// The admin server as serve runs it (the router generated from openapi.yaml, on
/// Hummingbird, with its middleware), on a loopback port, over real sockets.
@Suite("Admin server: the contract, its errors, time limits and long polls")
struct AdminServerTests {
    let client = Client()

    /// 300 s per request, not the default: the server answers from Swift's cooperative pool,
    /// which the Monte Carlo suites keep busy for minutes on this 2-core machine.
    struct Client {
        let curl = CurlHTTPClient()
        func send(_ request: OutboundRequest) async throws -> OutboundResponse {
            var request = request
            request.timeout = 300
            return try await curl.send(request)
        }
    }

    /// The long poll waits an hour here (25 s in serve): a wait that is not ended by what a test
    /// does (a limit, a client going, a close) outlasts the client's time limit and fails the
    /// test, however slow the machine; no test measures time.
    func withServer(adminToken: String? = "token", timeouts: AdminServer.Timeouts = .init(),
                    _ body: (_ base: String, _ port: Int, _ routing: RoutingBroadcast, _ fixture: SlackFixture) async throws -> Void) async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let routing = RoutingBroadcast()
        routing.publish(try fixture.database.allServiceStates())
        var api = AdminAPI(database: fixture.database, statistics: ProxyStatistics(windowSeconds: 1), registry: PrometheusCollectorRegistry(),
                           bot: fixture.bot(), slack: nil, adminToken: adminToken)
        api.routing = routing
        api.longPollWait = .seconds(3600)
        try await withAdminServer(api, timeouts: timeouts) { port in try await body("http://127.0.0.1:\(port)", port, routing, fixture) }
    }

    /// The error shape: a JSON object with one string, `error`.
    func errorText(_ response: OutboundResponse) -> String? {
        guard response.headers.first(where: { $0.name.lowercased() == "content-type" })?.value == "application/json",
              let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any], object.count == 1
        else { return nil }
        return object["error"] as? String
    }

    @Test("every bound openapi.yaml sets on a parameter is enforced: one past it is a 400 naming the parameter, the bound itself is answered")
    func documentedBoundsAreEnforced() async throws {
        let document = try #require(try Yams.load(yaml: String(contentsOf: ServeHarness.root.appendingPathComponent("openapi.yaml"),
                                                                 encoding: .utf8)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        // The query parameters the server accepts are the ones the document declares.
        var declared: [String: Set<String>] = [:]
        for (template, operations) in paths {
            for case let parameter as [String: Any] in (operations["get"] as? [String: Any])?["parameters"] as? [Any] ?? []
            where parameter["in"] as? String == "query" {
                declared[template, default: []].insert(try #require(parameter["name"] as? String))
            }
        }
        #expect(declared == AdminAPI.queryParameters)
        var checked = 0
        try await withServer { base, _, _, _ in
            for (template, operations) in paths {
                guard let get = operations["get"] as? [String: Any] else { continue }
                let path = template.replacingOccurrences(of: "{service}", with: "engine")
                for case let parameter as [String: Any] in get["parameters"] as? [Any] ?? [] {
                    guard parameter["in"] as? String == "query", let name = parameter["name"] as? String,
                          let schema = parameter["schema"] as? [String: Any] else { continue }
                    for (key, step) in [("maximum", 1), ("minimum", -1)] {
                        guard let bound = schema[key] as? Int else { continue }
                        let refused = try await client.send(OutboundRequest(url: "\(base)\(path)?\(name)=\(bound + step)"))
                        #expect(refused.status == 400, "\(path)?\(name)=\(bound + step)")
                        #expect(errorText(refused)?.contains("query: \(name)") == true, "\(path): \(errorText(refused) ?? "no error shape")")
                        let answered = try await client.send(OutboundRequest(url: "\(base)\(path)?\(name)=\(bound)"))
                        #expect(answered.status == 200 || answered.status == 404, "\(path)?\(name)=\(bound): \(answered.status)")
                        checked += 1
                    }
                }
            }
        }
        #expect(checked >= 4, "the limits of /audit and /rollout")
    }

    @Test("requests that break the document are 400s in the error shape; unknown paths 404; known paths with another method 405 with Allow")
    func refusals() async throws {
        try await withServer { base, _, _, _ in
            for query in ["limit=abc", "limit=1.5", "limit[a]=1", "a=1", "limit=99999999999999999999999", "limt=5"] {
                let response = try await client.send(OutboundRequest(url: "\(base)/api/v1/audit?\(query)"))
                #expect(response.status == 400, "\(query)")
                #expect(errorText(response) != nil, "\(query)")
            }
            let trace = try await client.send(OutboundRequest(method: "TRACE", url: "\(base)/api/v1/services"))
            #expect(trace.status == 405)
            #expect(trace.headers.first { $0.name.lowercased() == "allow" }?.value == "GET, HEAD")
            #expect(errorText(trace) != nil)
            let delete = try await client.send(OutboundRequest(method: "DELETE", url: "\(base)/api/v1/services/engine/split"))
            #expect(delete.status == 405)
            let getCommands = try await client.send(OutboundRequest(url: "\(base)/api/v1/commands"))
            #expect(getCommands.status == 405)
            #expect(getCommands.headers.first { $0.name.lowercased() == "allow" }?.value == "POST")
            let unknown = try await client.send(OutboundRequest(url: "\(base)/api/v2/nothing"))
            #expect(unknown.status == 404)
            #expect(errorText(unknown)?.contains("/api/v2/nothing") == true)
            let noService = try await client.send(OutboundRequest(url: "\(base)/api/v1/services/nosuch/releases"))
            #expect(noService.status == 404)
            #expect(errorText(noService)?.contains("nosuch") == true)
            let head = try await client.send(OutboundRequest(method: "HEAD", url: "\(base)/healthz"))
            #expect(head.status == 200)

            // POST: the token first, then the body against the document.
            let json = [("Authorization", "Bearer token"), ("Content-Type", "application/json")]
            #expect(try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands",
                                                          headers: [("Content-Type", "application/json")], body: Data("{}".utf8))).status == 401)
            for body in [#"{}"#, #"{"text": "-l"}"#, #"{"text": 5, "as": "x"}"#, #"not json"#, #"{"text": "-l", "as": ""}"#,
                         #"{"text": "\#(String(repeating: "x", count: 1001))", "as": "x"}"#] {
                let response = try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands", headers: json, body: Data(body.utf8)))
                #expect(response.status == 400, "\(body.prefix(40))")
                #expect(errorText(response) != nil, "\(body.prefix(40))")
            }
            let form = try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands",
                                                             headers: [("Authorization", "Bearer token")], body: Data(#"{"text": "-l", "as": "x"}"#.utf8)))
            #expect(form.status == 415, "a body that is not declared application/json")
            // Counted as sent: the generated code reads "%41" as "A" (70 characters) or drops a value that does not decode.
            for key in [String(repeating: "k", count: 201), String(repeating: "%41", count: 70), String(repeating: "%zz", count: 70)] {
                let long = try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands",
                                                                 headers: json + [("Idempotency-Key", key)],
                                                                 body: Data(#"{"text": "-l -m engine", "as": "x"}"#.utf8)))
                #expect(long.status == 400, "\(key.prefix(9))")
                #expect(errorText(long)?.contains("Idempotency-Key") == true)
            }
            let huge = try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands", headers: json,
                                                             body: Data(repeating: UInt8(ascii: " "), count: AdminServer.maxBodyBytes + 1)))
            #expect(huge.status == 413)
            #expect(errorText(huge) != nil)
            let ran = try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands", headers: json,
                                                            body: Data(#"{"text": "-l -m engine", "as": "x"}"#.utf8)))
            #expect(ran.status == 200)
            #expect(String(decoding: ran.body, as: UTF8.self).contains("reply"))

            // /stats: a time that does not fit is a 400 (1e19 seconds trapped the process); an offset's '+' sent bare still reads.
            for since in ["1e19", "inf", "-1e300", "nan", "yesterday"] {
                let refused = try await client.send(OutboundRequest(url: "\(base)/stats?since=\(since)"))
                #expect(refused.status == 400, "since=\(since)")
                #expect(errorText(refused)?.contains("since") == true)
            }
            #expect(try await client.send(OutboundRequest(url: "\(base)/stats?since=2026-12-07T10:00:00+01:00")).status == 200)
        }
    }

    @Test("a client that takes no JSON is refused before its command runs; Idempotency-Key is the key as sent")
    func acceptAndIdempotencyKeys() async throws {
        try await withServer { base, _, _, fixture in
            let json = [("Authorization", "Bearer token"), ("Content-Type", "application/json")]
            func command(_ text: String, key: String? = nil, accept: String? = nil) async throws -> OutboundResponse {
                var headers = json
                if let key { headers.append(("Idempotency-Key", key)) }
                if let accept { headers.append(("Accept", accept)) }
                return try await client.send(OutboundRequest(method: "POST", url: "\(base)/api/v1/commands", headers: headers,
                                                             body: Data(#"{"text": "\#(text)", "as": "operator"}"#.utf8)))
            }
            let audited = try fixture.database.auditLog(service: nil, limit: 1000).count
            let refused = try await command("-g -m engine -p 30", accept: "text/plain")
            #expect(refused.status == 406)
            #expect(errorText(refused)?.contains("Accept") == true)
            #expect(try fixture.database.auditLog(service: nil, limit: 1000).count == audited, "nothing ran")
            #expect(try await client.send(OutboundRequest(url: "\(base)/api/v1/services", headers: [("Accept", "text/html")])).status == 406)
            #expect(try await command("-l -m engine", accept: "application/json, text/plain;q=0.5").status == 200)
            #expect(try await client.send(OutboundRequest(url: "\(base)/api/v1/services", headers: [("Accept", "*/*")])).status == 200)

            // Keys that do not percent-decode (or decode alike) are still different keys: each command runs.
            #expect(try await command("-g -m engine -p 30", key: "deploy-30%").status == 200)
            #expect(try await command("-g -m engine -p 40", key: "deploy-40%").status == 200)
            #expect(try fixture.database.split("engine").range.widthHundredths == 4000)
            #expect(try await command("-g -m engine -p 50", key: "%41").status == 200)
            #expect(try await command("-g -m engine -p 60", key: "A").status == 200)
            #expect(try fixture.database.split("engine").range.widthHundredths == 6000)
            // The same key again: the first reply, nothing changes.
            #expect(try await command("-g -m engine -p 70", key: "A").status == 200)
            #expect(try fixture.database.split("engine").range.widthHundredths == 6000)
        }
    }

    @Test("a service whose canary is part of a platform release names it and its services in /api/v1/services; one on its own does not")
    func platformInServices() async throws {
        try await withServer { base, _, _, fixture in
            let who = Attribution(actor: "test")
            try fixture.database.publish(ReleaseDraft(service: "registry", number: 4, label: "v1.3.0", upstream: "http://127.0.0.1:3"),
                                         salt: "r", by: who, at: Date())
            try fixture.database.publish(ReleaseDraft(service: "events", number: 2, label: "v0.9.0", upstream: "http://127.0.0.1:4"),
                                         salt: "e", by: who, at: Date())
            try fixture.database.publishPlatform("2.1.1", [
                ReleaseDraft(service: "engine", number: 9, label: "v2.1.2", upstream: "http://127.0.0.1:5", platform: "2.1.1"),
                ReleaseDraft(service: "registry", number: 5, label: "v1.4.0", upstream: "http://127.0.0.1:6", platform: "2.1.1"),
            ], salt: "p", by: who, at: Date())
            let answer = try await client.send(OutboundRequest(url: "\(base)/api/v1/services"))
            #expect(answer.status == 200)
            let services = try #require(try JSONSerialization.jsonObject(with: answer.body) as? [[String: Any]])
            func platform(_ name: String) -> [String: Any]? { services.first { $0["name"] as? String == name }?["platform"] as? [String: Any] }
            #expect(platform("engine")?["label"] as? String == "2.1.1")
            #expect(platform("registry")?["services"] as? [String] == ["engine", "registry"])
            #expect(platform("events") == nil, "events was released on its own")
            let releases = try await client.send(OutboundRequest(url: "\(base)/api/v1/services/engine/releases"))
            let list = try #require(try JSONSerialization.jsonObject(with: releases.body) as? [[String: Any]])
            #expect(list.first?["platform"] as? String == "2.1.1")
        }
    }

    @Test("stopping: a waiting long poll is answered at once when the routing closes")
    func closeAnswersLongPolls() async throws {
        try await withServer { base, _, routing, _ in
            let version = try #require(routing.current?.version)
            let poll = Task { try await client.send(OutboundRequest(url: "\(base)/api/v1/routing?after=\(RoutingFollower.queryValue(version))")) }
            #expect(await eventually { routing.waiting == 1 })
            routing.close()
            let answer = try await poll.value
            #expect(answer.status == 200, "answered on close (the poll would wait an hour)")
        }
    }

    @Test("a long poll whose client goes ends at once instead of waiting out its 25 s")
    func longPollEndsWithItsClient() async throws {
        try await withServer { _, port, routing, _ in
            let version = try #require(routing.current?.version)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
            let query = RoutingFollower.queryValue(version)
            try await channel.writeAndFlush(ByteBuffer(string: "GET /api/v1/routing?after=\(query) HTTP/1.1\r\nHost: x\r\n\r\n")).get()
            #expect(await eventually { routing.waiting == 1 }, "the long poll waits")
            try await channel.close().get()
            #expect(await eventually { routing.waiting == 0 }, "and stops waiting when its client has gone")
        }
    }

    @Test("a route that outlives its time limit is answered 503 in the error shape")
    func routeTimeout() async throws {
        var timeouts = AdminServer.Timeouts()
        timeouts.routing = .milliseconds(300)
        try await withServer(timeouts: timeouts) { base, _, routing, _ in
            let version = try #require(routing.current?.version)
            let response = try await client.send(OutboundRequest(url: "\(base)/api/v1/routing?after=\(RoutingFollower.queryValue(version))"))
            #expect(response.status == 503, "cut short by the limit (the poll would wait an hour)")
            #expect(errorText(response)?.contains("limit") == true)
            #expect(await eventually { routing.waiting == 0 }, "the cancelled wait is gone")
        }
    }

    /// Whether `condition` holds within 300 s (polled); a deadline, not a timing claim (the
    /// long poll would wait an hour).
    func eventually(_ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(300)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

/// The admin server as serve runs it (its own router, on Hummingbird) for `api`, on a loopback
/// port, for the length of `body`.
func withAdminServer(_ api: AdminAPI, timeouts: AdminServer.Timeouts = .init(), _ body: (Int) async throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await AdminHTTPServer.start(host: "127.0.0.1", port: 0,
                                                 router: try AdminServer.router(api: api, timeouts: timeouts, logger: Logger(label: "test")),
                                                 group: group, logger: Logger(label: "test"))
    do {
        try await body(server.localAddress.port!)
    } catch {
        try? await server.stop()
        try? await group.shutdownGracefully()
        throw error
    }
    try await server.stop()
    try await group.shutdownGracefully()
}
