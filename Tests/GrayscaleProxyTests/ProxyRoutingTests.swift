import Foundation
import GrayscaleCore
import GrayscaleProxy
import NIOConcurrencyHelpers
import NIOCore
import Testing

@Suite("Proxy routing over loopback", .serialized)
struct ProxyRoutingTests {
    /// Sends `perUser` requests for each appId over `connections` keep-alive connections;
    /// returns the versions each appId reached (from the response header) and the failures.
    static func drive(_ harness: ProxyHarness, appIds: [String], perUser: Int, connections: Int = 8) async throws
        -> (versions: [String: Set<String>], bodiesMatch: Bool)
    {
        let slices = (0..<connections).map { index in stride(from: index, to: appIds.count, by: connections).map { appIds[$0] } }
        let port = harness.port, group = harness.clientGroup
        return try await withThrowingTaskGroup(of: ([String: Set<String>], Bool).self) { tasks in
            for slice in slices {
                tasks.addTask {
                    try await TestHTTPClient.withConnection(port: port, group: group) { client in
                        var seen: [String: Set<String>] = [:]
                        var match = true
                        for _ in 0..<perUser {
                            for appId in slice {
                                let response = try await client.send("/api", headers: [ProxyHarness.bearer(appId)])
                                let version = response.version ?? "none"
                                seen[appId, default: []].insert(version)
                                let number = version.split(separator: "@").last?.split(separator: " ").first.map(String.init) ?? "?"
                                match = match && response.status == 200 && response.body.hasPrefix("version \(number) ")
                                    && response.body.contains("tagged \(version)")
                            }
                        }
                        return (seen, match)
                    }
                }
            }
            var all: [String: Set<String>] = [:], match = true
            for try await (seen, ok) in tasks {
                all.merge(seen) { $0.union($1) }
                match = match && ok
            }
            return (all, match)
        }
    }

    @Test("10,000 requests from 1,000 appIds at 20:55: each user sticks to one version, 36% ± 2 on the canary, logged by version")
    func tenThousandRequests() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("20:55")
            let appIds = (0..<1000).map { "app-\($0)" }
            let (versions, bodiesMatch) = try await Self.drive(harness, appIds: appIds, perUser: 10)

            #expect(bodiesMatch, "a response body came from another version than its header named")
            #expect(versions.count == 1000)
            #expect(versions.values.allSatisfy { $0.count == 1 }, "some user reached both versions")
            let canaryUsers = Set(versions.filter { $0.value == ["engine@8 (v2.1.1)"] }.keys)
            let share = Double(canaryUsers.count) / 10
            #expect(abs(share - 36) <= 2, "canary share \(share)%")
            let range = try CanaryRange.parse(percent: "20:55")
            #expect(canaryUsers == Set(appIds.filter { range.contains(Bucket.of(appId: $0, salt: ProxyHarness.canarySalt)) }))

