import Foundation
import GrayscaleCore
import GrayscaleProxy
import NIOCore
import NIOPosix
import Testing

/// Point 4 of the proxy issue: every bad input and upstream failure gets its exact
/// status, names the version it was routed to, and is counted as that version's error.
@Suite("Proxy bad input and failures", .serialized)
struct ProxyFailureTests {
    static func statistics(_ harness: ProxyHarness, release: Int) -> WindowStatistics? {
        harness.proxy.statistics.snapshot().versions.first { $0.release == release }?.totals
    }

    @Test("a malformed request gets 400")
    func malformed() async throws {
        try await ProxyHarness.run { harness in
            let socket = try RawSocket(port: harness.port)
            try socket.send("GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n")
            socket.receive()
            #expect(socket.text.hasPrefix("HTTP/1.1 400 Bad Request"))
        }
    }

    @Test("a header block over the limit gets 431")
    func headerTooLarge() async throws {
        try await ProxyHarness.run(configuration: ProxyConfiguration(maxHeaderBytes: 1024)) { harness in
            let socket = try RawSocket(port: harness.port)
            try socket.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 4096))\r\n\r\n")
            socket.receive()
            #expect(socket.text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large"))
        }
    }

    @Test("a body over the limit gets 413, by Content-Length or by counting a chunked body")
    func bodyTooLarge() async throws {
        try await ProxyHarness.run(configuration: ProxyConfiguration(maxBodyBytes: 1000)) { harness in
            try harness.setCanary("100")
            let declared = try RawSocket(port: harness.port)
            try declared.send("POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(makeJWT(["appId": "big"]))\r\nContent-Length: 5000\r\n\r\n")
            declared.receive()
            #expect(declared.text.hasPrefix("HTTP/1.1 413 Payload Too Large"))
            #expect(declared.text.lowercased().contains("x-grayscale-version: engine@8 (v2.1.1)"))

            let chunked = try RawSocket(port: harness.port)
            let chunk = String(repeating: "z", count: 600)
            try chunked.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n\(chunk)\r\n258\r\n\(chunk)\r\n0\r\n\r\n")
            chunked.receive()
            #expect(chunked.text.hasPrefix("HTTP/1.1 413 Payload Too Large"))
            #expect(Self.statistics(harness, release: 8)?.errorsByClass["rejected"] ?? 0 >= 1)
        }
    }

    @Test("a chunked body under the limit streams through intact")
    func chunkedPassesThrough() async throws {
        try await ProxyHarness.run { harness in
            let socket = try RawSocket(port: harness.port)
            try socket.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            socket.receive()
            #expect(socket.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(socket.text.hasSuffix("hello world"))
        }
    }

    @Test("an upstream that refuses connections gets 502 naming the version, counted as its connect failure")
    func upstreamRefuses() async throws {
        try await ProxyHarness.run(canaryUpstream: "http://127.0.0.1:1") { harness in
            try harness.setCanary("100")
            let response = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                try await client.send("/", headers: [ProxyHarness.bearer("someone")])
            }
            #expect(response.status == 502)
            #expect(response.version == "engine@8 (v2.1.1)")
            let stats = try #require(Self.statistics(harness, release: 8))
            #expect(stats.errorsByClass["connectFailure"] == 1)
            #expect(stats.errors == 1)
            #expect(stats.affectedUsers == 1)
        }
    }

    @Test("an upstream that resets before answering gets 502")
    func upstreamResets() async throws {
        try await ProxyHarness.run { harness in
            let response = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                try await client.send("/reset")
            }
            #expect(response.status == 502)
            #expect(response.version == "engine@7 (v2.1.0)")
        }
    }

    @Test("an upstream slower than the timeout gets 504")
    func upstreamTimeout() async throws {
        try await ProxyHarness.run(configuration: ProxyConfiguration(upstreamResponseTimeout: .milliseconds(300))) { harness in
            let response = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                try await client.send("/slow")
            }
            #expect(response.status == 504)
            #expect(response.version == "engine@7 (v2.1.0)")
            #expect(Self.statistics(harness, release: 7)?.errorsByClass["timeout"] == 1)
        }
    }

    @Test("an upstream 5xx passes through and counts as that version's error")
    func upstream5xx() async throws {
        try await ProxyHarness.run { harness in
            let response = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                try await client.send("/status/503", headers: [ProxyHarness.bearer("u1")])
            }
            #expect(response.status == 503)
            #expect(Self.statistics(harness, release: 7)?.errorsByClass["upstream5xx"] == 1)
            #expect(Self.statistics(harness, release: 7)?.affectedUsers == 1)
        }
    }

    @Test("an idle client connection is closed after the idle timeout")
    func idleTimeout() async throws {
        try await ProxyHarness.run(configuration: ProxyConfiguration(idleTimeout: .milliseconds(200))) { harness in
            let socket = try RawSocket(port: harness.port, timeout: 5)
            #expect(socket.isClosedByPeer())
        }
    }

    @Test("one sweep per loop keeps every connection's idle timeout: a silent one closes, a busy one stays, one that left is forgotten")
    func idleSweep() async throws {
        try await ProxyHarness.run(configuration: ProxyConfiguration(idleTimeout: .seconds(8))) { harness in
            let left = try RawSocket(port: harness.port), silent = try RawSocket(port: harness.port), busy = try RawSocket(port: harness.port)
            func ask(_ socket: RawSocket, _ count: Int) throws {
                try socket.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                socket.receive { String(decoding: $0, as: UTF8.self).components(separatedBy: "version 7").count - 1 == count }
            }
            for socket in [left, silent, busy] { try ask(socket, 1) }
            left.shutdown()  // leaves the sweep's list before the others (a swap in its array)
            // The busy connection asks every 100 ms for 10 s, past the 8 s idle timeout (CI machines
            // under load stalled this test for over 4 s: a 1 s, then a 4 s timeout closed the busy one
            // there, rightly, as it had been idle that long).
            for round in 2...101 {
                try await Task.sleep(for: .milliseconds(100))
                try ask(busy, round)
            }
            // The silent one is closed by the proxy: counted on the proxy's side, since in a full run another
            // suite's child process can hold a copy of the proxy's socket, and its FIN then never comes (seen
            // twice: the silent client waited 30 s for it). The busy one keeps asking meanwhile.
            var round = 102
            let deadline = ContinuousClock.now + .seconds(30)
            while harness.proxy.openConnections > 1, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                try ask(busy, round)
                round += 1
            }
            #expect(harness.proxy.openConnections == 1)
            try ask(busy, round)
            #expect(busy.text.components(separatedBy: "HTTP/1.1 200 OK").count - 1 == round)
        }
    }

    @Test("a client that pipelines requests and never reads its answers gets no more of them: they do not pile up in memory; others are served")
    func pipelinerThatNeverReads() async throws {
        try await ProxyHarness.run { harness in
            let greedy = try RawSocket(port: harness.port, receiveBuffer: 4096)
            // Pipelined GETs with a long path (the upstream's answer repeats it: 1 KiB answers) for 2 s,
            // as fast as the socket takes them, and no answer read.
            let request = Array("GET /\(String(repeating: "p", count: 1000)) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            let sent = greedy.sendFor(seconds: 2, repeating: request) / request.count
            func answered() -> Int { Self.statistics(harness, release: 7)?.requests ?? 0 }
            // Once the client's socket is full, the proxy answers nothing more until it reads: the count
            // comes to a stop though requests wait. Without the pause it answered into memory every
            // request sent. The count is taken as stopped once it stays the same for 1.5 s.
            var count = answered(), still = 0, polls = 0
            while still < 6, polls < 240 {
                try await Task.sleep(for: .milliseconds(250))
                let now = answered()
                still = now == count ? still + 1 : 0
                count = now
                polls += 1
            }
            #expect(still == 6, "the answers never came to a stop")
            #expect(count < sent, "every request sent was answered, into memory (\(sent) sent)")
            let other = try RawSocket(port: harness.port)
            try other.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            other.receive { String(decoding: $0, as: UTF8.self).contains("version 7") }
            #expect(other.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(answered() == count + 1, "answers went on piling up for a client that reads nothing")
            // Once it reads, its answers come again.
            var answers = StatusLineCounter()
            greedy.receive { answers.count(in: $0) > count + 100 }
            #expect(answers.found > count + 100)
        }
    }

    @Test("an upload is read to its end while its answer, which came early, waits for the client to read it")
    func earlyAnswerDuringUpload() async throws {
        // An upstream that answers 1 MiB as soon as a request's head arrives, and reads the body into nowhere.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let early = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EarlyAnswerer()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        try await ProxyHarness.run(canaryUpstream: "http://127.0.0.1:\(early.localAddress!.port!)") { harness in
            try harness.setCanary("100")
            let client = try RawSocket(port: harness.port, timeout: 10, receiveBuffer: 4096)
            let total = 64 * 65536
            try client.send("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(makeJWT(["appId": "uploader"]))\r\nContent-Length: \(total)\r\n\r\n")
            // The whole body goes before a byte of the answer is read.
            #expect(client.sendUntilBlocked(total: total, patience: 10) == total, "the proxy stopped reading the body")
            func bodyBytes(_ bytes: [UInt8]) -> Int {
                guard let end = String(decoding: bytes.prefix(4096), as: UTF8.self).range(of: "\r\n\r\n") else { return 0 }
                return bytes.count - String(decoding: bytes.prefix(4096), as: UTF8.self)[..<end.upperBound].utf8.count
            }
            client.receive { bodyBytes($0) >= 1_048_576 }
            #expect(client.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(bodyBytes(client.received) == 1_048_576)
        }
        try await early.close()
        try await group.shutdownGracefully()
    }

    @Test("a client that stops reading a big answer is closed after the idle timeout, and its upstream connection freed")
    func stalledReaderIsClosed() async throws {
        // An upstream that answers 8 MiB at once, whatever was asked.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let big = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EarlyAnswerer(bytes: 8 << 20)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        try await ProxyHarness.run(configuration: ProxyConfiguration(idleTimeout: .seconds(1)),
                                   canaryUpstream: "http://127.0.0.1:\(big.localAddress!.port!)") { harness in
            try harness.setCanary("100")
            let request = "GET /big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(makeJWT(["appId": "reader"]))\r\n\r\n"
            let stalled = try RawSocket(port: harness.port, timeout: 10, receiveBuffer: 4096)
            try stalled.send(request)
            try await Task.sleep(for: .seconds(4))  // reads nothing for four idle timeouts (a client that reads is never stalled that long)
            stalled.receive()  // what was on its way, then the end
            #expect(stalled.received.count < 8 << 20, "the whole answer waited for a client that stopped reading")
            #expect(stalled.text.hasPrefix("HTTP/1.1 200 OK"))
        }
        try await big.close()
        try await group.shutdownGracefully()
    }

    @Test("connections over the cap are closed at once; the others keep working")
    func connectionCap() async throws {
        try await ProxyHarness.run(configuration: ProxyConfiguration(maxConnections: 2)) { harness in
            let first = try RawSocket(port: harness.port), second = try RawSocket(port: harness.port)
            try await Task.sleep(for: .milliseconds(100))
            let third = try RawSocket(port: harness.port, timeout: 5)
            #expect(third.isClosedByPeer())
            try first.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first.receive { String(decoding: $0, as: UTF8.self).contains("version 7") }
            #expect(first.text.hasPrefix("HTTP/1.1 200 OK"))
            _ = second
        }
    }

    @Test("hop-by-hop headers are dropped and X-Forwarded-For is added")
    func forwardedHeaders() async throws {
        try await ProxyHarness.run { harness in
            let response = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                try await client.send("/", headers: [("connection", "keep-alive, x-secret"), ("x-secret", "drop me"), ("x-forwarded-for", "10.1.2.3")])
            }
            #expect(response.body.contains("forwarded-for 10.1.2.3, 127.0.0.1"))
            #expect(response.headers.first(name: "keep-alive") == nil)
            #expect(response.headers.first(name: "x-upstream-version") == "7")
        }
    }

    @Test("with a routing header, each forwarded request carries the bucket the platform needs")
    func routingHeader() async throws {
        var configuration = ProxyConfiguration()
        configuration.routingHeader = "X-Grayscale-Bucket"
        try await ProxyHarness.run(configuration: configuration) { harness in
            try harness.setCanary("20:55")
            let bodies = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                [try await client.send("/", headers: [ProxyHarness.bearer("app-42")]).body, try await client.send("/").body,
                 try await client.send("/", headers: [ProxyHarness.bearer("app-42"), ("X-Grayscale-Bucket", "9999")]).body]
            }
            #expect(bodies[0].hasSuffix("bucket \(Bucket.of(appId: "app-42", salt: ProxyHarness.canarySalt).value)"))
            // A client's own routing header never reaches the platform: only the proxy's.
            #expect(bodies[2].hasSuffix("bucket \(Bucket.of(appId: "app-42", salt: ProxyHarness.canarySalt).value)"))
            let anonymous = try #require(Int(bodies[1].split(separator: " ").last ?? ""))
            let range = try CanaryRange.parse(percent: "20:55")
            #expect(range.contains(Bucket(anonymous)) == bodies[1].hasPrefix("version 8"), "the bucket agrees with the version chosen")
        }
    }

    @Test("an upstream connection the upstream closes after its answer is not reused")
    func upstreamConnectionClose() async throws {
        try await ProxyHarness.run { harness in
            let statuses = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                var statuses: [Int] = []
                for path in ["/close", "/", "/close", "/close", "/"] { statuses.append(try await client.send(path).status) }
                return statuses
            }
            #expect(statuses == [200, 200, 200, 200, 200])
        }
    }

    @Test("a GET on a pooled connection the upstream just closed is sent again on a new one, once")
    func retryOnStaleConnection() async throws {
        try await ProxyHarness.run { harness in
            let statuses = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                [try await client.send("/").status, try await client.send("/drop-if-reused").status, try await client.send("/").status]
            }
            #expect(statuses == [200, 200, 200])
            // A POST is not repeated: its body may have been acted on.
            let post = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                [try await client.send(.POST, "/echo", body: "a").status, try await client.send(.POST, "/drop-if-reused", body: "b").status]
            }
            #expect(post == [200, 502])
        }
    }
}

