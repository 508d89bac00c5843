import Foundation
import GrayscaleCore
import NIOCore
import NIOHTTP1

/// One client connection: routes each request, forwards it to the chosen release's
/// upstream, streams the response back, and records the outcome by version.
/// Protocol work only; the routing rule itself is `TrafficSplit.route` in Core.
///
/// The connection's bytes are read here, with no HTTP codec in the pipeline: a request
/// head is parsed whole (`HTTP1`), written again for the upstream with the proxy's own
/// headers and framing, and its body passed on as slices of the bytes read (chunks
/// decoded and encoded again). Requests that arrive while one is in flight (pipelining)
/// stay unread in `inbound` until its answer has gone.
final class ProxyHandler: ChannelInboundHandler, RemovableChannelHandler, UpstreamExchange {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let name = "grayscale.proxy"

    private let shared: ProxyShared
    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var clientAddress = ""
    /// Bytes read from the client and not handled yet: the rest of a request, or the next ones.
    private var inbound = ByteBuffer()
    /// How far the current head has been searched for its end (a slow client's head is not searched again from its start).
    private var headSearched = 0
    private var reader = Reader.head
    /// True while `process` runs: what it writes to the upstream is flushed once, at its end.
    private var processing = false
    /// Client reads are paused (a new upstream connection is being made, too much is waiting,
    /// the upstream cannot take more, or HTTP has ended). `updateReading` alone sets client autoRead.
    private var readsPaused = false
    /// The upstream connection of the exchange in flight cannot take more bytes now.
    private var upstreamUnwritable = false
    /// The upstream connection's reads were paused because the client could not take more.
    private var upstreamReadsPaused = false
    /// Since when the client has taken none of the answer it was sent (its reads paused the
    /// upstream's): past the idle timeout, the connection closes (nginx's `send_timeout`).
    private var stalledSince: NIODeadline?
    /// When the last exchange ended (or the connection opened): the idle timeout counts from here.
    private var idleSince = NIODeadline.now()
    /// The loop's timer for every connection's deadlines, and this connection's place in it.
    private let sweep: ConnectionSweep
    var sweepSlot = -1
    /// The last token's user and bucket: a keep-alive client's next request is routed without reading its token again.
    private var routing = ConnectionRouting()

    enum State {
        case idle
        /// Connecting to the upstream; request parts that arrive meanwhile wait here.
        case connecting(Exchange, buffered: [HTTPServerRequestPart])
        case forwarding(Exchange, UpstreamConnection)
        /// Answered by the proxy itself (413, 502, 504…); the rest of the request is dropped.
        case answered
        case tunnel
    }

    /// What the next client bytes are.
    enum Reader {
        case head
        case body(remaining: Int)
        case chunked(HTTP1.ChunkedDecoder)
        /// After an upgrade request: not HTTP the proxy reads.
        case stopped
    }

    /// One request on its way through the proxy.
    final class Exchange {
        let head: RequestHead
        let service: String
        /// The value of the routing header, when the proxy writes one.
        var routingBucket: Int?
        let target: ServiceRoute.Target
        let route: Route
        let appId: String?
        /// The randomized unit this request belongs to; nil for lists and opt-in.
        let unit: UnitEvent?
        let started: NIODeadline
        var keepAlive: Bool
        let isUpgrade: Bool
        /// How the body goes to the upstream: decided by the proxy, never the client's headers.
        var framing = RequestFraming.none
        /// The headers the client's `Connection` header names: they stop at the proxy.
        var connectionNamed: [Substring] = []
        /// The same for the upstream's answer: they stop at the proxy, in its head and its trailers.
        var answerConnectionNamed: [Substring] = []
        /// The client reads no more after this request (an upgrade): unless a WebSocket
        /// tunnel starts, the connection closes after the response.
        var endsHTTP = false
        /// Why the token named no user although it was there (invalid UTF-8, not a string or integer).
        var identityProblem: String?
        /// Set when an anonymous client got a fresh sticky draw to remember.
        let stickyCookie: String?
        var bytesIn = 0
        var bytesOut = 0
        var status: HTTPResponseStatus?
        var requestEnded = false
        /// The upstream's answer allows reusing its connection (not `Connection: close`, not HTTP/1.0 without keep-alive).
        var upstreamKeepAlive = true
        /// The answer goes to the client in chunks (its length is unknown and the client speaks HTTP/1.1).
        var clientChunked = false
        /// Sent again once on a new connection after a reused one was closed under it.
        var retried = false
        var finished = false
        /// No response head by then answers 504 (checked by the connection's timer, not a timer per request).
        var deadline = NIODeadline.distantFuture
        /// Set when this (stable, safe) request is sampled for a copy to the canary: the copy
        /// goes once this side is settled (`MirrorPair`).
        var mirror: MirrorPair?
        /// When its head was written to the upstream (the mirror's time to the answer's head counts from here),
        /// and whether on a connection kept from an earlier request.
        var sentAt: NIODeadline?
        var sentReused = false

        init(head: RequestHead, service: String, target: ServiceRoute.Target, route: Route, appId: String?, unit: UnitEvent?,
             started: NIODeadline, keepAlive: Bool, isUpgrade: Bool, stickyCookie: String?) {
            self.head = head
            self.service = service
            self.target = target
            self.route = route
            self.appId = appId
            self.unit = unit
            self.started = started
            self.keepAlive = keepAlive
            self.isUpgrade = isUpgrade
            self.stickyCookie = stickyCookie
        }
    }

    static let crlf = ByteBuffer(string: "\r\n")
    static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    init(shared: ProxyShared, pool: UpstreamPool, sweep: ConnectionSweep) {
        self.shared = shared
        self.pool = pool
        self.sweep = sweep
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress ?? ""
        sweep.add(self)
    }

    /// The connection's deadlines, checked by its loop's sweep: an idle connection past the
    /// idle timeout closes; an exchange with no response head by its deadline answers 504.
    func sweep(now: NIODeadline) {
        guard let context else { return }
        switch state {
        case .idle where now - idleSince >= shared.configuration.idleTimeout:
            context.close(promise: nil)
        case .forwarding where stalledSince.map { now - $0 >= shared.configuration.idleTimeout } ?? false:
            // A client that stopped reading its answer: the upstream connection and what waits for it are freed.
            context.close(promise: nil)
        case .connecting(let exchange, _) where exchange.status == nil && now >= exchange.deadline,
             .forwarding(let exchange, _) where exchange.status == nil && now >= exchange.deadline:
            timedOut(exchange, context: context)
        default:
            break
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweep.remove(self)
        self.context = nil
    }

    // MARK: - Client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.appendRead(unwrapInboundIn(data))
        process(context: context)
    }