            harness.accessLog.flush()
            let lines = try String(contentsOfFile: harness.accessLogPath, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 10_000)
            var logged: [String: Set<Int>] = [:]
            for line in lines {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                let appId = try #require(object["appId"] as? String)
                logged[appId, default: []].insert(try #require(object["release"] as? Int))
                #expect(object["service"] as? String == "engine")
                #expect(object["status"] as? Int == 200)
                #expect((object["route"] as? String) == ((object["release"] as? Int) == 8 ? "canary" : "stable"))
            }
            #expect(logged.count == 1000)
            #expect(logged.allSatisfy { appId, releases in releases == (canaryUsers.contains(appId) ? [8] : [7]) })

            let stats = harness.proxy.statistics.snapshot()
            let requests = Dictionary(uniqueKeysWithValues: stats.versions.map { ($0.release, $0.totals.requests) })
            #expect(requests[8] == canaryUsers.count * 10)
            #expect(requests[7] == (1000 - canaryUsers.count) * 10)
        }
    }

    @Test("widening 5% → 25% keeps every canary user; a rollback sends every user's next request to stable")
    func wideningAndRollback() async throws {
        try await ProxyHarness.run { harness in
            let appIds = (0..<1000).map { "user-\($0)" }
            let canary = "engine@8 (v2.1.1)", stable = "engine@7 (v2.1.0)"

            try harness.setCanary("5")
            let atFive = Set(try await Self.drive(harness, appIds: appIds, perUser: 1).versions.filter { $0.value == [canary] }.keys)
            try harness.setCanary("25")
            let atTwentyFive = Set(try await Self.drive(harness, appIds: appIds, perUser: 1).versions.filter { $0.value == [canary] }.keys)
            #expect(!atFive.isEmpty)
            #expect(atFive.isSubset(of: atTwentyFive))
            #expect(atTwentyFive.count > atFive.count * 3)

            try harness.rollBack()
            let after = try await Self.drive(harness, appIds: appIds, perUser: 1).versions
            #expect(after.values.allSatisfy { $0 == [stable] })
        }
    }

    @Test("a unit's failure is marked fresh only on its first request under a split; a widening makes every unit's next request fresh again")
    func freshFailures() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("50")
            let statistics = harness.proxy.statistics
            func failures(_ appId: String) -> [Bool] {
                statistics.snapshot().versions.flatMap(\.windows).compactMap(\.evidence).flatMap(\.failures)
                    .filter { $0.unit == "u:\(appId)" }.sorted { $0.at < $1.at }.map(\.fresh)
            }
            /// Waits for the next one-second statistics window, so each failure is its unit's earliest in its window.
            func nextWindow() async throws {
                let now = Date().timeIntervalSince1970
                try await Task.sleep(for: .milliseconds(Int((now.rounded(.down) + 1 - now) * 1000) + 20))
            }
            try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                for appId in ["fresh-a", "fresh-b"] {
                    #expect(try await client.send("/status/503", headers: [ProxyHarness.bearer(appId)]).status == 503)
                }
                try await nextWindow()
                #expect(try await client.send("/status/503", headers: [ProxyHarness.bearer("fresh-a")]).status == 503)
                #expect(try await client.send("/ok", headers: [ProxyHarness.bearer("fresh-b")]).status == 200)
                try harness.setCanary("60")
                try await nextWindow()
                #expect(try await client.send("/ok", headers: [ProxyHarness.bearer("fresh-b")]).status == 200)
                #expect(try await client.send("/status/503", headers: [ProxyHarness.bearer("fresh-b")]).status == 503)
                #expect(try await client.send("/status/503", headers: [ProxyHarness.bearer("fresh-a")]).status == 503)
            }
            #expect(failures("fresh-a") == [true, false, true], "first request, a later one, first after the widening")
            #expect(failures("fresh-b") == [true, false], "a success came first under the new split")
        }
    }

    /// A slow first request (answered 504 after the 1 s timeout) and a quick failing second
    /// one from the same user: the second waits for the first, so the judge reads the first
    /// request's failure first, whatever each version's latency.
    @Test("a unit's failures are recorded in the order they arrived: a quick failure waits behind its unit's unanswered first request")
    func failuresWaitForTheFirstRequest() async throws {
        var configuration = ProxyConfiguration(port: 0)
        configuration.upstreamResponseTimeout = .seconds(1)
        try await ProxyHarness.run(configuration: configuration) { harness in
            try harness.setCanary("50")
            let now = Date().timeIntervalSince1970
            try await Task.sleep(for: .milliseconds(Int((now.rounded(.down) + 1 - now) * 1000) + 20))
            let port = harness.port, group = harness.clientGroup
            let slow = Task {
                try await TestHTTPClient.withConnection(port: port, group: group) { client in
                    try await client.send("/slow", headers: [ProxyHarness.bearer("first-slow")]).status
                }
            }
            try await Task.sleep(for: .milliseconds(150))
            let quick = try await TestHTTPClient.withConnection(port: port, group: group) { client in
                try await client.send("/status/503", headers: [ProxyHarness.bearer("first-slow")]).status
            }
            #expect(quick == 503)
            #expect(try await slow.value == 504)
            let windows = harness.proxy.statistics.snapshot().versions.flatMap(\.windows).sorted { $0.start < $1.start }
            let failures = windows.compactMap(\.evidence).flatMap(\.failures).filter { $0.unit == "u:first-slow" }
            #expect(failures.first?.fresh == true, "the first failure read is the first request's: \(failures)")
            #expect(failures.count == 1, "both in one window, where the unit keeps its earliest-arriving failure")
        }
    }

    @Test("anonymous clients get the non-auth weight and stay put with the sticky cookie")
    func anonymousSticky() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("50")
            let results = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                var firstVersions: [String] = []
                var sticky = true
                for _ in 0..<200 {
                    let first = try await client.send("/anon")
                    let cookie = try #require(first.headers.first(name: "set-cookie"))
                    let pair = String(cookie.split(separator: ";")[0])
                    firstVersions.append(first.version ?? "")
                    for _ in 0..<3 {
                        let again = try await client.send("/anon", headers: [("cookie", "theme=dark; \(pair)")])
                        sticky = sticky && again.version == first.version && again.headers.first(name: "set-cookie") == nil
                    }
                }
                return (firstVersions, sticky)
            }
            #expect(results.1, "a client with the cookie changed version")
            let canaryShare = Double(results.0.filter { $0.hasPrefix("engine@8") }.count) / 200
            #expect(canaryShare > 0.35 && canaryShare < 0.65, "anonymous canary share \(canaryShare)")
        }
    }

    @Test("hostile sticky cookies: anything but a short id of letters, digits, - and _ gets a new one, and every request is answered")
    func hostileStickyCookies() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("50")
            let hostile = ["", "=", ";;;", String(repeating: "a", count: 33), "abc def", "abc\\x00", "é", "../../etc", "%00", "a.b"]
            // ("a;b=c" is the cookie "a" followed by another cookie, as browsers send it.)
            let valid = ["0", "1e9999", "deadbeefdeadbeef", "Client_1-x", String(repeating: "z", count: 32), "a;b=c"]
            let answers = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                var answers: [(value: String, status: Int, newCookie: Bool)] = []
                for value in hostile + valid {
                    let response = try await client.send("/anon", headers: [("cookie", "grayscale_sticky=\(value)")])
                    answers.append((value, response.status, response.headers.first(name: "set-cookie") != nil))
                }
                return answers
            }
            for answer in answers {
                #expect(answer.status == 200, "cookie '\(answer.value)'")
                #expect(answer.newCookie == !valid.contains(answer.value), "cookie '\(answer.value)'")
            }
        }
    }

    @Test("opt-in header is honoured only where allowed; the deny list wins")
    func optInAndLists() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("0")
            let port = harness.port, group = harness.clientGroup
            let refused = try await TestHTTPClient.withConnection(port: port, group: group) { client in
                try await client.send("/", headers: [("x-grayscale-channel", "canary")]).version
            }
            #expect(refused == "engine@7 (v2.1.0)")
            try harness.database.setRules("engine", allowList: ["qa-1"], denyList: ["vip-1"], optInAllowed: true,
                                          by: .init(actor: "test"), at: Date())
            harness.proxy.update(try harness.table())
            let versions = try await TestHTTPClient.withConnection(port: port, group: group) { client in
                [
                    try await client.send("/", headers: [("x-grayscale-channel", "canary")]).version,
                    try await client.send("/", headers: [ProxyHarness.bearer("qa-1")]).version,
                    try await client.send("/", headers: [ProxyHarness.bearer("vip-1"), ("x-grayscale-channel", "canary")]).version,
                ]
            }
            #expect(versions == ["engine@8 (v2.1.1)", "engine@8 (v2.1.1)", "engine@7 (v2.1.0)"])
        }
    }

    @Test("hot swap under load: 32 busy connections, 50 split changes, zero failed requests")
    func hotSwapUnderLoad() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("10")
            let stop = NIOLockedValueBox(false)
            let port = harness.port, group = harness.clientGroup
            async let load: (ok: Int, failed: Int) = withThrowingTaskGroup(of: (Int, Int).self) { tasks in
                for connection in 0..<32 {
                    tasks.addTask {
                        try await TestHTTPClient.withConnection(port: port, group: group) { client in
                            var ok = 0, failed = 0, index = 0
                            while !stop.withLockedValue({ $0 }) {
                                index += 1
                                do {
                                    let response = try await client.send(.POST, "/echo", headers: [ProxyHarness.bearer("c\(connection)-\(index % 50)")],
                                                                         body: "payload \(index)")
                                    if response.status == 200 && response.body == "payload \(index)" { ok += 1 } else { failed += 1 }
                                } catch {
                                    failed += 1
                                    break
                                }
                            }
                            return (ok, failed)
                        }
                    }
                }
                var ok = 0, failed = 0
                for try await (o, f) in tasks { ok += o; failed += f }
                return (ok, failed)
            }
            for change in 0..<50 {
                try harness.setCanary(change.isMultiple(of: 2) ? "20:55" : "\(change + 1)")
                try await Task.sleep(for: .milliseconds(20))
            }
            stop.withLockedValue { $0 = true }
            let result = try await load
            #expect(result.failed == 0)
            #expect(result.ok > 500)
            #expect(try harness.database.splitHistory("engine").count >= 52)
        }
    }

    @Test("a WebSocket upgrade passes through and echoes from the version chosen at upgrade")
    func webSocket() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("100")
            let socket = try RawSocket(port: harness.port)
            let token = makeJWT(["appId": "ws-user"])
            try socket.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            socket.receive(until: RawSocket.headComplete)
            #expect(socket.text.hasPrefix("HTTP/1.1 101"))
            #expect(socket.text.lowercased().contains("x-grayscale-version: engine@8 (v2.1.1)"))
            #expect(socket.text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))

            // The split changes after the upgrade: the connection stays on the canary.
            try harness.setCanary("0")
            let headLength = socket.received.count
            try socket.send(maskedTextFrame("hello"))
            let bytes = socket.receive { $0.count >= headLength + 2 + 8 }
            let frame = Array(bytes[headLength...])
            #expect(frame.first == 0x81)
            #expect(String(decoding: frame.dropFirst(2), as: UTF8.self) == "v8:hello")
        }
    }

    func maskedTextFrame(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8), mask: [UInt8] = [1, 2, 3, 4]
        return [0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }
}
