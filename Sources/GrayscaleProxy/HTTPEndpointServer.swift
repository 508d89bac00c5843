import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 server whose requests, with their whole (bounded) body, are
/// answered by async code: the handler does the protocol work, `respond` the rest.
public final class HTTPEndpointServer: Sendable {
    public struct Request: Sendable {
        public var head: HTTPRequestHead
        public var body: [UInt8]
    }

    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: String

        public init(status: HTTPResponseStatus, contentType: String = "text/plain; charset=utf-8", body: String = "") {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    public typealias Responder = @Sendable (Request) async -> Response

    private let channel: Channel
    public var localAddress: SocketAddress { channel.localAddress! }

    public init(host: String, port: Int, group: EventLoopGroup, maxBodyBytes: Int = 1 << 20, respond: @escaping Responder) async throws {
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(EndpointHandler(respond: respond, maxBodyBytes: maxBodyBytes))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    public func stop() async throws { try await channel.close() }
}

private final class EndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: HTTPEndpointServer.Responder
    private let maxBodyBytes: Int
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(respond: @escaping HTTPEndpointServer.Responder, maxBodyBytes: Int) {
        self.respond = respond
        self.maxBodyBytes = maxBodyBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            tooLarge = false
        case .body(let buffer):
            if body.count + buffer.readableBytes > maxBodyBytes { tooLarge = true } else { body += buffer.readableBytesView }
        case .end:
            guard let head else { return }
            if tooLarge {
                write(HTTPEndpointServer.Response(status: .payloadTooLarge, body: "body too large\n"), head: head, context: context)
                return
            }
            let request = HTTPEndpointServer.Request(head: head, body: body)
            let respond = self.respond
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let promise = context.eventLoop.makePromise(of: HTTPEndpointServer.Response.self)
            promise.completeWithTask { await respond(request) }
            promise.futureResult.assumeIsolated().whenSuccess { response in
                let (handler, context) = loopBound.value
                handler.write(response, head: head, context: context)
            }
        }
    }

    private func write(_ response: HTTPEndpointServer.Response, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