    /// Handles what `inbound` holds, as far as the connection's state allows: a request
    /// waiting for its answer keeps the next one unread.
    private func process(context: ChannelHandlerContext) {
        guard !processing else { return }
        processing = true
        read: while inbound.readableBytes > 0 {
            switch state {
            case .answered, .tunnel:
                break read
            case .connecting(let exchange, _), .forwarding(let exchange, _):
                if exchange.requestEnded { break read }  // the next request waits its turn
            case .idle:
                break
            }
            switch reader {
            case .stopped:
                break read
            case .head:
                // Between requests, a client that does not read its answers gets no more of them: the next
                // request waits until the client's channel is writable again (and past a head's worth,
                // `updateReading` stops reading the socket). Otherwise pipelined requests would pile their
                // answers up in memory without bound. A body is read on regardless (a client may send one
                // whole before reading the answer that came early).
                guard context.channel.isWritable else { break read }
                // Empty lines before a request line are skipped (RFC 9112 §2.2): some clients send a CRLF after a body.
                while headSearched == 0, inbound.readableBytes >= 2, inbound.getInteger(at: inbound.readerIndex, as: UInt16.self) == 0x0D0A {
                    inbound.moveReaderIndex(forwardBy: 2)
                }
                guard inbound.readableBytes > 0 else { break read }
                guard let end = HTTP1.headEnd(inbound, from: headSearched) else {
                    headSearched = max(0, inbound.readableBytes - 3)
                    if inbound.readableBytes > shared.configuration.maxHeaderBytes { malformed(.requestHeaderFieldsTooLarge, context: context) }
                    break read
                }
                headSearched = 0
                guard end <= shared.configuration.maxHeaderBytes else {
                    malformed(.requestHeaderFieldsTooLarge, context: context)
                    break read
                }
                let head: RequestHead
                do {
                    // A copy of the head alone: a slice would keep the whole read buffer (up to 64 KiB) for as long as
                    // the exchange lasts (a long poll), and keep NIO from reusing it.
                    var bytes = context.channel.allocator.buffer(capacity: end)
                    bytes.writeImmutableBuffer(inbound.getSlice(at: inbound.readerIndex, length: end)!)
                    head = try HTTP1.requestHead(bytes)
                } catch {
                    malformed(.badRequest, context: context)
                    break read
                }
                inbound.moveReaderIndex(forwardBy: end)
                begin(head, context: context)
            case .body(let remaining):
                let take = min(remaining, inbound.readableBytes)
                let body = inbound.readSlice(length: take)!
                reader = take == remaining ? afterBody : .body(remaining: remaining - take)
                requestBody(body, context: context)
                if take == remaining { requestEnd(context: context) }
            case .chunked(var decoder):
                do {
                    let done = try decoder.decode(&inbound) { requestBody($0, context: context) }
                    reader = done ? afterBody : .chunked(decoder)
                    if done { requestEnd(context: context) }
                } catch {
                    malformedBody(context: context)
                    break read
                }
            }
        }
        processing = false
        // Holding on to the bytes read would keep NIO from reusing its receive buffer (a copy
        // on the next read) and keep that buffer alive on every idle connection.
        if inbound.readableBytes == 0 { inbound = ByteBuffer() }
        if case .forwarding(_, let upstream) = state { upstream.channel.flush() }
        updateReading(context: context)
    }

    /// What the client sends after a body: the next request, unless this one ended HTTP (an upgrade).
    private var afterBody: Reader { endsHTTPAfterBody ? .stopped : .head }
    private var endsHTTPAfterBody = false

    /// Client reads pause while a new upstream connection is made, while more than a head's
    /// worth waits unread, and for good once HTTP has ended; otherwise they run.
    private func updateReading(context: ChannelHandlerContext) {
        var pause = inbound.readableBytes > shared.configuration.maxHeaderBytes || upstreamUnwritable
        if case .connecting = state { pause = true }
        if case .stopped = reader { pause = true }
        if case .tunnel = state { return }
        guard pause != readsPaused, context.channel.isActive else { return }
        readsPaused = pause
        context.channel.setOption(ChannelOptions.autoRead, value: !pause).whenComplete { _ in }
    }

    /// A request head that cannot be parsed: nothing was routed, the connection closes.
    private func malformed(_ status: HTTPResponseStatus, context: ChannelHandlerContext) {
        state = .answered
        shared.metrics?.refused(reason: status == .badRequest ? "malformed" : "header-too-large")
        respondAndClose(status, body: "\(status.code) \(status.reasonPhrase)\n", context: context, exchange: nil)
    }

    /// A request body that cannot be parsed (a bad chunk size, a bare LF…): the client hears
    /// why if it has no answer yet, the upstream connection goes.
    private func malformedBody(context: ChannelHandlerContext) {
        switch state {
        case .connecting(let exchange, _) where exchange.status == nil, .forwarding(let exchange, _) where exchange.status == nil:
            if case .forwarding(_, let upstream) = state {
                drop(upstream)
            }
            state = .answered
            shared.metrics?.refused(reason: "malformed")
            respondAndClose(.badRequest, body: "400 malformed request body\n", context: context, exchange: exchange)
        case .connecting(let exchange, _), .forwarding(let exchange, _):
            // The answer had begun: it cannot be told otherwise, the connection goes.
            if case .forwarding(_, let upstream) = state {
                drop(upstream)
            }
            state = .answered
            finish(exchange, status: exchange.status ?? .badRequest, errorClass: nil, error: "malformed request body after the answer began")
            context.close(promise: nil)
        case .idle, .answered, .tunnel:
            state = .answered
            context.close(promise: nil)
        }
    }

    /// The copy of the request whose body is being read, when it carries that body.
    private var bodyMirror: MirrorPair?

    private func requestBody(_ body: ByteBuffer, context: ChannelHandlerContext) {
        if let pair = bodyMirror {
            pair.appendBody(body)
            if !pair.wantsBody { bodyMirror = nil }
        }
        switch state {
        case .connecting(let exchange, var buffered):
            exchange.bytesIn += body.readableBytes
            guard !tooLarge(exchange, context: context) else { return }
            buffered.append(.body(body))
            state = .connecting(exchange, buffered: buffered)
        case .forwarding(let exchange, let upstream):
            exchange.bytesIn += body.readableBytes
            guard !tooLarge(exchange, context: context) else { return }
            writeUpstreamBody(body, exchange: exchange, upstream: upstream)
        case .idle, .answered, .tunnel:
            break  // the body of a request already answered
        }
    }

