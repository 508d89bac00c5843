import Foundation
import GrayscaleProxy
import NIOCore
import Prometheus
import Testing

/// The proxy never desyncs: each hostile request checked for what the client got and for
/// exactly what the upstream received (bytes and the requests its own parser saw).
@Suite("Request smuggling and unbounded buffering", .serialized)
struct SmugglingTests {
    static let token = "Authorization: Bearer \(makeJWT(["appId": "attacker"]))"
    static let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Grayscale-Version: forged\r\n\r\n"

    /// Runs `body` with a proxy whose canary (100% of users) is a recording upstream.
    static func run(metrics: RequestMetrics? = nil, _ body: (ProxyHarness, RecordingUpstream) async throws -> Void) async throws {
        try await ProxyHarness.runWithRecordingCanary(metrics: metrics) { harness, recording in
            try harness.setCanary("100")
            try await body(harness, recording)
        }
    }

    /// Sends `request`, reads the answer until the proxy closes or `settle` passes.
    static func exchange(_ harness: ProxyHarness, _ request: String) throws -> RawSocket {
        let socket = try RawSocket(port: harness.port, timeout: 3)
        try socket.send(request)
        socket.receive()
        return socket
    }

    static func chunked(_ text: String) -> String { String(text.utf8.count, radix: 16) + "\r\n" + text + "\r\n0\r\n\r\n" }

