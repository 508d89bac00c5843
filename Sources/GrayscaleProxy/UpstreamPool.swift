import NIOCore
import NIOHTTP1
import NIOPosix

/// Keep-alive connections to upstreams, one pool per event loop so a client
/// connection and its upstream connection always share a thread.
final class UpstreamPool {
    let eventLoop: EventLoop
    let connectTimeout: TimeAmount
    let maxIdle: Int
    private var idle: [Upstream: [UpstreamConnection]] = [:]

    init(eventLoop: EventLoop, connectTimeout: TimeAmount, maxIdle: Int) {
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.maxIdle = maxIdle
    }

    /// An idle connection to `upstream` that is still open, taken from the pool.
    func idleConnection(to upstream: Upstream) -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        // Popped in place: copying the list out of the dictionary would allocate on every request.
        while var connection = idle[upstream]?.popLast() {
            connection.reused = true
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    /// Hands `completion` an idle connection to `upstream` (unless `fresh`), or a new one, on this loop.
    func connection(to upstream: Upstream, fresh: Bool = false, _ completion: @escaping (Result<UpstreamConnection, Error>) -> Void) {
        eventLoop.assertInEventLoop()
        if !fresh, let connection = idleConnection(to: upstream) { return completion(.success(connection)) }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPRequestEncoder(), name: UpstreamConnection.encoderName)
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)),
                        name: UpstreamConnection.decoderName)
                }
            }
            .connect(host: upstream.host, port: upstream.port)
            .assumeIsolated()
            .whenComplete { result in
                completion(result.flatMap { channel in
                    let handler = UpstreamHandler(pool: self, upstream: upstream)
                    do {
                        try channel.pipeline.syncOperations.addHandler(handler)
                    } catch {
                        channel.close(promise: nil)
                        return .failure(error)
                    }
                    return .success(UpstreamConnection(channel: channel, handler: handler, upstream: upstream))
                })
            }
    }

    /// Returns a connection whose exchange finished cleanly; closes it when the pool is full.
    func release(_ connection: UpstreamConnection) {
        eventLoop.preconditionInEventLoop()
        connection.handler.exchange = nil
        guard connection.channel.isActive, idle[connection.upstream, default: []].count < maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        idle[connection.upstream, default: []].append(connection)
    }

    /// Forgets a connection the upstream closed while it was idle.
    func remove(_ channel: Channel, upstream: Upstream) {
        idle[upstream]?.removeAll { $0.channel === channel }
    }

    func closeAll() {
        for connection in idle.values.joined() { connection.channel.close(promise: nil) }
        idle.removeAll()
    }
}

/// An upstream channel and the handler that hands its response to the exchange using it.
struct UpstreamConnection {
    static let encoderName = "grayscale.upstream.encoder"
    static let decoderName = "grayscale.upstream.decoder"

    let channel: Channel
    let handler: UpstreamHandler
    let upstream: Upstream
    /// Taken from the pool rather than just connected: the upstream may have closed it meanwhile.
    var reused = false
}

/// What an exchange using an upstream connection is told.
protocol UpstreamExchange: AnyObject {
    func upstreamRead(_ part: HTTPClientResponsePart)
    func upstreamClosed()
    func upstreamFailed(_ error: Error)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
}

/// The last handler of an upstream channel: forwards response parts to the client
/// exchange currently using the connection.
final class UpstreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    weak var exchange: UpstreamExchange?
    private let pool: UpstreamPool
    private let upstream: Upstream

    init(pool: UpstreamPool, upstream: Upstream) {
        self.pool = pool
        self.upstream = upstream
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        exchange?.upstreamRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pool.remove(context.channel, upstream: upstream)
        exchange?.upstreamClosed()
        exchange = nil
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let exchange = self.exchange
        self.exchange = nil
        exchange?.upstreamFailed(error)
        context.close(promise: nil)
    }
}