    private func requestEnd(context: ChannelHandlerContext) {
        if let pair = bodyMirror {
            // The body ended short of its length (it cannot, by its framing; but never a copy with another body).
            if pair.wantsBody { pair.drop() }
            bodyMirror = nil
        }
        switch state {
        case .connecting(let exchange, var buffered):
            exchange.requestEnded = true
            buffered.append(.end(nil))
            state = .connecting(exchange, buffered: buffered)
        case .forwarding(let exchange, let upstream):
            exchange.requestEnded = true
            // The client's trailers stay here: they could carry framing or the proxy's own headers.
            if case .chunked = exchange.framing { upstream.channel.write(Self.lastChunk, promise: nil) }
        case .idle, .answered, .tunnel:
            break
        }
    }

    private func writeUpstreamBody(_ body: ByteBuffer, exchange: Exchange, upstream: UpstreamConnection) {
        guard body.readableBytes > 0 else { return }
        if case .chunked = exchange.framing {
            upstream.channel.write(HTTP1.chunkSize(body.readableBytes, allocator: upstream.channel.allocator), promise: nil)
            upstream.channel.write(body, promise: nil)
            upstream.channel.write(Self.crlf, promise: nil)
        } else {
            upstream.channel.write(body, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        bodyMirror?.drop()  // the client's body never came whole
        bodyMirror = nil
        switch state {
        case .forwarding(let exchange, let upstream):
            drop(upstream)  // mid-exchange: never reuse
            abandoned(exchange)
        case .connecting(let exchange, _):
            abandoned(exchange)
        case .idle, .answered, .tunnel:
            break
        }
        state = .answered
        shared.connectionClosed()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        if case .forwarding(_, let upstream) = state {
            pauseUpstreamReads(!writable, upstream: upstream)
        }
        guard writable else { return }
        // The client read what waited for it: that is activity, and the requests that waited for it go on.
        if case .idle = state { idleSince = .now() }
        process(context: context)
    }

    /// An upstream connection the exchange gives up mid-way: it answers no one, and is never reused.
    private func drop(_ upstream: UpstreamConnection) {
        upstream.handler.exchange = nil
        upstream.channel.close(promise: nil)
    }

    /// The client cannot take more of the answer: the upstream is read no further until it can.
    private func pauseUpstreamReads(_ pause: Bool, upstream: UpstreamConnection) {
        guard pause != upstreamReadsPaused else { return }
        upstreamReadsPaused = pause
        stalledSince = pause ? .now() : nil
        upstream.channel.setOption(ChannelOptions.autoRead, value: !pause).whenComplete { _ in }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Reads and writes that failed (a reset): the connection is gone.
        context.close(promise: nil)
    }

    /// Refuses a request before routing it: the client sees the status, the access log and
    /// `/metrics` say why, and the connection closes (what follows cannot be trusted).
    private func refuse(_ refusal: RequestFraming.Refusal, head: RequestHead, context: ChannelHandlerContext) {
        state = .answered
        reader = .stopped
        shared.metrics?.refused(reason: refusal.reason)
        shared.accessLog?.append(AccessLogLine(
            time: shared.configuration.now(), service: "", release: 0, label: "", route: "refused", appId: nil, bucket: nil,
            method: head.method.rawValue, path: head.uri, status: Int(refusal.status.code), latencyMs: 0, upstream: "",
            bytesIn: 0, bytesOut: 0, error: refusal.detail))
        respond(refusal.status, body: "\(refusal.status.code) \(refusal.detail)\n", context: context, exchange: nil, close: true)
    }

    private func begin(_ head: RequestHead, context: ChannelHandlerContext) {
        let framing: RequestFraming
        switch RequestFraming.of(head) {
        case .success(let decided): framing = decided
        case .failure(let refusal):
            refuse(refusal, head: head, context: context)
            return
        }
        let endsHTTP = RequestFraming.endsHTTP(head)
        // What follows the head: its body, the next request, or (after an upgrade) nothing the proxy reads.
        // An upgrade request's body is read and forwarded whole before the proxy stops reading.
        endsHTTPAfterBody = endsHTTP
        switch framing {
        case .none: reader = afterBody
        case .length(let length): reader = .body(remaining: length)
        case .chunked: reader = .chunked(HTTP1.ChunkedDecoder(maxTrailerBytes: shared.configuration.maxHeaderBytes))
        }
        let connection = ConnectionTokens(head)
        let table = shared.table
        guard let service = table.service(for: head) else {
            state = .answered
            let known = table.routes.keys.sorted().joined(separator: ", ")
            respond(.notFound, body: "grayscale: no service matches this request (services: \(known.isEmpty ? "none" : known))\n",
                    context: context, exchange: nil, close: !connection.keepsAlive(head.version) || endsHTTP, method: head.method)
            return
        }
        let now = shared.configuration.now()
        let identity = routing.identify(head, source: shared.configuration.identity, now: now)
        let appId = identity.appId
        let requested = head.first("x-grayscale-channel").flatMap { RouteTarget(rawValue: $0.lowercased()) }
        var stickyCookie: String?
        var clientId: Substring?
        if appId == nil {
            // An anonymous client is a unit of its own: a random id in a sticky cookie, placed by
            // the canary's salted hash like a user, so each release draws new clients.
            if let pinned = head.cookies.lazy.compactMap({ cookieValue("grayscale_sticky", in: $0) }).first,
               Self.isClientId(pinned) {
                clientId = pinned
            } else {
                let fresh = String(UInt64.random(in: .min ... .max), radix: 16)
                clientId = Substring(fresh)
                stickyCookie = "grayscale_sticky=\(fresh); Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
            }
        }
        let split = service.split
        let draw = clientId.map { Bucket.of(appId: "a:\($0)", salt: split.canary?.salt ?? "") } ?? Bucket(0)
        let route = routing.route(split, appId: appId, requestedChannel: requested, anonymousDraw: draw)
        var unit: UnitEvent?
        switch route.reason {
        case .inRange, .outOfRange:
            unit = appId.map { UnitEvent(unit: "u:\($0)", canary: route.target == .canary, lower: split.range.lower, upper: split.range.upper) }
        case .anonymousWeight:
            unit = clientId.map { UnitEvent(unit: "a:\($0)", canary: route.target == .canary, lower: 0, upper: split.nonAuthWeight) }
        case .noCanary, .allowList, .denyList, .optIn:
            unit = nil  // not randomized: served and counted, never evidence
        }
        if let id = unit?.unit {
            unit?.fresh = shared.statistics.isFirstRequest(id, service: service.service, split: split, newUnit: stickyCookie != nil, at: now)
        }
        let exchange = Exchange(
            head: head, service: service.service, target: service.target(route.target), route: route, appId: appId, unit: unit,
            started: .now(), keepAlive: connection.keepsAlive(head.version) && !shared.isDraining && !endsHTTP, isUpgrade: endsHTTP && Self.isUpgrade(head),
            stickyCookie: stickyCookie)
        exchange.framing = framing
        exchange.connectionNamed = connection.named
        exchange.endsHTTP = endsHTTP
        exchange.identityProblem = identity.problem

        if shared.configuration.routingHeader != nil { exchange.routingBucket = service.split.routingBucket(for: route) }
        if case .length(let length) = framing, length > shared.configuration.maxBodyBytes {
            shared.exchangeStarted()
            state = .answered
            respondAndClose(.payloadTooLarge, body: "413 request body over \(shared.configuration.maxBodyBytes) bytes\n",
                            context: context, exchange: exchange)
            return
        }
        if service.mirror > 0 { startMirror(exchange, service: service, context: context) }
        state = .connecting(exchange, buffered: [])
        shared.exchangeStarted()
        exchange.deadline = exchange.started + shared.configuration.upstreamResponseTimeout
        if framing == .none { exchange.requestEnded = true }
        // A pooled connection is handed over at once; only a new one needs a callback.
        if let idle = pool.idleConnection(to: exchange.target.upstream) {
            connected(.success(idle), exchange: exchange, context: context)
            return
        }
        pool.connection(to: exchange.target.upstream, fresh: true) { result in
            self.connected(result, exchange: exchange, context: context)
        }
        updateReading(context: context)  // a new connection is being made: hold further bytes in the socket meanwhile
    }

    /// Copies a sampled safe request routed to stable (GET or HEAD, no body, not an upgrade)
    /// to the canary, on a connection of its own (`MirrorExchange`).
    private func startMirror(_ exchange: Exchange, service: ServiceRoute, context: ChannelHandlerContext) {
        let method = exchange.head.method
        guard let canary = service.canary, exchange.target.release.number == service.stable.release.number, !exchange.endsHTTP else { return }
        // GET and HEAD without a body; a route the policy marks safe, with a body of a known length up to `MirrorPair.maxBody`.
        var body = 0
        switch exchange.framing {
        case .none where method == .GET || method == .HEAD: break
        case .none, .length:
            guard service.mirrorRoutes.contains(where: { $0.matches(method: method.rawValue, target: exchange.head.uri) }) else { return }
            if case .length(let length) = exchange.framing {
                guard length <= MirrorPair.maxBody else { return }
                body = length
            }
        default: return
        }
        guard UInt64.random(in: 0..<UInt64(Bucket.count)) < UInt64(service.mirror) else { return }
        let pair = MirrorPair(service: exchange.service, canary: canary, shared: shared, pool: pool, method: method,
                              path: exchange.head.uri, appId: exchange.appId,
                              request: upstreamHead(for: exchange, allocator: context.channel.allocator, mirrorTo: canary), bodyLength: body)
        exchange.mirror = pair
        // The body is read into the copy whatever becomes of stable's exchange (it may answer before the body ends).
        if body > 0 { bodyMirror = pair }
    }

    private func connected(_ result: Result<UpstreamConnection, Error>, exchange: Exchange, context: ChannelHandlerContext) {
        guard case .connecting(let current, let buffered) = state, current === exchange else {
            if case .success(let connection) = result { pool.release(connection) }
            return
        }
        switch result {
        case .failure(let error):
            state = .answered
            respond(.badGateway, body: "502 \(exchange.target.versionHeader) unreachable: \(error)\n", context: context,
                    exchange: exchange, close: !exchange.requestEnded || !exchange.keepAlive, errorClass: .connectFailure,
                    error: "connect: \(error)")
        case .success(let upstream):
            upstreamUnwritable = !upstream.channel.isWritable
            upstreamReadsPaused = false
            upstream.handler.exchange = self
            upstream.handler.expectResponse(to: exchange.head.method)
            state = .forwarding(exchange, upstream)
            upstream.channel.write(upstreamHead(for: exchange, allocator: upstream.channel.allocator), promise: nil)
            if exchange.mirror != nil {
                exchange.sentAt = .now()
                exchange.sentReused = upstream.reused
            }
            for part in buffered {
                switch part {
                case .body(let body): writeUpstreamBody(body, exchange: exchange, upstream: upstream)
                case .end: if case .chunked = exchange.framing { upstream.channel.write(Self.lastChunk, promise: nil) }
                case .head: break
                }
            }
            if !processing {
                upstream.channel.flush()
                process(context: context)  // bytes that waited while connecting
            }
        }
    }

    private func timedOut(_ exchange: Exchange, context: ChannelHandlerContext) {
        switch state {
        case .connecting(let current, _) where current === exchange:
            break
        case .forwarding(let current, let upstream) where current === exchange && current.status == nil:
            drop(upstream)
        default:
            return
        }
        state = .answered
        respond(.gatewayTimeout, body: "504 \(exchange.target.versionHeader) did not answer in time\n", context: context,
                exchange: exchange, close: true, errorClass: .timeout, error: "upstream timeout")
    }

    private func tooLarge(_ exchange: Exchange, context: ChannelHandlerContext) -> Bool {
        guard exchange.bytesIn > shared.configuration.maxBodyBytes else { return false }
        if case .forwarding(_, let upstream) = state {
            drop(upstream)
        }
        state = .answered
        if exchange.status == nil {
            respondAndClose(.payloadTooLarge, body: "413 request body over \(shared.configuration.maxBodyBytes) bytes\n",
                            context: context, exchange: exchange)
        } else {
            finish(exchange, status: .payloadTooLarge, errorClass: .rejected, error: "request body over the limit after the answer began")
            context.close(promise: nil)
        }
        return true
    }

    // MARK: - Upstream side

    func upstreamRead(_ part: UpstreamPart) {
        guard let context, case .forwarding(let exchange, let upstream) = state else { return }
        switch part {
        case .head(let head):
            exchange.status = head.status
            if let pair = exchange.mirror, let sentAt = exchange.sentAt {
                pair.stableSettled(MirrorSide(status: Int(head.code), headMicros: microsSince(sentAt),
                                              reused: exchange.sentReused))
            }
            let connection = ConnectionTokens(head)
            exchange.upstreamKeepAlive = connection.keepsAlive(head.version)
            exchange.answerConnectionNamed = connection.named
            // Held until the end of this read: a small body that came with it goes out in the same buffer.
            heldHead = clientHead(for: head, named: connection.named, exchange: exchange, allocator: context.channel.allocator)
        case .body(let body):
            guard exchange.head.method != .HEAD, body.readableBytes > 0 else { return }  // an upstream that sends a body to HEAD: not to the client
            exchange.bytesOut += body.readableBytes
            if var head = heldHead, !exchange.clientChunked, body.readableBytes <= Self.bodyWithHead {
                heldHead = nil
                head.writeImmutableBuffer(body)
                context.write(wrapOutboundOut(head), promise: nil)
                return
            }
            releaseHead(context)
            if exchange.clientChunked {
                context.write(wrapOutboundOut(HTTP1.chunkSize(body.readableBytes, allocator: context.channel.allocator)), promise: nil)
                context.write(wrapOutboundOut(body), promise: nil)
                context.write(wrapOutboundOut(Self.crlf), promise: nil)
            } else {
                context.write(wrapOutboundOut(body), promise: nil)
            }
            if !context.channel.isWritable { pauseUpstreamReads(true, upstream: upstream) }
        case .end where exchange.status == .switchingProtocols && exchange.isUpgrade:
            // From here on, bytes both ways.
            releaseHead(context)
            context.flush()
            startTunnel(exchange, upstream: upstream, context: context)
        case .end:
            releaseHead(context)
            let status = exchange.status ?? .ok
            state = .idle
            idleSince = .now()
            upstream.handler.exchange = nil
            // A connection goes back to the pool reading, whatever this client's pace was.
            pauseUpstreamReads(false, upstream: upstream)
            upstreamUnwritable = false
            // After an upgrade request the upstream may have stopped reading HTTP (it was asked to
            // switch and did not): that connection is never handed to another request.
            if exchange.requestEnded && exchange.upstreamKeepAlive && !exchange.endsHTTP && exchange.status != .switchingProtocols
                && upstream.handler.reusable && upstream.channel.isActive {
                pool.release(upstream)
            } else {
                upstream.channel.close(promise: nil)
            }
            // Recorded before the last byte goes out, so whoever sees the response also sees it counted.
            // A WebSocket upgrade answered with anything but 101 failed, whatever its status.
            let errorClass: ErrorClass? = status.code >= 500 ? .upstream5xx : exchange.isUpgrade ? .upgradeFailed : nil
            finish(exchange, status: status, errorClass: errorClass, error: exchange.isUpgrade ? "the upstream did not switch protocols" : nil)
            if exchange.clientChunked {
                if case .end(let trailers?) = part, !trailers.isEmpty {
                    // The upstream's trailers, less what only the proxy may say about framing and versions.
                    var last = context.channel.allocator.buffer(capacity: 64)
                    last.writeStaticString("0\r\n")
                    Self.writePassing(trailers, named: exchange.answerConnectionNamed, to: &last, dropping: Self.droppedDownstream, also: nil)
                    last.writeStaticString("\r\n")
                    context.write(wrapOutboundOut(last), promise: nil)
                } else {
                    context.write(wrapOutboundOut(Self.lastChunk), promise: nil)
                }
            }
            if exchange.keepAlive {
                context.flush()
                process(context: context)  // the next request, if it came meanwhile
            } else {
                state = .answered
                context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        }
    }

    /// The upstream's answer could not be parsed (CL and TE together, a bad chunk…): a 502,
    /// never taken for a stale connection and never sent again.
    func upstreamFailed(_ error: Error) {
        // A reset (not an answer that could not be parsed) is the upstream going away, as a close is: a pooled
        // connection it reset as the request reached it gets the same one retry of an idempotent request.
        guard error is HTTP1.ParseError else { return upstreamClosed() }
        guard let context, case .forwarding(let exchange, let upstream) = state else { return }
        drop(upstream)
        state = .answered
        guard exchange.status == nil else {
            // The answer had begun: the client cannot be told otherwise; it is cut short.
            finish(exchange, status: .badGateway, errorClass: .upstream5xx, error: "malformed upstream answer: \(error)")
            context.close(promise: nil)
            return
        }
        respond(.badGateway, body: "502 \(exchange.target.versionHeader) sent a malformed answer\n", context: context, exchange: exchange,
                close: true, errorClass: .upstream5xx, error: "malformed upstream answer: \(error)")
    }

    func upstreamClosed() {
        guard let context, case .forwarding(let exchange, let upstream) = state else { return }
        // A pooled connection the upstream closed just as it was reused (its keep-alive timeout):
        // an idempotent request without a body is sent again, once, on a new connection.
        if exchange.status == nil, upstream.reused, !exchange.retried, exchange.requestEnded,
           resendsOnLostConnection(exchange.head.method, bodyBytes: exchange.bytesIn) {
            exchange.retried = true
            exchange.sentAt = nil  // written again once the new connection is made
            state = .connecting(exchange, buffered: [.end(nil)])
            pool.connection(to: exchange.target.upstream, fresh: true) { result in
                self.connected(result, exchange: exchange, context: context)
            }
            return
        }
        state = .answered
        if exchange.status == nil {
            respond(.badGateway, body: "502 \(exchange.target.versionHeader) closed the connection\n", context: context,
                    exchange: exchange, close: true, errorClass: .connectFailure, error: "upstream closed before responding")
        } else {
            // The response was cut short: the client must not take it for complete.
            context.close(promise: nil)
            finish(exchange, status: .badGateway, errorClass: .connectFailure, error: "upstream closed mid-response")
        }
    }

    /// The end of one read from the upstream: what it delivered goes out in one write.
    func upstreamReadComplete() {
        guard case .forwarding = state, let context else { return }
        releaseHead(context)
        context.flush()
    }

    /// The answer's head, when it waits for a body to go out with it (never past the end of the read it came in).
    private var heldHead: ByteBuffer?
    /// A body up to this size that arrives with its head is copied behind it: one write, not two.
    static let bodyWithHead = 4096

    private func releaseHead(_ context: ChannelHandlerContext) {
        guard let head = heldHead else { return }
        heldHead = nil
        context.write(wrapOutboundOut(head), promise: nil)
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        upstreamUnwritable = !isWritable
        if let context { updateReading(context: context) }
    }

    // MARK: - Responses of the proxy's own

    private func respondAndClose(_ status: HTTPResponseStatus, body: String, context: ChannelHandlerContext, exchange: Exchange?) {
        respond(status, body: body, context: context, exchange: exchange, close: true,
                errorClass: exchange == nil ? nil : .rejected, error: "\(status.code) \(status.reasonPhrase)")
    }

    private func respond(_ status: HTTPResponseStatus, body: String, context: ChannelHandlerContext, exchange: Exchange?,
                         close: Bool, errorClass: ErrorClass? = nil, error: String? = nil, method: HTTPMethod? = nil) {
        // A response to HEAD has the length of the body it would have, and no body.
        let isHead = (method ?? exchange?.head.method) == .HEAD
        let length = body.utf8.count
        if let exchange {
            exchange.bytesOut += length
            finish(exchange, status: status, errorClass: errorClass, error: error)
        }
        var buffer = context.channel.allocator.buffer(capacity: 160 + length)
        HTTP1.writeStatusLine(exchange?.head.version ?? .http1_1, status, to: &buffer)
        buffer.writeStaticString("content-type: text/plain; charset=utf-8\r\ncontent-length: ")
        buffer.writeString(String(length))
        buffer.writeStaticString("\r\n")
        if let exchange { HTTP1.writeField("x-grayscale-version", exchange.target.versionHeader, to: &buffer) }
        if close { buffer.writeStaticString("connection: close\r\n") }
        buffer.writeStaticString("\r\n")
        if !isHead { buffer.writeString(body) }
        context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
            if close { context.close(promise: nil) }
        }
        if !close, case .answered = state {
            state = .idle
            idleSince = .now()
            process(context: context)
        }
    }

    /// The client went away before the answer: the access log keeps the request (the
    /// upstream may have received it), as nginx's 499; the statistics do not judge it.
    private func abandoned(_ exchange: Exchange) {
        finish(exchange, status: HTTPResponseStatus(statusCode: 499, reasonPhrase: "Client Closed Request"), errorClass: nil,
               error: "the client closed the connection before the answer", counted: false)
    }

    private func finish(_ exchange: Exchange, status: HTTPResponseStatus, errorClass: ErrorClass?, error: String?, counted: Bool = true) {
        guard !exchange.finished else { return }
        exchange.finished = true
        shared.exchangeEnded()
        let micros = microsSince(exchange.started)
        let now = shared.configuration.now()
        if let pair = exchange.mirror {
            // Settled at its head already, unless it had none: failed (502, 504), or its user left first.
            if counted {
                pair.stableSettled(.noAnswer)
            } else if let sentAt = exchange.sentAt {
                pair.stableSettled(.noAnswer, cutoffMicros: microsSince(sentAt))
            } else {
                pair.drop()
            }
        }
        if counted {
            let outcome = RequestOutcome(service: exchange.service, release: exchange.target.release, appId: exchange.appId,
                                         status: Int(status.code), errorClass: errorClass, latencyMicros: micros, at: now, unit: exchange.unit)
            shared.statistics.record(outcome)
            shared.metrics?.record(outcome, route: exchange.route.target)
        } else if let unit = exchange.unit, unit.fresh {
            shared.statistics.firstRequestAbandoned(unit.unit, service: exchange.service, at: now)
        }
        shared.accessLog?.append(AccessLogLine(
            time: now, service: exchange.service, release: exchange.target.release.number, label: exchange.target.release.label,
            route: Self.routeName(exchange.route), appId: exchange.appId, bucket: exchange.route.bucket?.value,
            method: exchange.head.method.rawValue, path: exchange.head.uri, status: Int(status.code),
            latencyMs: Double(micros) / 1000, upstream: exchange.target.upstreamText,
            bytesIn: exchange.bytesIn, bytesOut: exchange.bytesOut, error: error ?? exchange.identityProblem))
    }

    /// A sticky cookie's client id: 1 to 32 letters, digits, `-` or `_`; anything else gets a new one.
    static func isClientId(_ value: Substring) -> Bool {
        !value.isEmpty && value.utf8.count <= 32
            && value.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 45 || $0 == 95 }
    }

    // MARK: - Headers

    /// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy. Static strings: each
    /// comparison checks the length first and lowercases nothing.
    static let hopByHop: [StaticString] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                                           "proxy-authenticate", "proxy-authorization"]

