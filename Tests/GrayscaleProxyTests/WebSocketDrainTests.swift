import Foundation
import GrayscaleTestSupport
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import GrayscaleProxy

@Suite("WebSockets on a rollback")
struct WebSocketDrainTests {
    static func upgrade(_ harness: ProxyHarness, user: String) throws -> RawSocket {
        let socket = try RawSocket(port: harness.port, timeout: 30)
        try socket.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(makeJWT(["appId": user]))\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        socket.receive(until: RawSocket.headComplete)
        return socket
    }

    static func maskedText(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8), mask: [UInt8] = [9, 8, 7, 6]
        return [0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }

    /// Sends a text frame and returns the echo's payload.
    static func echo(_ socket: RawSocket, _ text: String) throws -> String {
        let before = socket.received.count
        try socket.send(maskedText(text))
        let bytes = socket.receive { $0.count >= before + 2 + 3 + text.utf8.count }
        return String(decoding: bytes[(before + 2)...], as: UTF8.self)
    }

    @Test("a rollback closes the canary's WebSockets with code 1012 (clients reconnect to stable); stable's stay open")
    func rollbackClosesCanarySockets() async throws {
        try await ProxyHarness.run { harness in
            try harness.setCanary("100")
            let onCanary = try Self.upgrade(harness, user: "ws-canary")
            #expect(onCanary.text.lowercased().contains("x-grayscale-version: engine@8"))
            try harness.setCanary("0")
            let onStable = try Self.upgrade(harness, user: "ws-stable")
            #expect(onStable.text.lowercased().contains("x-grayscale-version: engine@7"))
            #expect(try Self.echo(onCanary, "before") == "v8:before")
            #expect(harness.proxy.webSockets["engine"] == [7: 1, 8: 1])

            // -p 0 keeps the canary release routed: its sockets stay.
            #expect(try Self.echo(onCanary, "at zero") == "v8:at zero")

            try harness.rollBack()
            let head = onCanary.received.count
            let bytes = onCanary.receive { $0.count >= head + 4 }
            #expect(Array(bytes[head...]) == [0x88, 0x02, 0x03, 0xF4], "a close frame, code 1012 (service restart)")
            // The client answers the close; the proxy ends the connection.
            try onCanary.send([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xF4 ^ 2])
            #expect(onCanary.isClosedByPeer())
            #expect(try Self.echo(onStable, "after") == "v7:after", "stable's socket is untouched")
            #expect(harness.proxy.webSockets["engine"] == [7: 1])
        }
    }

