import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What a fixture server was asked: the request whole, with how many requests its
/// connection carried before it.
public struct FixtureRequest: Sendable {
    public var head: HTTPRequestHead
    public var body: String
    /// 1 for a connection's first request.
    public var numberOnConnection: Int

    public var method: HTTPMethod { head.method }
    public var uri: String { head.uri }
    /// The URI without its query.
    public var path: String { String(head.uri.split(separator: "?", maxSplits: 1).first ?? "") }
    public func header(_ name: String) -> String? { head.headers.first(name: name) }
}

/// How a fixture server answers one request.
public enum FixtureAnswer: Sendable {
    /// Status, headers and body (a `content-length` is added), after `delay`; with
    /// `closeAfter` the connection reads nothing more and hangs up that long after.
    case respond(status: Int, headers: [(String, String)] = [], body: String, delay: TimeAmount = .zero, closeAfter: TimeAmount? = nil)
    /// The connection closes without an answer (a reset, an expired keep-alive).
    case hangUp

    public static func json(_ body: String, status: Int = 200, delay: TimeAmount = .zero) -> FixtureAnswer {
        .respond(status: status, headers: [("content-type", "application/json")], body: body, delay: delay)
    }
}

/// One loopback HTTP/1.1 server on port 0 for the stand-ins the tests need (an echo, a
/// release's upstream, Slack, Tencent Cloud, an exporter, a proxy's `/stats`): NIO's
/// codec, whole requests handed to `respond`, its answers written back in order.
/// Optionally upgrades WebSocket requests to `webSocket`'s handler.
public final class FixtureHTTPServer: Sendable {
    public typealias Responder = @Sendable (FixtureRequest) -> FixtureAnswer

    private let ownGroup: MultiThreadedEventLoopGroup?
    public let channel: Channel
    /// Connections accepted so far.
    public let connections: NIOLockedValueBox<Int>

    public var port: Int { channel.localAddress!.port! }
    public var url: String { "http://127.0.0.1:\(port)" }

    /// On its own event loop (stopped by `stop()`).
    public convenience init(respond: @escaping Responder) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connections = NIOLockedValueBox(0)
        let bootstrap = Self.bootstrap(group: group, webSocket: nil, connections: connections, respond: respond)
        self.init(channel: try bootstrap.bind(host: "127.0.0.1", port: 0).wait(), ownGroup: group, connections: connections)
    }

    /// On `group`, with WebSocket upgrades handed to `webSocket` when given.
    public convenience init(group: EventLoopGroup, webSocket: (@Sendable () -> any ChannelHandler & Sendable)? = nil,
                            respond: @escaping Responder) async throws {
        let connections = NIOLockedValueBox(0)
        let bootstrap = Self.bootstrap(group: group, webSocket: webSocket, connections: connections, respond: respond)
        self.init(channel: try await bootstrap.bind(host: "127.0.0.1", port: 0).get(), ownGroup: nil, connections: connections)
    }

    private init(channel: Channel, ownGroup: MultiThreadedEventLoopGroup?, connections: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.ownGroup = ownGroup
        self.connections = connections
    }

    private static func bootstrap(group: EventLoopGroup, webSocket: (@Sendable () -> any ChannelHandler & Sendable)?,
                                  connections: NIOLockedValueBox<Int>, respond: @escaping Responder) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    if let webSocket {
                        let upgrader = NIOWebSocketServerUpgrader(
                            shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
                            upgradePipelineHandler: { channel, _ in
                                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(webSocket()) }
                            })
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                            withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                                context.pipeline.syncOperations.removeHandler(name: "fixture", promise: nil)
                            }))
                    } else {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    }
                    try channel.pipeline.syncOperations.addHandler(FixtureHandler(respond: respond), name: "fixture")
                }
            }
    }

    public func stop() {
        try? channel.close().wait()
        try? ownGroup?.syncShutdownGracefully()
    }

    public func stop() async throws {
        try await channel.close()
        try await ownGroup?.shutdownGracefully()
    }
}

private final class FixtureHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let respond: FixtureHTTPServer.Responder
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var closing = false
    private var requests = 0

    init(respond: @escaping FixtureHTTPServer.Responder) { self.respond = respond }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head, !closing else { return }
            requests += 1
            switch respond(FixtureRequest(head: head, body: String(buffer: body), numberOnConnection: requests)) {
            case .hangUp:
                closing = true
                context.close(promise: nil)
            case .respond(let status, let headers, let body, let delay, let closeAfter):
                if closeAfter != nil { closing = true }
                let write = { [self] in
                    var fields = HTTPHeaders(headers)
                    fields.replaceOrAdd(name: "content-length", value: String(body.utf8.count))
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status),
                                                                         headers: fields))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                    if let closeAfter {
                        context.eventLoop.assumeIsolated().scheduleTask(in: closeAfter) { context.close(promise: nil) }
                    }
                }
                if delay == .zero { write() } else { context.eventLoop.assumeIsolated().scheduleTask(in: delay) { write() } }
            }
        }
    }
}