    /// Headers the proxy sets itself on the way to the upstream: the client's are dropped
    /// (framing, `Expect`, the forwarding and version headers).
    static let replacedUpstream: [StaticString] = ["content-length", "transfer-encoding", "expect", "x-forwarded-for", "x-forwarded-proto",
                                                   "x-grayscale-version", "x-grayscale-route"]

    /// The response's framing and version headers are the proxy's.
    static let replacedDownstream: [StaticString] = ["content-length", "transfer-encoding", "x-grayscale-version"]


    /// What never crosses the proxy on the way to the upstream, and on the way back (besides
    /// what `Connection` names): looked up by length first, for every header of every request.
    static let droppedUpstream = HeaderNameSet(hopByHop + replacedUpstream)
    static let droppedDownstream = HeaderNameSet(hopByHop + replacedDownstream)

    /// What a message's `Connection` headers say, read in one pass with no array for the usual
    /// `keep-alive` or `close`: whether it keeps the connection, and the headers it names,
    /// which are hop-by-hop too. It may not name the framing or the host away: the proxy sets
    /// the framing itself.
    struct ConnectionTokens {
        var named: [Substring] = []
        var close = false
        var keepAlive = false

        /// Read from a head's bytes: the usual `keep-alive` or `close` makes no string.
        init(_ head: some HTTP1.Head) {
            head.withBytes { raw in
                for field in head.fields where HTTP1.ResponseHead.isName(raw, field, "connection") { read(HTTP1.bytes(raw, field.value)) }
            }
        }