    /// An upstream that answers an upgrade with its 101 and, in the same write, the first
    /// three bytes of a 10-byte text frame; the other nine follow 200 ms later.
    final class SplitFrameUpstream: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        static let frame: [UInt8] = [0x81, 0x0A] + Array("0123456789".utf8)
        var answered = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered, String(buffer: unwrapInboundIn(data)).contains("\r\n\r\n") else { return }
            answered = true
            let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: Array(head.utf8) + Self.frame.prefix(3))), promise: nil)
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(200)) {
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(bytes: Self.frame.dropFirst(3))), promise: nil)
            }
        }
    }

    @Test("bytes of a frame that came with the 101 are followed too: the close comes after that frame, not inside it")
    func frameStartedWithThe101() async throws {
        try await Self.withRawUpstream({ SplitFrameUpstream() }) { upstream in try await ProxyHarness.run(canaryUpstream: upstream) { harness in
            try harness.setCanary("100")
            let socket = try Self.upgrade(harness, user: "ws-split")
            let head = socket.text.range(of: "\r\n\r\n").map { socket.text.utf8.distance(from: socket.text.utf8.startIndex, to: $0.upperBound) } ?? 0
            socket.receive { $0.count >= head + SplitFrameUpstream.frame.count }
            try harness.rollBack()
            let bytes = socket.receive { $0.count >= head + SplitFrameUpstream.frame.count + 4 }
            #expect(Array(bytes[head...]) == SplitFrameUpstream.frame + [0x88, 0x02, 0x03, 0xF4])
        } }
    }

    /// A canary upstream written byte by byte (`makeHandler` per connection) on a loopback port, for the length of `body`.
    static func withRawUpstream(_ makeHandler: @escaping @Sendable () -> any ChannelHandler,
                                _ body: (_ url: String) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(makeHandler()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { _ = upstream.close(); group.shutdownGracefully { _ in } }
        try await body("http://127.0.0.1:\(upstream.localAddress!.port!)")
    }

    /// An upstream that upgrades, then ends the socket: with a close frame first (a normal
    /// close), or without one (abnormal, 1006), 100 ms after its 101.
    final class ClosingUpstream: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let closeFrame: Bool
        var answered = false
        init(closeFrame: Bool) { self.closeFrame = closeFrame }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered, String(buffer: unwrapInboundIn(data)).contains("\r\n\r\n") else { return }
            answered = true
            let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: head)), promise: nil)
            let closeFrame = self.closeFrame
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(100)) {
                if closeFrame { context.write(self.wrapOutboundOut(ByteBuffer(bytes: [0x88, 0x02, 0x03, 0xE8])), promise: nil) }
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer()), promise: nil)
                context.close(promise: nil)
            }
        }
    }

    @Test("an upstream that drops a WebSocket without a close frame: counted apart for its version and logged (1006), not evidence for the judge; a proper close is neither")
    func abnormalClosesAreErrors() async throws {
        for closeFrame in [false, true] {
            try await Self.withRawUpstream({ ClosingUpstream(closeFrame: closeFrame) }) { upstream in try await ProxyHarness.run(canaryUpstream: upstream) { harness in
                try harness.setCanary("100")
                let socket = try Self.upgrade(harness, user: "ws-dropped")
                #expect(socket.text.hasPrefix("HTTP/1.1 101"))
                socket.receive()  // until the proxy closes the client's side
                let canary = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }
                #expect(canary?.totals.requests == 1, "the upgrade only: a drop ends it, it is not another request")
                #expect(canary?.totals.errorsByClass["webSocketDropped"] == (closeFrame ? 0 : 1))
                // Drops come in bursts (a pod restart drops all its sockets): counting each as a failing
                // unit would break the judge's α, so they stay out of `errors` and out of the evidence.
                #expect(canary?.totals.errors == 0)
                #expect(canary?.windows.flatMap { $0.evidence?.failures ?? [] }.isEmpty == true)
                // What the controller reads: the socket opened and (without a close frame) dropped, for the step's gate.
                #expect(canary?.totals.webSocketsOpened == 1)
                let (observed, _) = harness.proxy.statistics.observation(service: "engine", release: 8, from: Date(timeIntervalSinceNow: -600),
                                                                          to: Date(timeIntervalSinceNow: 5))
                #expect(observed.webSocketsOpened == 1)
                #expect(observed.webSocketsDropped == (closeFrame ? 0 : 1))
                harness.accessLog.flush()
                let log = try String(contentsOfFile: harness.accessLogPath, encoding: .utf8)
                #expect(log.contains("without a close frame (1006)") == !closeFrame)
            } }
        }
    }

    /// An upstream that refuses every upgrade: 400, no switch.
    final class RefusingUpstream: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard String(buffer: unwrapInboundIn(data)).contains("\r\n\r\n") else { return }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno")), promise: nil)
        }
    }

    @Test("a WebSocket upgrade the upstream does not switch (400) is an error of its version, its user a failing unit; a plain 400 is not")
    func failedUpgradeIsAnError() async throws {
        try await Self.withRawUpstream({ RefusingUpstream() }) { upstream in try await ProxyHarness.run(canaryUpstream: upstream) { harness in
            try harness.setCanary("100")
            let socket = try Self.upgrade(harness, user: "ws-refused")
            #expect(socket.text.hasPrefix("HTTP/1.1 400"))
            let plain = try RawSocket(port: harness.port)
            try plain.send("GET /plain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(makeJWT(["appId": "plain-400"]))\r\n\r\n")
            plain.receive(until: RawSocket.headComplete)
            #expect(plain.text.hasPrefix("HTTP/1.1 400"))
            let canary = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }
            #expect(canary?.totals.requests == 2)
            #expect(canary?.totals.errorsByClass["upgradeFailed"] == 1)
            #expect(canary?.totals.errors == 1, "the plain 400 is the client's mistake, not the version's")
            let failing = canary?.windows.flatMap { $0.evidence?.failures ?? [] } ?? []
            #expect(failing.map(\.unit).count == 1 && failing.allSatisfy { $0.unit.contains("ws-refused") }, "\(failing.map(\.unit))")
        } }
    }

    @Test("a client that never answers the close is disconnected after the grace")
    func graceEndsSilentClients() async throws {
        var configuration = ProxyConfiguration(port: 0)
        configuration.webSocketDrainGrace = .milliseconds(200)
        try await ProxyHarness.run(configuration: configuration) { harness in
            try harness.setCanary("100")
            let socket = try Self.upgrade(harness, user: "ws-silent")
            try harness.rollBack()
            let head = socket.received.count
            socket.receive { $0.count >= head + 4 }
            #expect(Array(socket.received[head...].prefix(4)) == [0x88, 0x02, 0x03, 0xF4])
            #expect(socket.isClosedByPeer(), "closed by the proxy (the read would time out after 30 s otherwise)")
        }
    }

    @Test("the policy's webSocketDrain, carried by the split, sets the grace: every proxy drains the same way whatever its own setting")
    func graceFromTheSplit() async throws {
        var configuration = ProxyConfiguration(port: 0)
        configuration.webSocketDrainGrace = .seconds(120)  // the proxy's own: far past the socket's 30 s read timeout
        try await ProxyHarness.run(configuration: configuration) { harness in
            try harness.setCanary("100")
            let socket = try Self.upgrade(harness, user: "ws-silent")
            // The rollback as the controller writes it under a policy with `webSocketDrain: 1s`.
            var state = try harness.database.serviceState("engine")
            state.setWebSocketDrain(seconds: 1)
            try state.rollBack(at: Date())
            harness.proxy.update(RoutingTable(states: [state]))
            let head = socket.received.count
            socket.receive { $0.count >= head + 4 }
            #expect(Array(socket.received[head...].prefix(4)) == [0x88, 0x02, 0x03, 0xF4], "close 1012")
            #expect(socket.isClosedByPeer(), "cut after the split's 1 s: under the proxy's 120 s the read would time out after 30 s first")
        }
    }

    @Test("frame boundaries are found in any split of the stream (seeded: lengths 0 to 70,000, masked or not, 16- and 64-bit lengths)")
    func frameBoundaries() {
        var random = SeededRandom(seed: 1012)
        for _ in 0..<200 {
            var stream: [UInt8] = []
            var ends: [Int] = []
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let length = [0, 1, 125, 126, 127, 65535, 65536, 70_000][Int.random(in: 0..<8, using: &random)]
                let masked = Bool.random(using: &random)
                let maskBit: UInt8 = masked ? 0x80 : 0
                var header: [UInt8] = [0x82]
                switch length {
                case ..<126:
                    header.append(maskBit | UInt8(length))
                case ..<65536:
                    header += [maskBit | 126, UInt8(length >> 8), UInt8(length & 0xFF)]
                default:
                    header.append(maskBit | 127)
                    for shift in stride(from: 56, through: 0, by: -8) { header.append(UInt8((UInt64(length) >> UInt64(shift)) & 0xFF)) }
                }
                if masked { header += [1, 2, 3, 4] }
                stream += header + [UInt8](repeating: 0x7E, count: length)
                ends.append(stream.count)
            }
            // Fed in random pieces, as reads would bring them: each frame's end is found once.
            var frames = WebSocketFrames()
            var position = 0
            var found: [Int] = []
            while position < stream.count {
                var rest = stream[position..<min(stream.count, position + Int.random(in: 1...9000, using: &random))]
                while !rest.isEmpty {
                    guard let at = frames.boundary(in: rest) else {
                        position += rest.count
                        break
                    }
                    if at == 0 {  // between two frames: step into the next one
                        frames.advance(over: rest.prefix(1))
                        position += 1
                        rest = rest.dropFirst()
                        continue
                    }
                    position += at
                    found.append(position)
                    rest = rest.dropFirst(at)
                }
            }
            #expect(found == ends)
            #expect(frames.atBoundary)
        }
    }
}

