import NIOCore
import NIOHTTP1
import NIOPosix

/// Whether a request whose kept-alive connection was lost before any of its answer came
/// (the upstream's keep-alive ran out as it was reused) is sent again, once, on a new one:
/// an idempotent method without a body. A user's request and a mirrored copy alike.
func resendsOnLostConnection(_ method: HTTPMethod, bodyBytes: Int) -> Bool {
    bodyBytes == 0 && [HTTPMethod.GET, .HEAD, .OPTIONS].contains(method)
}

/// Keep-alive connections to upstreams, one pool per event loop so a client
/// connection and its upstream connection always share a thread.
final class UpstreamPool {
    let eventLoop: EventLoop
    let connectTimeout: TimeAmount
    let maxIdle: Int
    private var idle: [Upstream: [UpstreamConnection]] = [:]
    /// Mirrored requests in flight on this loop, by canary (kept here: an upstream handler holds its exchange weakly).
    var mirrors: [Upstream: [ObjectIdentifier: MirrorExchange]] = [:]
    /// At most this many mirrored requests in flight per canary and loop: past it a request
    /// is not mirrored, so a canary that hangs cannot take the proxy's connections or
    /// memory, nor stop another service's mirror phase.
    static let maxMirrors = 256

    init(eventLoop: EventLoop, connectTimeout: TimeAmount, maxIdle: Int) {
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.maxIdle = maxIdle
    }

    /// An idle connection to `upstream` that is still open, taken from the pool.
    func idleConnection(to upstream: Upstream) -> UpstreamConnection? {
        eventLoop.assertInEventLoop()
        // Popped in place: copying the list out of the dictionary would allocate on every request.
        while var connection = idle[upstream]?.popLast() {
            connection.reused = true
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    /// Hands `completion` an idle connection to `upstream` (unless `fresh`), or a new one, on this loop.
    func connection(to upstream: Upstream, fresh: Bool = false, _ completion: @escaping (Result<UpstreamConnection, Error>) -> Void) {
        eventLoop.preconditionInEventLoop()
        if !fresh, let connection = idleConnection(to: upstream) { return completion(.success(connection)) }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536))
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
    let channel: Channel
    let handler: UpstreamHandler
    let upstream: Upstream
    /// Taken from the pool rather than just connected: the upstream may have closed it meanwhile.
    var reused = false
}

/// One piece of an upstream's answer: its head as read, a slice of its body, its end (with
/// the trailers of a chunked body).
enum UpstreamPart {
    case head(HTTP1.ResponseHead)
    case body(ByteBuffer)
    case end(HTTPHeaders?)
}

extension ByteBuffer {
    /// Adds what a read delivered to the bytes not handled yet: taken as it is when nothing
    /// waits (the common case, no copy), appended otherwise.
    mutating func appendRead(_ bytes: ByteBuffer) {
        guard readableBytes > 0 else { return self = bytes }
        if readerIndex > 4096 { discardReadBytes() }
        var bytes = bytes
        writeBuffer(&bytes)
    }
}

/// What an exchange using an upstream connection is told.
protocol UpstreamExchange: AnyObject {
    func upstreamRead(_ part: UpstreamPart)
    func upstreamClosed()
    func upstreamFailed(_ error: Error)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
}

/// The only handler of an upstream channel: reads each response as the proxy's own
/// HTTP/1.1 reader (`HTTP1`) and hands its head, body slices and end to the exchange
/// currently using the connection. Bytes nobody asked for end the connection.
final class UpstreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    /// A larger response head is a malformed answer.
    static let maxHeadBytes = 64 * 1024

    weak var exchange: UpstreamExchange?
    private let pool: UpstreamPool
    private let upstream: Upstream
    private var inbound = ByteBuffer()
    private var reader = Reader.idle
    /// False once the upstream sent bytes behind an answer that no request asked for: the
    /// connection is closed after this exchange, never handed to the next request.
    private(set) var reusable = true

    enum Reader {
        /// No request in flight: any byte is one nobody asked for.
        case idle
        case head(method: HTTPMethod, searched: Int)
        case body(remaining: Int)
        case chunked(HTTP1.ChunkedDecoder)
        /// No length and no chunks: the body ends when the connection does.
        case untilClose
        /// After a 101: what follows is the tunnel's, not HTTP.
        case switched
    }

    init(pool: UpstreamPool, upstream: Upstream) {
        self.pool = pool
        self.upstream = upstream
    }

    /// A request is on its way: its answer is read next (a HEAD's answer has no body).
    func expectResponse(to method: HTTPMethod) {
        reader = .head(method: method, searched: 0)
    }

    /// What arrived after a 101's head: the first bytes of the tunnel.
    func takeUnread() -> ByteBuffer {
        defer { inbound = ByteBuffer() }
        return inbound
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.appendRead(unwrapInboundIn(data))
        do {
            try read(context: context)
            if inbound.readableBytes == 0 { inbound = ByteBuffer() }  // NIO reuses its receive buffer only when nobody holds it
        } catch {
            let exchange = self.exchange
            self.exchange = nil
            reader = .idle
            exchange?.upstreamFailed(error)
            context.close(promise: nil)
        }
    }