        /// One `Connection` value's tokens.
        private mutating func read(_ value: UnsafeRawBufferPointer) {
            HTTP1.forEachListItem(value) { token in
                if isASCIICaseInsensitiveEqual(token, "close") {
                    close = true
                } else if isASCIICaseInsensitiveEqual(token, "keep-alive") {
                    keepAlive = true
                } else if token.count > 0, !isASCIICaseInsensitiveEqual(token, "content-length"),
                          !isASCIICaseInsensitiveEqual(token, "transfer-encoding"), !isASCIICaseInsensitiveEqual(token, "host") {
                    named.append(Substring(String(decoding: token, as: UTF8.self)))
                }
            }
        }

        /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes it unless told `keep-alive`.
        func keepsAlive(_ version: HTTPVersion) -> Bool {
            version.major == 1 && version.minor >= 1 ? !close : keepAlive && !close
        }
    }

    /// Writes the fields of `headers` that cross the proxy: not hop-by-hop, not named by
    /// `Connection`, not `dropped`.
    static func writePassing(_ headers: HTTPHeaders, named: [Substring], to buffer: inout ByteBuffer, dropping dropped: HeaderNameSet,
                             also extra: String?) {
        for (name, value) in headers {
            if dropped.contains(name) || extra.map({ isASCIICaseInsensitiveEqual(name, runtime: $0) }) == true { continue }
            if !named.isEmpty, named.contains(where: { isASCIICaseInsensitiveEqual(name, runtime: $0) }) { continue }
            HTTP1.writeField(name, value, to: &buffer)
        }
    }

