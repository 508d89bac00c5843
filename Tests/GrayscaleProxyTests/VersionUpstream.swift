import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A tiny upstream that answers as one release would: `version N` in the body and
/// `x-upstream-version: N`. `/status/503` answers 503, release 8 answers 500 to paths naming "dotted", `/slow` waits 3 s, `/reset`
/// closes without answering, `/echo` returns the request body, and a WebSocket
/// upgrade echoes text frames as `vN:<text>`.
final class VersionUpstream: Sendable {
    let version: Int
    let channel: Channel

    var port: Int { channel.localAddress!.port! }
    var url: String { "http://127.0.0.1:\(port)" }

    init(version: Int, group: EventLoopGroup) async throws {
        self.version = version
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOWebSocketServerUpgrader(
                        shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(WebSocketEcho(version: version))
                            }
                        })
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                            context.pipeline.syncOperations.removeHandler(name: "version", promise: nil)
                        }))
                    try channel.pipeline.syncOperations.addHandler(VersionHandler(version: version), name: "version")
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func stop() async throws { try await channel.close() }
}

private final class VersionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let version: Int
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var closing = false
    private var requestsOnConnection = 0

    init(version: Int) { self.version = version }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head, !closing else { return }
            requestsOnConnection += 1
            switch head.uri {
            case "/drop-if-reused" where requestsOnConnection > 1:
                // Like an upstream whose keep-alive timeout fired as the request arrived.
                context.close(promise: nil)
            case "/reset":
                context.close(promise: nil)
            case "/slow":
                context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(3)) { self.answer(head, .ok, context: context) }
            case "/status/503":
                answer(head, .serviceUnavailable, context: context)
            case let uri where version == 8 && uri.contains("dotted"):
                // The bad release: names like "xx.xx" are rejected by its new YAML rule.
                answer(head, .internalServerError, context: context)
            default:
                answer(head, .ok, context: context)
            }
        }
    }

    private func answer(_ head: HTTPRequestHead, _ status: HTTPResponseStatus, context: ChannelHandlerContext) {
        let text = head.uri == "/echo"
            ? String(buffer: body)
            : "version \(version) path \(head.uri) tagged \(head.headers.first(name: "x-grayscale-version") ?? "-") forwarded-for \(head.headers.first(name: "x-forwarded-for") ?? "-") connection \(head.headers.first(name: "connection") ?? "-") bucket \(head.headers.first(name: "x-grayscale-bucket") ?? "-")"
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: String(text.utf8.count))
        headers.add(name: "x-upstream-version", value: String(version))
        headers.add(name: "keep-alive", value: "timeout=5")
        let close = head.uri == "/close"
        if close { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if close {
            // Like a server that said "close": it reads nothing more and hangs up a moment later.
            closing = true
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(150)) { context.close(promise: nil) }
        }
    }
}

private final class WebSocketEcho: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let version: Int
    init(version: Int) { self.version = version }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            var data = frame.unmaskedData
            let text = data.readString(length: data.readableBytes) ?? ""
            let reply = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "v\(version):\(text)"))
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }
}