/// The answer's head waits for the body that came in the same read (one write for both),
/// never for bytes the upstream has not sent: a streamed answer streams.
@Suite("Answers stream")
struct AnswerStreamTests {
    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    /// `GET /with-body`: a head and the first 5 of 10 bytes; `GET /head-alone`: the head
    /// alone. The rest of each only once the test sets that path's flag (or after 10 s).
    final class SlowBodyUpstream: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let withBody: Flag, headAlone: Flag
        init(withBody: Flag, headAlone: Flag) {
            self.withBody = withBody
            self.headAlone = headAlone
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let request = String(buffer: unwrapInboundIn(data))
            guard request.contains("\r\n\r\n") else { return }
            let alone = request.hasPrefix("GET /head-alone ")
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: alone ? head : head + "hello")), promise: nil)
            let flag = alone ? headAlone : withBody
            func later(_ waited: Int) {
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(10)) {
                    if flag.isSet || waited >= 1000 {
                        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: alone ? "helloworld" : "world")), promise: nil)
                    } else {
                        later(waited + 1)
                    }
                }
            }
            later(0)
        }
    }

    @Test("an answer's head (with the bytes that came with it, or alone) reaches the client before the rest of its body exists")
    func headIsNotHeld() async throws {
        let withBody = Flag(), headAlone = Flag()
        try await WebSocketDrainTests.withRawUpstream({ SlowBodyUpstream(withBody: withBody, headAlone: headAlone) }) { upstream in
            try await ProxyHarness.run(canaryUpstream: upstream) { harness in
                try harness.setCanary("100")
                func ask(_ path: String) throws -> RawSocket {
                    let socket = try RawSocket(port: harness.port, timeout: 5)
                    try socket.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(makeJWT(["appId": "slow-reader"]))\r\n\r\n")
                    return socket
                }
                /// Exactly one head, then `body`.
                func isAnswer(_ text: String, body: String) -> Bool {
                    text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.components(separatedBy: "HTTP/1.1 ").count == 2
                        && text.hasSuffix("\r\n\r\n" + body) && text.components(separatedBy: "\r\n\r\n").count == 2
                }
                let first = try ask("/with-body")
                first.receive { String(decoding: $0, as: UTF8.self).hasSuffix("hello") }
                #expect(isAnswer(first.text, body: "hello"))
                withBody.set()
                first.receive { String(decoding: $0, as: UTF8.self).hasSuffix("helloworld") }
                #expect(isAnswer(first.text, body: "helloworld"))

                let second = try ask("/head-alone")
                second.receive(until: RawSocket.headComplete)
                #expect(isAnswer(second.text, body: ""))
                headAlone.set()
                second.receive { String(decoding: $0, as: UTF8.self).hasSuffix("helloworld") }
                #expect(isAnswer(second.text, body: "helloworld"))
            }
        }
    }
}
