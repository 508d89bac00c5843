import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A loopback HTTP server on port 0 that answers with what it received:
/// `METHOD URI\nx-test: VALUE\n\nBODY`. `/slow` waits two seconds first.
final class EchoServer {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    /// Connections accepted so far.
    let connections = NIOLockedValueBox(0)

    var port: Int { channel.localAddress!.port! }

    init() throws {
        let connections = self.connections
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .wait()
    }

    func stop() throws {
        try channel.close().wait()
        try group.syncShutdownGracefully()
    }
}

private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            let text = "\(head.method) \(head.uri)\nx-test: \(head.headers.first(name: "x-test") ?? "")\n\n\(String(buffer: body))"
            let respond = { [context] in
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "text/plain")
                headers.add(name: "Content-Length", value: String(text.utf8.count))
                headers.add(name: "X-Echo", value: "yes")
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .created, headers: headers))), promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            }
            if head.uri == "/slow" {
                context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) { respond() }
            } else {
                respond()
            }
        }
    }
}