    /// The request head the upstream gets: the client's method and target, its headers
    /// less the hop-by-hop ones and those the proxy sets, then the proxy's framing and its own
    /// headers. The client's fields are copied from the bytes read, in one write.
    private func upstreamHead(for exchange: Exchange, allocator: ByteBufferAllocator, mirrorTo mirror: ServiceRoute.Target? = nil) -> ByteBuffer {
        let head = exchange.head
        let routingHeader = shared.configuration.routingHeader
        let version = (mirror ?? exchange.target).versionHeader
        // A mirrored copy says so: the canary may tell copies from users' requests in its own logs.
        let route = mirror == nil ? Self.routeName(exchange.route) : "mirror"
        let named = exchange.connectionNamed
        let clientAddress = clientAddress
        return head.withBytes { raw in
            let forwarded = head.firstValue("x-forwarded-for", in: raw)
            let upgrade = exchange.isUpgrade ? head.firstValue("upgrade", in: raw) : nil
            // The request line and each passing field are at most as long as read, plus a space after
            // a field's colon; the proxy's own fields take less than 256 bytes besides their values.
            let capacity = head.bytes.readableBytes + head.fields.count + 256 + (forwarded?.count ?? 0) + clientAddress.utf8.count
                + (upgrade?.count ?? 0) + version.utf8.count + route.utf8.count + (routingHeader?.utf8.count ?? 0)
            var buffer = allocator.buffer(capacity: capacity)
            buffer.writeHead(capacity: capacity) { out in
                out.write(HTTP1.bytes(raw, 0..<head.target.upperBound))
                out.write(" HTTP/1.1\r\n")
                for field in head.fields {
                    let name = HTTP1.bytes(raw, field.name)
                    if Self.droppedUpstream.contains(name) { continue }
                    if let routingHeader, isASCIICaseInsensitiveEqual(name, substring: Substring(routingHeader)) { continue }
                    if !named.isEmpty, named.contains(where: { isASCIICaseInsensitiveEqual(name, substring: $0) }) { continue }
                    out.write(name)
                    out.write(": ")
                    out.write(HTTP1.bytes(raw, field.value))
                    out.write("\r\n")
                }
                switch exchange.framing {
                case .length(let length):
                    out.write("content-length: ")
                    out.write(decimal: length)
                    out.write("\r\n")
                case .chunked: out.write("transfer-encoding: chunked\r\n")
                case .none: if RequestFraming.expectsBody(head.method) { out.write("content-length: 0\r\n") }
                }
                if exchange.isUpgrade {
                    out.write("connection: upgrade\r\nupgrade: ")
                    if let upgrade { out.write(upgrade) } else { out.write("websocket") }
                    out.write("\r\n")
                }
                // The first X-Forwarded-For, extended with this hop; any others are dropped.
                out.write("x-forwarded-for: ")
                if let forwarded {
                    out.write(forwarded)
                    out.write(", ")
                }
                out.write(clientAddress)
                out.write("\r\nx-forwarded-proto: http\r\n")
                out.field("x-grayscale-version", version)
                out.field("x-grayscale-route", route)
                if let routingHeader, let bucket = exchange.routingBucket {
                    out.write(routingHeader)
                    out.write(": ")
                    out.write(decimal: bucket)
                    out.write("\r\n")
                }
                out.write("\r\n")
            }
            return buffer
        }
    }

