import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 server for the proxy's own endpoints (`GET /stats`): each request
/// is answered in full by `respond`, which must be cheap (it runs on the event loop).
public final class AdminHTTPServer: Sendable {
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: ByteBuffer

        public init(status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    public typealias Responder = @Sendable (HTTPRequestHead) -> Response

    private let channel: Channel

    public var localAddress: SocketAddress { channel.localAddress! }

    public init(host: String, port: Int, group: EventLoopGroup, respond: @escaping Responder) async throws {
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(respond: respond))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    public func stop() async throws { try await channel.close() }
}

private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: AdminHTTPServer.Responder
    private var head: HTTPRequestHead?

    init(respond: @escaping AdminHTTPServer.Responder) { self.respond = respond }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            let response = respond(head)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: response.contentType)
            headers.add(name: "content-length", value: String(response.body.readableBytes))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
            let keepAlive = head.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
    }
}
