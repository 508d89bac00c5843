import NIOCore
import NIOWebSocket

/// A tiny upstream that answers as one release would: `version N` in the body and
/// `x-upstream-version: N`. `/status/503` answers 503, release 8 answers 500 to paths naming "dotted", `/slow` waits 3 s, `/reset`
/// closes without answering, `/drop-if-reused` closes when it is not its connection's first request,
/// `/close` answers `Connection: close` and hangs up 150 ms later, `/echo` returns the request body,
/// and a WebSocket upgrade echoes text frames as `vN:<text>`.
public final class VersionUpstream: Sendable {
    public let version: Int
    let server: FixtureHTTPServer

    public var port: Int { server.port }
    public var url: String { server.url }

    public init(version: Int, group: EventLoopGroup) async throws {
        self.version = version
        server = try await FixtureHTTPServer(group: group, webSocket: { WebSocketEcho(version: version) }) { request in
            switch request.uri {
            case "/drop-if-reused" where request.numberOnConnection > 1:
                // Like an upstream whose keep-alive timeout fired as the request arrived.
                return .hangUp
            case "/reset":
                return .hangUp
            default:
                let status = request.uri == "/status/503" ? 503 : version == 8 && request.uri.contains("dotted") ? 500 : 200
                let text = request.uri == "/echo"
                    ? request.body
                    : "version \(version) path \(request.uri) tagged \(request.header("x-grayscale-version") ?? "-") forwarded-for \(request.header("x-forwarded-for") ?? "-") connection \(request.header("connection") ?? "-") bucket \(request.header("x-grayscale-bucket") ?? "-")"
                var headers = [("x-upstream-version", String(version)), ("keep-alive", "timeout=5")]
                // Like a server that said "close": it reads nothing more and hangs up a moment later.
                let close = request.uri == "/close"
                if close { headers.append(("connection", "close")) }
                return .respond(status: status, headers: headers, body: text, delay: request.uri == "/slow" ? .seconds(3) : .zero,
                                closeAfter: close ? .milliseconds(150) : nil)
            }
        }
    }

    public func stop() async throws { try await server.stop() }
}

private final class WebSocketEcho: ChannelInboundHandler, Sendable {
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