    /// The response head the client gets: the upstream's fields copied as they came, less the
    /// hop-by-hop ones, in one write. Its framing is the proxy's: a length it knows, else chunks
    /// for HTTP/1.1 clients, else (HTTP/1.0, or HEAD with no length) the end of the connection.
    private func clientHead(for head: HTTP1.ResponseHead, named: [Substring], exchange: Exchange, allocator: ByteBufferAllocator) -> ByteBuffer {
        let version = exchange.target.versionHeader
        let cookie = exchange.stickyCookie
        // The status line and each field are at most as long as read, plus a space; the proxy's
        // own fields take less than 128 bytes besides their values.
        let capacity = head.bytes.readableBytes + head.fields.count + 128 + version.utf8.count + (cookie?.utf8.count ?? 0)
        var buffer = allocator.buffer(capacity: capacity)
        let clientHTTP10 = exchange.head.version.major == 1 && exchange.head.version.minor == 0
        head.withBytes { raw in
            buffer.writeHead(capacity: capacity) { out in
                out.write(clientHTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ")
                out.write(decimal: head.code)
                out.write(" ")
                out.write(HTTP1.bytes(raw, head.reason))
                out.write("\r\n")
                func copy(_ field: HTTP1.Field) {
                    out.write(HTTP1.bytes(raw, field.name))
                    out.write(": ")
                    out.write(HTTP1.bytes(raw, field.value))
                    out.write("\r\n")
                }
                defer {
                    out.field("x-grayscale-version", version)
                    if let cookie { out.field("set-cookie", cookie) }
                    out.write("\r\n")
                }
                if head.code == 101 && exchange.isUpgrade {
                    for field in head.fields where !HTTP1.ResponseHead.isName(raw, field, "x-grayscale-version") { copy(field) }
                    return
                }
                var lengths = 0
                var length: HTTP1.Field?
                for field in head.fields {
                    let name = HTTP1.bytes(raw, field.name)
                    if isASCIICaseInsensitiveEqual(name, "content-length") {
                        lengths += 1
                        length = field
                        continue
                    }
                    if Self.droppedDownstream.contains(name) { continue }
                    if !named.isEmpty, named.contains(where: { isASCIICaseInsensitiveEqual(name, substring: $0) }) { continue }
                    copy(field)
                }
                let code = head.code
                if code < 200 || code == 204 {
                    // No body and no length.
                } else if lengths == 1, let length, HTTP1.decimal(HTTP1.bytes(raw, length.value)) != nil {
                    copy(length)
                } else if code == 304 {
                    // No body.
                } else if exchange.head.method == .HEAD || clientHTTP10 {
                    exchange.keepAlive = false
                } else {
                    out.write("transfer-encoding: chunked\r\n")
                    exchange.clientChunked = true
                }
                if !exchange.keepAlive {
                    out.write("connection: close\r\n")
                } else if clientHTTP10 {
                    out.write("connection: keep-alive\r\n")
                }
            }
        }
        return buffer
    }

    static func isUpgrade(_ head: RequestHead) -> Bool {
        head.hasItem("connection", "upgrade")
            && head.withBytes { raw in head.firstValue("upgrade", in: raw).map { isASCIICaseInsensitiveEqual($0, "websocket") } ?? false }
    }

    static func routeName(_ route: Route) -> String {
        switch route.reason {
        case .optIn: return "optIn-\(route.target.rawValue)"
        case .allowList: return "allowList"
        case .denyList: return "denyList"
        default: return route.target.rawValue
        }
    }

    // MARK: - WebSocket tunnel

    /// After a 101, both connections stop speaking HTTP: the bytes each side sent past its
    /// head go across, then the two are glued.
    private func startTunnel(_ exchange: Exchange, upstream: UpstreamConnection, context: ChannelHandlerContext) {
        guard case .stopped = reader else {
            // A 101 before the request's body was read whole: what follows on each side would
            // not line up with the other (part of the body re-chunked, the rest raw). No tunnel.
            drop(upstream)
            state = .answered
            finish(exchange, status: .badGateway, errorClass: .upstream5xx, error: "101 before the upgrade request's body was sent")
            context.close(promise: nil)
            return
        }
        state = .tunnel
        upstream.handler.exchange = nil
        finish(exchange, status: .switchingProtocols, errorClass: nil, error: nil)
        let fromUpstream = upstream.handler.takeUnread()
        if fromUpstream.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(fromUpstream), promise: nil) }
        if inbound.readableBytes > 0 {
            upstream.channel.writeAndFlush(inbound, promise: nil)
            inbound = ByteBuffer()
        }
        let (clientGlue, upstreamGlue) = GlueHandler.matchedPair()
        clientGlue.relayedDirectly(fromUpstream)
        // An upstream that drops the socket without a close frame (1006): counted by version
        // (its own error class), logged, in /metrics; not fed to the sequential judge. Drops
        // come in bursts (a pod's restart, a node drained, a balancer reset drop every socket
        // of one version at once), and the judge's α holds only for failures that are each
        // the canary's with the canary's share under the null: five drops of one canary pod
        // would read as overwhelming evidence. Failed upgrades are judged (one request each).
        let shared = self.shared
        clientGlue.onAbnormalUpstreamClose = {
            let now = shared.configuration.now()
            let micros = microsSince(exchange.started)
            let outcome = RequestOutcome(service: exchange.service, release: exchange.target.release, appId: exchange.appId, status: 502,
                                         errorClass: .webSocketDropped, latencyMicros: micros, at: now, unit: nil)
            shared.statistics.record(outcome)
            shared.metrics?.record(outcome, route: exchange.route.target)
            shared.accessLog?.append(AccessLogLine(
                time: now, service: exchange.service, release: exchange.target.release.number, label: exchange.target.release.label,
                route: Self.routeName(exchange.route), appId: exchange.appId, bucket: exchange.route.bucket?.value,
                method: exchange.head.method.rawValue, path: exchange.head.uri, status: 502, latencyMs: Double(micros) / 1000,
                upstream: exchange.target.upstreamText, bytesIn: exchange.bytesIn, bytesOut: exchange.bytesOut,
                error: "websocket closed by the upstream without a close frame (1006)"))
        }
        do {
            let client = context.pipeline.syncOperations, server = upstream.channel.pipeline.syncOperations
            try server.addHandler(upstreamGlue, position: .before(upstream.handler))
            server.removeHandler(upstream.handler, promise: nil)
            try client.addHandler(clientGlue, position: .after(self))
            client.removeHandler(name: Self.name, promise: nil)
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            // Known to the server until it closes, so a rollback can end it (close code 1012).
            let glue = NIOLoopBound(clientGlue, eventLoop: context.eventLoop)
            shared.tunnelOpened(context.channel, service: exchange.service, release: exchange.target.release.number) { grace in
                glue.value.startDrain(grace: grace)
            }
        } catch {
            context.close(promise: nil)
            upstream.channel.close(promise: nil)
        }
    }
}