    struct Case: CustomStringConvertible, Sendable {
        var name: String
        var request: String
        /// The status line's code the client must get.
        var status: Int
        /// The requests the upstream must parse, in order ("METHOD PATH").
        var upstream: [String]
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "TRACE with a Content-Length body", request: "TRACE /t HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: \(hidden.utf8.count)\r\n\r\n\(hidden)",
             status: 400, upstream: []),
        Case(name: "GET with Transfer-Encoding: Chunked", request: "GET /a HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n\(chunked(hidden))",
             status: 200, upstream: ["GET /a"]),
        Case(name: "GET with Transfer-Encoding: CHUNKED", request: "GET /b HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: CHUNKED\r\nConnection: close\r\n\r\n\(chunked(hidden))",
             status: 200, upstream: ["GET /b"]),
        Case(name: "DELETE with Transfer-Encoding: gzip, chunked", request: "DELETE /c HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\(chunked(hidden))",
             status: 501, upstream: []),
        Case(name: "OPTIONS with two Transfer-Encoding headers", request: "OPTIONS /d HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked(hidden))",
             status: 400, upstream: []),
        Case(name: "HEAD with Transfer-Encoding: xchunked", request: "HEAD /e HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: xchunked\r\n\r\n\(chunked(hidden))",
             status: 501, upstream: []),
        Case(name: "GET with Connection: transfer-encoding", request: "GET /f HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: transfer-encoding, close\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked(hidden))",
             status: 200, upstream: ["GET /f"]),
        Case(name: "GET with Connection: content-length", request: "GET /g HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: content-length, close\r\nContent-Length: \(hidden.utf8.count)\r\n\r\n\(hidden)",
             status: 200, upstream: ["GET /g"]),
        Case(name: "CONNECT", request: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\(token)\r\n\r\n\(hidden)",
             status: 405, upstream: []),
        Case(name: "a chunk size that is not hex", request: "POST /h HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
             status: 400, upstream: []),
        Case(name: "a chunk size over 64 bits", request: "POST /i HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
             status: 400, upstream: []),
        Case(name: "CL and TE together", request: "POST /j HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\(hidden)",
             status: 400, upstream: []),
        Case(name: "a bare LF ending a chunk size", request: "POST /l HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
             status: 400, upstream: []),
        // What already held, kept under test.
        Case(name: "two different Content-Lengths", request: "POST /m HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
             status: 400, upstream: []),
        Case(name: "a signed Content-Length", request: "POST /n HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: +5\r\n\r\nhello",
             status: 400, upstream: []),
        Case(name: "a negative Content-Length", request: "POST /o HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: -5\r\n\r\nhello",
             status: 400, upstream: []),
        Case(name: "a Content-Length over 64 bits", request: "POST /p HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
             status: 400, upstream: []),
        Case(name: "obsolete line folding", request: "GET /q HTTP/1.1\r\nHost: x\r\n\(token)\r\nX-Folded: a\r\n b\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             status: 400, upstream: []),
        Case(name: "a bare CR in a header", request: "GET /r HTTP/1.1\r\nHost: x\r\n\(token)\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             status: 400, upstream: []),
        Case(name: "a NUL byte in a header", request: "GET /s HTTP/1.1\r\nHost: x\r\n\(token)\r\nX-A: a\u{0}b\r\n\r\n",
             status: 400, upstream: []),
        Case(name: "a spoofed version header is replaced", request: "GET /u HTTP/1.1\r\nHost: x\r\n\(token)\r\nX-Grayscale-Version: forged\r\nX-Grayscale-Route: forged\r\nConnection: close\r\n\r\n",
             status: 200, upstream: ["GET /u"]),
        Case(name: "an absolute-form target goes to the configured upstream only", request: "GET http://169.254.169.254/latest HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: close\r\n\r\n",
             status: 200, upstream: ["GET http://169.254.169.254/latest"]),
        Case(name: "pipelined requests stay in order", request: "GET /p1 HTTP/1.1\r\nHost: x\r\n\(token)\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\(token)\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: close\r\n\r\n",
             status: 200, upstream: ["GET /p1", "GET /slow", "GET /p3"]),
        Case(name: "a smuggled request in a POST body stays a body", request: "POST /k HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: \(hidden.utf8.count)\r\nConnection: close\r\n\r\n\(hidden)",
             status: 200, upstream: ["POST /k"]),
    ]

    @Test("hostile framing: the client gets a status, the upstream parses exactly the requests the proxy meant", arguments: cases)
    func framing(_ hostile: Case) async throws {
        try await Self.run { harness, upstream in
            let socket = try Self.exchange(harness, hostile.request)
            #expect(socket.text.hasPrefix("HTTP/1.1 \(hostile.status) "), "\(hostile.name): \(socket.text.prefix(120))")
            try await Task.sleep(for: .milliseconds(150))
            #expect(upstream.requests.withLockedValue { $0 } == hostile.upstream, "\(hostile.name): the upstream parsed \(upstream.requests.withLockedValue { $0 })")
            #expect(!upstream.received.contains("X-Grayscale-Version: forged\r\n\r\n") || hostile.upstream.count == 1,
                    "\(hostile.name): a forged header reached the upstream outside a body")
            if hostile.name.contains("spoofed") {
                #expect(!upstream.received.contains("X-Grayscale-Version: forged") && !upstream.received.contains("X-Grayscale-Route: forged"),
                        "a spoofed X-Grayscale header reached the upstream")
                #expect(upstream.received.lowercased().contains("x-grayscale-version: engine@8"))
            }
            if hostile.upstream.count > 1 {
                let answers = hostile.upstream.map { "answer for \($0.split(separator: " ")[1])" }
                let positions = answers.compactMap { socket.text.range(of: $0)?.lowerBound }
                #expect(positions.count == answers.count && positions == positions.sorted(), "\(hostile.name): answers out of order")
            }
            // What the proxy forwarded carries the proxy's own framing, never the client's.
            for line in upstream.received.split(separator: "\r\n") where line.lowercased().hasPrefix("transfer-encoding:") {
                #expect(line == "transfer-encoding: chunked", "\(hostile.name): forwarded '\(line)'")
            }
        }
    }

    @Test("a slow smuggled answer never reaches another client")
    func desync() async throws {
        try await Self.run { harness, upstream in
            let slow = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            let attack = try Self.exchange(harness, "GET /attack HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n\(Self.chunked(slow))")
            #expect(attack.text.contains("answer for /attack"))
            // Victims reuse the pooled upstream connection right away and later.
            for index in 0..<10 {
                let victim = try Self.exchange(harness, "GET /victim-\(index) HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
                #expect(victim.text.contains("answer for /victim-\(index)"), "victim \(index) got: \(victim.text.suffix(60))")
                #expect(!victim.text.contains("/slow"))
                if index == 4 { try await Task.sleep(for: .milliseconds(600)) }
            }
            #expect(!upstream.requests.withLockedValue { $0 }.contains("GET /slow"))
        }
    }

    @Test("an upstream connection that was asked to upgrade and did not is never given to another request (found by the fuzzer)")
    func upgradeConnectionNotReused() async throws {
        try await Self.run { harness, upstream in
            let upgrade = try Self.exchange(harness, "GET /ws HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            #expect(upgrade.text.hasPrefix("HTTP/1.1 200 "), "\(upgrade.text.prefix(80))")
            // The upstream's parser stopped at the upgrade request: a request sent on that connection would wait for ever.
            let next = try Self.exchange(harness, "GET /after HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(next.text.contains("answer for /after"), "\(next.text.prefix(80))")
        }
    }

    @Test("slowloris: 200 connections holding half a header do not keep other clients from being served")
    func slowloris() async throws {
        try await Self.run { harness, _ in
            var slow: [RawSocket] = []
            for _ in 0..<200 {
                let socket = try RawSocket(port: harness.port, timeout: 3)
                try socket.send("GET /slowly HTTP/1.1\r\nHost: x\r\nX-Dribble: a")
                slow.append(socket)
            }
            for index in 0..<20 {
                let socket = try Self.exchange(harness, "GET /fast-\(index) HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
                #expect(socket.text.contains("answer for /fast-\(index)"))
            }
            for socket in slow { try? socket.send("b") }  // still held, still half a header
            #expect(slow.count == 200)
        }
    }

    @Test("responses are framed by the proxy: HEAD has no body, an HTTP/1.0 client gets no chunked coding, a stray 101 is not reused")
    func responseFraming() async throws {
        try await Self.run { harness, upstream in
            // HEAD then GET on one connection: the HEAD answer has its length and no body, so the GET's answer follows it exactly.
            let pipelined = try Self.exchange(harness, "HEAD /h1 HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\nGET /h2 HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            let responses = pipelined.text.components(separatedBy: "HTTP/1.1 200 OK")
            #expect(responses.count == 3, "\(pipelined.text)")
            #expect(responses.count == 3 && !responses[1].contains("answer for /h1") && responses[1].hasSuffix("\r\n\r\n"),
                    "the HEAD answer carried a body: \(pipelined.text)")
            #expect(pipelined.text.hasSuffix("answer for /h2"))

            // An HTTP/1.0 client and an upstream that chunks: no Transfer-Encoding reaches the client, the connection closes after.
            let old = try Self.exchange(harness, "GET /chunked HTTP/1.0\r\n\(Self.token)\r\nConnection: keep-alive\r\n\r\n")
            #expect(!old.text.lowercased().contains("transfer-encoding"), "\(old.text)")
            #expect(old.text.lowercased().contains("connection: close"))
            #expect(old.text.hasSuffix("\r\n\r\nanswer for /chunked"), "\(old.text)")

            // A 101 to a plain request: that upstream connection is never handed to the next request.
            _ = try Self.exchange(harness, "GET /switch HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            let after = try Self.exchange(harness, "GET /after-switch HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(after.text.contains("answer for /after-switch"), "\(after.text.prefix(80))")
        }
    }

    @Test("pipelined requests are answered in order, each framed by the proxy: 1xx, 204, 304, chunked, close-delimited, a body, a 404, a parse error last")
    func pipelinedFraming() async throws {
        try await Self.run { harness, upstream in
            // Everything in one write: the proxy reads the later requests while the first is in flight.
            let requests = [
                "GET /100 HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n",
                "GET /204 HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n",
                "POST /posted HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nTransfer-Encoding: chunked\r\n\r\n\(Self.chunked("a pipelined body"))",
                "GET /304 HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n",
                "GET /chunked HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n",
                "GET /close-delimited HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n",
                "GET /last HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n",
                "GET /bad HTTP/1.1\r\nHost: x\r\nBad Header: space in the name\r\n\r\n",
            ]
            let socket = try RawSocket(port: harness.port, timeout: 5)
            try socket.send(requests.joined())
            socket.receive()  // until the proxy closes after the 400
            let text = socket.text
            // A body is not followed by a line break: status lines are found wherever they start.
            let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
            #expect(statuses == ["200", "204", "200", "304", "200", "200", "200", "400"], "\(text)")
            // Bodies in order, and none where there must be none.
            let order = ["answer for /100", "X-Answer: /204", "answer for /posted", "etag: \"v8\"", "answer for /chunked",
                         "answer for /close-delimited", "answer for /last", "400 "]
            var from = text.startIndex
            for marker in order {
                guard let found = text.range(of: marker, options: .caseInsensitive, range: from..<text.endIndex) else {
                    Issue.record("\(marker) missing or out of order in \(text)")
                    break
                }
                from = found.upperBound
            }
            #expect(!text.contains("100 Continue"), "an informational answer reached the client")
            // The 204 and 304 carry no framing a client could wait on; a body of unknown length is chunked.
            let answer304 = text.components(separatedBy: "HTTP/1.1 304")[1].components(separatedBy: "HTTP/1.1 ")[0]
            #expect(answer304.lowercased().contains("content-length: 99") || !answer304.lowercased().contains("transfer-encoding"))
            #expect(answer304.hasSuffix("\r\n\r\n"), "a 304 carried a body: \(answer304)")
            let closeDelimited = text.components(separatedBy: "answer for /chunked")[1].components(separatedBy: "answer for /close-delimited")[0]
            #expect(closeDelimited.lowercased().contains("transfer-encoding: chunked"), "\(closeDelimited)")
            #expect(upstream.requests.withLockedValue { $0 } == ["GET /100", "GET /204", "POST /posted", "GET /304", "GET /chunked",
                                                                "GET /close-delimited", "GET /last"])
            let stats = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }
            #expect(stats?.totals.requests == 7)
        }
    }

    @Test("an answer no request asked for, behind a real one, never reaches the next request (pipelined or not)")
    func unsolicitedAnswer() async throws {
        try await Self.run { harness, upstream in
            let pipelined = try Self.exchange(harness, "GET /double HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\n\r\n"
                                                + "GET /next HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(pipelined.text.contains("first of double"))
            #expect(pipelined.text.hasSuffix("answer for /next"), "\(pipelined.text)")
            #expect(!pipelined.text.contains("second of double"))
            let later = try Self.exchange(harness, "GET /later HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(later.text.hasSuffix("answer for /later"), "\(later.text)")
            #expect(upstream.requests.withLockedValue { $0 } == ["GET /double", "GET /next", "GET /later"])
        }
    }

    @Test("an upgrade request with a body: the body is forwarded whole, and that upstream connection is never reused")
    func upgradeWithBody() async throws {
        try await Self.run { harness, upstream in
            let body = Self.hidden
            let upgrade = try Self.exchange(harness, "POST /up HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
                                              + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
            #expect(upgrade.text.contains("answer for /up"), "\(upgrade.text)")
            let after = try Self.exchange(harness, "GET /after HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(after.text.hasSuffix("answer for /after"), "\(after.text)")
            #expect(upstream.requests.withLockedValue { $0 } == ["POST /up", "GET /after"])
        }
    }

    @Test("an empty line before a request line is skipped; an upstream's trailers reach an HTTP/1.1 client, less framing")
    func leadingLineAndTrailers() async throws {
        try await Self.run { harness, upstream in
            let crlf = try Self.exchange(harness, "\r\n\r\nGET /crlf HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(crlf.text.hasPrefix("HTTP/1.1 200 ") && crlf.text.hasSuffix("answer for /crlf"), "\(crlf.text)")
            let trailers = try Self.exchange(harness, "GET /trailers HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(trailers.text.hasSuffix("answer for /trailers\r\n0\r\nServer-Timing: db;dur=5\r\n\r\n"), "\(trailers.text)")
            let named = try Self.exchange(harness, "GET /trailer-named HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(named.text.hasSuffix("hello\r\n0\r\nX-Public: yes\r\n\r\n"), "\(named.text)")
            // A bad trailer line after a complete body: the answer still completes, and is not an error of that version.
            let bad = try Self.exchange(harness, "GET /trailer-bad HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(bad.text.hasSuffix("hello\r\n0\r\n\r\n"), "\(bad.text)")
            try await Task.sleep(for: .milliseconds(100))
            let errors = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }?.totals.errors
            #expect(errors == 0)
        }
    }

    @Test("Expect: 100-continue and the client's trailers stay at the proxy")
    func expectAndTrailers() async throws {
        try await Self.run { harness, upstream in
            let body = Self.hidden
            let expect = try Self.exchange(harness, "POST /expect HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nExpect: 100-continue\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
            #expect(expect.text.contains("answer for /expect"))
            let trailer = try Self.exchange(harness, "POST /trailer HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Grayscale-Route: forged\r\n\r\n")
            #expect(trailer.text.contains("answer for /trailer"))
            try await Task.sleep(for: .milliseconds(100))
            #expect(!upstream.received.lowercased().contains("expect:"), "Expect reached the upstream")
            #expect(!upstream.received.contains("X-Grayscale-Route: forged"),
                    "the client's trailers reached the upstream")
            #expect(upstream.requests.withLockedValue { $0 } == ["POST /expect", "POST /trailer"])
        }
    }

    @Test("a malformed upstream answer is a 502 and is never sent again")
    func malformedAnswer() async throws {
        try await Self.run { harness, upstream in
            // Warm a pooled connection, so the malformed answer comes on a reused one.
            _ = try Self.exchange(harness, "GET /warm HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            let socket = try Self.exchange(harness, "GET /malformed HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(socket.text.hasPrefix("HTTP/1.1 502 "), "\(socket.text.prefix(120))")
            try await Task.sleep(for: .milliseconds(150))
            #expect(upstream.requests.withLockedValue { $0 }.filter { $0 == "GET /malformed" }.count == 1, "sent again")
        }
    }

    @Test("an upgrade that is not a WebSocket tunnel: answered, then closed; what the client pushes after is not buffered")
    func unboundedUpgrade() async throws {
        try await Self.run { harness, upstream in
            let socket = try RawSocket(port: harness.port, timeout: 3)
            try socket.send("GET /h2c HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
            socket.receive()
            #expect(socket.text.hasPrefix("HTTP/1.1 200 "), "\(socket.text.prefix(120))")
            #expect(socket.text.lowercased().contains("connection: close"))
            #expect(upstream.requests.withLockedValue { $0 } == ["GET /h2c"])
            #expect(!upstream.received.lowercased().contains("upgrade: h2c"), "the upgrade went to the upstream")

            // CONNECT, then 64 MiB pushed at the proxy: it stops reading, so the sender soon blocks.
            let pusher = try RawSocket(port: harness.port, timeout: 2)
            try pusher.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            let sent = pusher.sendUntilBlocked(total: 64 << 20)
            #expect(sent < 16 << 20, "the proxy kept reading \(sent >> 20) MiB after refusing CONNECT")
        }
    }

    @Test("every refusal is a status the client sees, a line in the access log with its reason, and a count in /metrics")
    func refusalsCounted() async throws {
        let registry = PrometheusCollectorRegistry()
        try await Self.run(metrics: RequestMetrics(registry: registry)) { harness, _ in
            for request in ["CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                            "TRACE / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                            "GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n"] {
                let socket = try Self.exchange(harness, request)
                #expect(socket.text.hasPrefix("HTTP/1.1 4") || socket.text.hasPrefix("HTTP/1.1 5"), "\(request.prefix(30)): \(socket.text.prefix(60))")
                #expect(socket.isClosedByPeer(), "the connection was left open after a refusal")
            }
            let metrics = registry.emitToString()
            for reason in ["connect", "transfer-encoding", "trace-body", "malformed"] {
                #expect(metrics.contains(#"grayscale_requests_refused_total{reason="\#(reason)"} 1"#), "\(reason) not counted:\n\(metrics)")
            }
            try await Task.sleep(for: .milliseconds(100))
            harness.accessLog.flush()
            let log = try String(contentsOfFile: harness.accessLogPath, encoding: .utf8)
            #expect(log.contains(#""route":"refused""#) && log.contains("CONNECT is not supported"), "\(log.suffix(400))")
            #expect(log.contains("transfer coding 'gzip' is not supported"))
        }
    }

    @Test("an appId that is not valid UTF-8 is anonymous, and the access log says why")
    func invalidAppIdLogged() async throws {
        try await Self.run { harness, _ in
            let token = IdentitySourceTests.token(payload: Array(#"{"appId":"ab"#.utf8) + [0xFF] + Array(#""}"#.utf8))
            let socket = try Self.exchange(harness, "GET /who HTTP/1.1\r\nHost: x\r\nAuthorization: \(token)\r\nConnection: close\r\n\r\n")
            #expect(socket.text.hasPrefix("HTTP/1.1 "))
            try await Task.sleep(for: .milliseconds(100))
            harness.accessLog.flush()
            let log = try String(contentsOfFile: harness.accessLogPath, encoding: .utf8)
            #expect(log.contains(#""appId":"anonymous""#) && log.contains("the token's appId is not valid UTF-8"), "\(log.suffix(400))")
        }
    }
}