    private func read(context: ChannelHandlerContext) throws {
        while inbound.readableBytes > 0 {
            switch reader {
            case .idle:
                // An answer to no request (a second response, bytes on an idle connection): never trusted again.
                pool.remove(context.channel, upstream: upstream)
                inbound = ByteBuffer()
                context.close(promise: nil)
                return
            case .switched:
                return
            case .head(let method, let searched):
                guard let end = HTTP1.headEnd(inbound, from: searched) else {
                    guard inbound.readableBytes <= Self.maxHeadBytes else { throw HTTP1.ParseError(reason: "a response head over 64 KiB") }
                    reader = .head(method: method, searched: max(0, inbound.readableBytes - 3))
                    return
                }
                guard end <= Self.maxHeadBytes else { throw HTTP1.ParseError(reason: "a response head over 64 KiB") }
                let head = try HTTP1.responseHead(inbound.getSlice(at: inbound.readerIndex, length: end)!)
                inbound.moveReaderIndex(forwardBy: end)
                let code = head.code
                if code >= 100 && code < 200 && code != 101 {
                    reader = .head(method: method, searched: 0)  // informational: the answer follows
                    continue
                }
                if code == 101 {
                    reader = .switched
                    exchange?.upstreamRead(.head(head))
                    exchange?.upstreamRead(.end(nil))
                    return
                }
                let framing = try Self.framing(of: head, method: method)
                exchange?.upstreamRead(.head(head))
                switch framing {
                case .none:
                    reader = .idle
                    ended()
                case .length(let length):
                    reader = .body(remaining: length)
                case .chunked:
                    reader = .chunked(HTTP1.ChunkedDecoder(maxTrailerBytes: Self.maxHeadBytes, keepingTrailers: true))
                case .untilClose:
                    reader = .untilClose
                }
            case .body(let remaining):
                let take = min(remaining, inbound.readableBytes)
                let body = inbound.readSlice(length: take)!
                reader = take == remaining ? .idle : .body(remaining: remaining - take)
                exchange?.upstreamRead(.body(body))
                if take == remaining { ended() }
            case .chunked(var decoder):
                reader = .idle  // the decoder is the only copy while it runs: its trailer bytes are not copied on write
                let done = try decoder.decode(&inbound) { exchange?.upstreamRead(.body($0)) }
                reader = done ? .idle : .chunked(decoder)
                // The body is complete: trailers the header grammar refuses are dropped, not taken for a broken answer.
                if done { ended(trailers: (try? decoder.trailers()) ?? nil) }
            case .untilClose:
                exchange?.upstreamRead(.body(inbound))
                inbound = ByteBuffer()
            }
        }
    }

    /// The answer is complete. Bytes already behind it answer no request: the exchange
    /// learns the connection cannot be reused before it decides (it may hand the connection
    /// to the client's next request at once).
    private func ended(trailers: HTTPHeaders? = nil) {
        if inbound.readableBytes > 0 { reusable = false }
        exchange?.upstreamRead(.end(trailers))
    }

    enum ResponseFraming: Equatable {
        case none
        case length(Int)
        case chunked
        case untilClose
    }

    /// How a response's body is delimited (RFC 9112 §6.3). A length and chunks together,
    /// lengths that disagree, or a coding the proxy cannot read are malformed answers.
    static func framing(of head: HTTP1.ResponseHead, method: HTTPMethod) throws(HTTP1.ParseError) -> ResponseFraming {
        let code = head.code
        if method == .HEAD || code == 204 || code == 304 { return .none }
        // One pass over the fields' bytes, no strings, no arrays: this runs for every answer.
        var encodings = 0, chunked = false, lengths = 0
        var length: Int?
        var lengthsAgree = true
        head.withBytes { raw in
            for field in head.fields {
                if HTTP1.ResponseHead.isName(raw, field, "transfer-encoding") {
                    encodings += 1
                    chunked = isASCIICaseInsensitiveEqual(HTTP1.bytes(raw, field.value), "chunked")  // values are trimmed when read
                } else if HTTP1.ResponseHead.isName(raw, field, "content-length") {
                    lengths += 1
                    // A list of equal lengths ("10, 10") is one length; anything else is none.
                    HTTP1.forEachListItem(HTTP1.bytes(raw, field.value)) { item in
                        guard let parsed = HTTP1.decimal(item), length == nil || length == parsed else {
                            lengthsAgree = false
                            return
                        }
                        length = parsed
                    }
                }
            }
        }
        if encodings > 0 {
            guard lengths == 0 else { throw HTTP1.ParseError(reason: "Content-Length and Transfer-Encoding together") }
            guard encodings == 1, chunked else { throw HTTP1.ParseError(reason: "a transfer coding other than chunked") }
            return .chunked
        }
        if lengths > 0 {
            guard lengthsAgree, let length else { throw HTTP1.ParseError(reason: "an invalid Content-Length") }
            return length == 0 ? .none : .length(length)
        }
        return .untilClose
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pool.remove(context.channel, upstream: upstream)
        if case .untilClose = reader {
            reader = .idle
            exchange?.upstreamRead(.end(nil))  // the end of the connection was the end of the body
        }
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