/// Microseconds from `start` until now (0 if the clock went back): a request's latency, as the proxy measures it.
@inline(__always)
func microsSince(_ start: NIODeadline) -> UInt64 { UInt64(max(0, (NIODeadline.now() - start).nanoseconds / 1000)) }

/// An ASCII letter in lower case; any other byte as it is (so `^` and `~`, or `@` and a
/// backquote, stay apart, as a bare `| 0x20` would not keep them).
@inline(__always)
func asciiLower(_ byte: UInt8) -> UInt8 { byte &- 65 < 26 ? byte | 0x20 : byte }

/// Compares header names without allocating lowercased copies, length first. A literal
/// argument takes this version or the static-string ones: given a version for two run-time
/// strings, `"authorization"` became a `String` and was compared byte by byte through `zip`.
@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: String, _ rhs: StaticString) -> Bool {
    guard lhs.utf8.count == rhs.utf8CodeUnitCount else { return false }
    var lhs = lhs
    return lhs.withUTF8 { isASCIICaseInsensitiveEqual(UnsafeRawBufferPointer($0), rhs) }
}

@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: some StringProtocol, _ rhs: StaticString) -> Bool {
    let right = UnsafeBufferPointer(start: rhs.utf8Start, count: rhs.utf8CodeUnitCount)
    guard lhs.utf8.count == right.count else { return false }
    if let equal = lhs.utf8.withContiguousStorageIfAvailable({ isASCIICaseInsensitiveEqual(UnsafeRawBufferPointer($0), right) }) {
        return equal
    }
    return zip(lhs.utf8, right).allSatisfy { asciiLower($0) == asciiLower($1) }
}

/// Two run-time strings (not named so that a literal could pick it over the static-string versions).
@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: some StringProtocol, runtime rhs: some StringProtocol) -> Bool {
    lhs.utf8.count == rhs.utf8.count && zip(lhs.utf8, rhs.utf8).allSatisfy { asciiLower($0) == asciiLower($1) }
}

@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: UnsafeRawBufferPointer, _ rhs: StaticString) -> Bool {
    isASCIICaseInsensitiveEqual(lhs, UnsafeBufferPointer(start: rhs.utf8Start, count: rhs.utf8CodeUnitCount))
}

@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: UnsafeRawBufferPointer, _ right: UnsafeBufferPointer<UInt8>) -> Bool {
    guard lhs.count == right.count else { return false }
    for index in 0..<lhs.count where asciiLower(lhs[index]) != asciiLower(right[index]) { return false }
    return true
}

@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: UnsafeRawBufferPointer, substring rhs: Substring) -> Bool {
    lhs.count == rhs.utf8.count && zip(lhs, rhs.utf8).allSatisfy { asciiLower($0) == asciiLower($1) }
}

/// Header names to look up fast: grouped by length, so most names are turned away by one
/// index and the rest compared with the one or two names of their length.
struct HeaderNameSet: Sendable {
    private let byLength: [[StaticString]]

    init(_ names: [StaticString]) {
        var byLength = [[StaticString]](repeating: [], count: (names.map(\.utf8CodeUnitCount).max() ?? 0) + 1)
        for name in names where !byLength[name.utf8CodeUnitCount].contains(where: { $0.utf8CodeUnitCount == name.utf8CodeUnitCount
            && isASCIICaseInsensitiveEqual(UnsafeRawBufferPointer(start: $0.utf8Start, count: $0.utf8CodeUnitCount), name) }) {
            byLength[name.utf8CodeUnitCount].append(name)
        }
        self.byLength = byLength
    }

    @inline(__always)
    func contains(_ name: UnsafeRawBufferPointer) -> Bool {
        guard name.count < byLength.count else { return false }
        return byLength[name.count].contains { isASCIICaseInsensitiveEqual(name, $0) }
    }

    @inline(__always)
    func contains(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { contains(UnsafeRawBufferPointer($0)) }
    }
}