/// Answers every connection's first bytes with a 1 MiB answer at once, and discards what follows.
private final class EarlyAnswerer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let answer: [UInt8]
    private var answered = false

    init(bytes: Int = 1_048_576) {
        answer = Array("HTTP/1.1 200 OK\r\nContent-Length: \(bytes)\r\n\r\n".utf8) + [UInt8](repeating: 0x61, count: bytes)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        answered = true
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: answer)), promise: nil)
    }
}

/// Counts "HTTP/1.1 200 OK" in bytes that only grow, looking at each byte once.
private struct StatusLineCounter {
    private static let marker = Array("HTTP/1.1 200 OK".utf8)
    private(set) var found = 0
    private var scanned = 0

    mutating func count(in bytes: [UInt8]) -> Int {
        let marker = Self.marker
        while scanned + marker.count <= bytes.count {
            if bytes[scanned] == marker[0], bytes[scanned..<scanned + marker.count].elementsEqual(marker) { found += 1 }
            scanned += 1
        }
        return found
    }
}


/// An upstream that answers a connection's first request, and resets the connection (SO_LINGER 0) when a second one comes on it:
/// a keep-alive connection the upstream dropped just as the proxy reused it.
final class ResettingUpstream: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var requests = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(buffer: unwrapInboundIn(data))
        guard text.contains("\r\n\r\n") else { return }
        requests += 1
        if requests == 1 {
            let body = "first"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")), promise: nil)
            return
        }
        let channel = context.channel
        if let options = channel as? SocketOptionProvider {
            options.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }
}

/// Runs apart, in `make test`'s pass of the Heavy suites (none of which forks): while another
/// test's child process holds a copy of the upstream's socket (the CLI's, PostgreSQL's), closing
/// it sends no reset, and the request would wait for its timeout instead.
@Suite("Heavy pass: upstream resets")
struct HeavyUpstreamResetTests {
    @Test("a pooled connection the upstream resets as it is reused: the idempotent request goes again on a new one, as after a close")
    func resetOnReuseIsRetried() async throws {
        try await WebSocketDrainTests.withRawUpstream({ ResettingUpstream() }) { upstream in
            try await ProxyHarness.run(canaryUpstream: upstream) { harness in
                try harness.setCanary("100")
                let statuses = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                    var statuses: [Int] = []
                    for _ in 0..<5 {
                        statuses.append(try await client.send("/x", headers: [ProxyHarness.bearer("app-1")]).status)
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    return statuses
                }
                #expect(statuses == [200, 200, 200, 200, 200], "a reset on reuse was answered 502 instead of being retried: \(statuses)")
            }
        }
    }
}
