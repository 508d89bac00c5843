import Foundation
import GrayscaleCore
import NIOCore
import NIOHTTP1

/// One client connection: routes each request, forwards it to the chosen release's
/// upstream, streams the response back, and records the outcome by version.
/// Protocol work only; the routing rule itself is `TrafficSplit.route` in Core.
final class ProxyHandler: ChannelInboundHandler, RemovableChannelHandler, UpstreamExchange {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let name = "grayscale.proxy"
    static let serverHandlerNames = ["grayscale.http.encoder", "grayscale.http.decoder"]

    private let shared: ProxyShared
    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var clientAddress = ""
    /// True between a read from the client and its read-complete: writes to the upstream
    /// made meanwhile are flushed once, at read-complete.
    private var inClientRead = false
    /// Client reads are paused while an exchange waits for a new upstream connection.
    private var clientReadsPaused = false
    /// When the last exchange ended (or the connection opened): the idle timeout counts from here.
    private var idleSince = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?
    /// Requests that arrived while the one before was still waiting for its answer (HTTP
    /// pipelining), in order, with any parse error among them: handled when it ends.
    /// Client reads pause while any wait, so this holds at most what one read decoded.
    private var pipelined = CircularBuffer<Pipelined>()
    private var pipelinePaused = false
    private var drainingPipeline = false
    /// The decoder stopped after an upgrade request: client reads never resume.
    private var httpEnded = false

    enum Pipelined {
        case part(HTTPServerRequestPart)
        case error(Error)
    }

    enum State {
        case idle
        /// Connecting to the upstream; request parts that arrive meanwhile wait here.
        case connecting(Exchange, buffered: [HTTPServerRequestPart])
        case forwarding(Exchange, UpstreamConnection)
        /// Answered by the proxy itself (413, 502, 504…); the rest of the request is dropped.
        case answered
        case tunnel
    }

    /// One request on its way through the proxy.
    final class Exchange {
        let head: HTTPRequestHead
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
        /// The decoder stops after this request (an upgrade): client reads stay paused, and
        /// unless a WebSocket tunnel starts the connection closes after the response.
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
        /// Sent again once on a new connection after a reused one was closed under it.
        var retried = false
        var finished = false
        /// No response head by then answers 504 (checked by the connection's timer, not a timer per request).
        var deadline = NIODeadline.distantFuture

        init(head: HTTPRequestHead, service: String, target: ServiceRoute.Target, route: Route, appId: String?, unit: UnitEvent?,
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

    init(shared: ProxyShared, pool: UpstreamPool) {
        self.shared = shared
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress ?? ""
        scheduleIdleCheck(context: context)
    }

    /// One timer per connection, re-armed a quarter of the shorter timeout apart, rather than
    /// work on every read and write or a timer per request: the idle timeout and the upstream's
    /// response timeout both fire within a quarter of their length after they are due.
    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        let timeout = shared.configuration.idleTimeout
        let shorter = min(timeout.nanoseconds, shared.configuration.upstreamResponseTimeout.nanoseconds)
        let interval = TimeAmount.nanoseconds(max(shorter / 4, 1_000_000))
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(in: interval) {
            guard let context = self.context else { return }
            switch self.state {
            case .idle where NIODeadline.now() - self.idleSince >= timeout:
                context.close(promise: nil)
                return
            case .connecting(let exchange, _) where exchange.status == nil && NIODeadline.now() >= exchange.deadline,
                 .forwarding(let exchange, _) where exchange.status == nil && NIODeadline.now() >= exchange.deadline:
                self.timedOut(exchange, context: context)
            default:
                break
            }
            if self.context != nil { self.scheduleIdleCheck(context: context) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        self.context = nil
    }

    // MARK: - Client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        inClientRead = true
        if !pipelined.isEmpty || awaitingAnswer {
            pipelined.append(.part(part))
            pausePipeline(context: context)
            return
        }
        handle(part, context: context)
    }

    /// The current request has been read whole and its answer is awaited: what the client
    /// sends now is its next request.
    private var awaitingAnswer: Bool {
        switch state {
        case .connecting(let exchange, _), .forwarding(let exchange, _): return exchange.requestEnded
        case .idle, .answered, .tunnel: return false
        }
    }

    private func pausePipeline(context: ChannelHandlerContext) {
        guard !pipelinePaused else { return }
        pipelinePaused = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
    }

    /// The exchange before them has ended with the connection kept alive: the requests that
    /// waited are handled, in order, until one of them waits for its answer in turn.
    private func drainPipeline(context: ChannelHandlerContext) {
        guard !drainingPipeline else { return }
        drainingPipeline = true
        defer { drainingPipeline = false }
        while !awaitingAnswer, let next = pipelined.popFirst() {
            if case .answered = state { break }  // the connection is closing: what waited is dropped
            if case .tunnel = state { break }
            switch next {
            case .part(let part): handle(part, context: context)
            case .error(let error): handleError(error, context: context)
            }
        }
        if case .answered = state { pipelined.removeAll() }
        // What the handled parts wrote to the upstream goes out now (outside a client read, nothing else flushes it).
        if !inClientRead, case .forwarding(_, let upstream) = state { upstream.channel.flush() }
        if pipelined.isEmpty, pipelinePaused {
            pipelinePaused = false
            if !clientReadsPaused, !httpEnded, context.channel.isActive {
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
        }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            begin(head, context: context)
        case (.connecting(let exchange, var buffered), _):
            if case .body(let body) = part { exchange.bytesIn += body.readableBytes }
            if case .end = part { exchange.requestEnded = true }
            guard !tooLarge(exchange, context: context) else { return }
            buffered.append(part)
            state = .connecting(exchange, buffered: buffered)
        case (.forwarding(let exchange, let upstream), .body(let body)):
            exchange.bytesIn += body.readableBytes
            guard !tooLarge(exchange, context: context) else { return }
            upstream.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        case (.forwarding(let exchange, let upstream), .end):
            exchange.requestEnded = true
            // The client's trailers stay here: they could carry framing or the proxy's own headers.
            upstream.channel.write(HTTPClientRequestPart.end(nil), promise: nil)
        case (.answered, _), (.tunnel, _), (.idle, _), (.forwarding, .head):
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inClientRead = false
        if case .forwarding(_, let upstream) = state { upstream.channel.flush() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .forwarding(let exchange, let upstream):
            upstream.handler.exchange = nil
            upstream.channel.close(promise: nil)  // mid-exchange: never reuse
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
        if case .forwarding(_, let upstream) = state {
            upstream.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A parse error in a request after the one in flight waits its turn with it.
        if error is HTTPParserError, !pipelined.isEmpty || awaitingAnswer {
            pipelined.append(.error(error))
            pausePipeline(context: context)
            return
        }
        handleError(error, context: context)
    }

    private func handleError(_ error: Error, context: ChannelHandlerContext) {
        switch state {
        case .idle:
            // The request could not be parsed: nothing was routed yet.
            let status: HTTPResponseStatus = (error as? HTTPParserError) == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            shared.metrics?.refused(reason: status == .badRequest ? "malformed" : "header-too-large")
            respondAndClose(status, body: "\(status.code) \(status.reasonPhrase)\n", context: context, exchange: nil)
        case .connecting(let exchange, _) where exchange.status == nil, .forwarding(let exchange, _) where exchange.status == nil:
            // The body could not be parsed (a bad chunk size, a bare LF…): the client hears why, the upstream connection goes.
            if case .forwarding(_, let upstream) = state {
                upstream.handler.exchange = nil
                upstream.channel.close(promise: nil)
            }
            state = .answered
            shared.metrics?.refused(reason: "malformed")
            respondAndClose(.badRequest, body: "400 malformed request body\n", context: context, exchange: exchange)
        default:
            context.close(promise: nil)
        }
    }

    /// Refuses a request before routing it: the client sees the status, the access log and
    /// `/metrics` say why, and the connection closes (what follows cannot be trusted).
    private func refuse(_ refusal: RequestFraming.Refusal, head: HTTPRequestHead, context: ChannelHandlerContext) {
        state = .answered
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        shared.metrics?.refused(reason: refusal.reason)
        shared.accessLog?.append(AccessLogLine(
            time: shared.configuration.now(), service: "", release: 0, label: "", route: "refused", appId: nil, bucket: nil,
            method: head.method.rawValue, path: head.uri, status: Int(refusal.status.code), latencyMs: 0, upstream: "",
            bytesIn: 0, bytesOut: 0, error: refusal.detail))
        respond(refusal.status, body: "\(refusal.status.code) \(refusal.detail)\n", context: context, exchange: nil, close: true)
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let framing: RequestFraming
        switch RequestFraming.of(head) {
        case .success(let decided): framing = decided
        case .failure(let refusal):
            refuse(refusal, head: head, context: context)
            return
        }
        let endsHTTP = RequestFraming.endsHTTP(head)
        if endsHTTP {
            httpEnded = true
            // Whatever follows is not parsed: read no more of it than is already here.
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
        let table = shared.table
        guard let service = table.service(for: head) else {
            state = .answered
            let known = table.routes.keys.sorted().joined(separator: ", ")
            respond(.notFound, body: "grayscale: no service matches this request (services: \(known.isEmpty ? "none" : known))\n",
                    context: context, exchange: nil, close: !head.isKeepAlive || endsHTTP, method: head.method)
            return
        }
        let identity = shared.configuration.identity.identify(in: head)
        let appId = identity.appId
        let requested = head.headers.first(name: "x-grayscale-channel").flatMap { RouteTarget(rawValue: $0.lowercased()) }
        var stickyCookie: String?
        var clientId: Substring?
        if appId == nil {
            // An anonymous client is a unit of its own: a random id in a sticky cookie, placed by
            // the canary's salted hash like a user, so each release draws new clients.
            if let pinned = head.headers[canonicalForm: "cookie"].lazy.compactMap({ cookieValue("grayscale_sticky", in: $0) }).first,
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
        let route = split.route(appId: appId, requestedChannel: requested, anonymousDraw: draw)
        let unit: UnitEvent?
        switch route.reason {
        case .inRange, .outOfRange:
            unit = appId.map { UnitEvent(unit: "u:\($0)", canary: route.target == .canary, lower: split.range.lower, upper: split.range.upper) }
        case .anonymousWeight:
            unit = clientId.map { UnitEvent(unit: "a:\($0)", canary: route.target == .canary, lower: 0, upper: split.nonAuthWeight) }
        case .noCanary, .allowList, .denyList, .optIn:
            unit = nil  // not randomized: served and counted, never evidence
        }
        let exchange = Exchange(
            head: head, service: service.service, target: service.target(route.target), route: route, appId: appId, unit: unit,
            started: .now(), keepAlive: head.isKeepAlive && !shared.isDraining && !endsHTTP, isUpgrade: endsHTTP && Self.isUpgrade(head),
            stickyCookie: stickyCookie)
        exchange.framing = framing
        exchange.endsHTTP = endsHTTP
        exchange.identityProblem = identity.problem

        if shared.configuration.routingHeader != nil { exchange.routingBucket = service.split.routingBucket(for: route) }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > shared.configuration.maxBodyBytes {
            shared.exchangeStarted()
            state = .answered
            respondAndClose(.payloadTooLarge, body: "413 request body over \(shared.configuration.maxBodyBytes) bytes\n",
                            context: context, exchange: exchange)
            return
        }
        state = .connecting(exchange, buffered: [])
        shared.exchangeStarted()
        exchange.deadline = exchange.started + shared.configuration.upstreamResponseTimeout
        // A pooled connection is handed over at once; only a new one needs a callback.
        if let idle = pool.idleConnection(to: exchange.target.upstream) {
            connected(.success(idle), exchange: exchange, context: context)
            return
        }
        pool.connection(to: exchange.target.upstream, fresh: true) { result in
            self.connected(result, exchange: exchange, context: context)
        }
        if case .connecting(let waiting, _) = state, waiting === exchange {
            // A new connection is being made: hold further request bytes in the socket meanwhile.
            clientReadsPaused = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
    }

    private func connected(_ result: Result<UpstreamConnection, Error>, exchange: Exchange, context: ChannelHandlerContext) {
        guard case .connecting(let current, let buffered) = state, current === exchange else {
            if case .success(let connection) = result { pool.release(connection) }
            return
        }
        if clientReadsPaused, !exchange.endsHTTP {
            clientReadsPaused = false
            if !pipelinePaused { context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
        }
        switch result {
        case .failure(let error):
            state = .answered
            respond(.badGateway, body: "502 \(exchange.target.versionHeader) unreachable: \(error)\n", context: context,
                    exchange: exchange, close: !exchange.requestEnded || !exchange.keepAlive, errorClass: .connectFailure,
                    error: "connect: \(error)")
        case .success(let upstream):
            upstream.handler.exchange = self
            state = .forwarding(exchange, upstream)
            upstream.channel.write(HTTPClientRequestPart.head(upstreamHead(for: exchange)), promise: nil)
            for part in buffered {
                switch part {
                case .body(let body): upstream.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
                case .end: upstream.channel.write(HTTPClientRequestPart.end(nil), promise: nil)
                case .head: break
                }
            }
            if !inClientRead { upstream.channel.flush() }
        }
    }

    private func timedOut(_ exchange: Exchange, context: ChannelHandlerContext) {
        switch state {
        case .connecting(let current, _) where current === exchange:
            break
        case .forwarding(let current, let upstream) where current === exchange && current.status == nil:
            upstream.handler.exchange = nil
            upstream.channel.close(promise: nil)
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
            upstream.handler.exchange = nil
            upstream.channel.close(promise: nil)
        }
        state = .answered
        if exchange.status == nil {
            respondAndClose(.payloadTooLarge, body: "413 request body over \(shared.configuration.maxBodyBytes) bytes\n",
                            context: context, exchange: exchange)
        } else {
            context.close(promise: nil)
        }
        return true
    }

    // MARK: - Upstream side

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard let context, case .forwarding(let exchange, let upstream) = state else { return }
        switch part {
        case .head(let head):
            exchange.status = head.status
            exchange.upstreamKeepAlive = head.isKeepAlive
            context.write(wrapOutboundOut(.head(clientHead(for: head, exchange: exchange))), promise: nil)
        case .body(let body):
            guard exchange.head.method != .HEAD else { return }  // an upstream that sends a body to HEAD: not to the client
            exchange.bytesOut += body.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            if !context.channel.isWritable {
                upstream.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
        case .end(let trailers) where exchange.status == .switchingProtocols && exchange.isUpgrade:
            // The upstream's decoder has stopped at the upgrade: from here on, bytes.
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            startTunnel(exchange, upstream: upstream, context: context)
        case .end(let trailers):
            let status = exchange.status ?? .ok
            state = .idle
            idleSince = .now()
            upstream.handler.exchange = nil
            // After an upgrade request the upstream may have stopped reading HTTP (it was asked to
            // switch and did not): that connection is never handed to another request.
            if exchange.requestEnded && exchange.upstreamKeepAlive && !exchange.isUpgrade && exchange.status != .switchingProtocols
                && upstream.channel.isActive {
                pool.release(upstream)
            } else {
                upstream.channel.close(promise: nil)
            }
            // Recorded before the last byte goes out, so whoever sees the response also sees it counted.
            finish(exchange, status: status, errorClass: status.code >= 500 ? .upstream5xx : nil, error: nil)
            if exchange.keepAlive {
                context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
                drainPipeline(context: context)
            } else {
                context.writeAndFlush(wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        }
    }

    /// The upstream's answer could not be parsed (CL and TE together, a bad chunk…): a 502,
    /// never taken for a stale connection and never sent again.
    func upstreamFailed(_ error: Error) {
        guard let context, case .forwarding(let exchange, let upstream) = state else { return }
        upstream.handler.exchange = nil
        upstream.channel.close(promise: nil)
        state = .answered
        guard exchange.status == nil else {
            context.close(promise: nil)  // the answer had begun: the client cannot be told otherwise
            return
        }
        respond(.badGateway, body: "502 \(exchange.target.versionHeader) sent a malformed answer\n", context: context, exchange: exchange,
                close: true, errorClass: .upstream5xx, error: "malformed upstream answer: \(error)")
    }

    func upstreamClosed() {
        guard let context, case .forwarding(let exchange, let upstream) = state else { return }
        // A pooled connection the upstream closed just as it was reused (its keep-alive timeout):
        // an idempotent request without a body is sent again, once, on a new connection.
        if exchange.status == nil, upstream.reused, !exchange.retried, exchange.requestEnded, exchange.bytesIn == 0,
           [HTTPMethod.GET, .HEAD, .OPTIONS].contains(exchange.head.method) {
            exchange.retried = true
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
        if case .forwarding = state { context?.flush() }
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        context?.channel.setOption(ChannelOptions.autoRead, value: isWritable).whenComplete { _ in }
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
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(body.utf8.count))
        if let exchange { headers.add(name: "x-grayscale-version", value: exchange.target.versionHeader) }
        if close { headers.add(name: "connection", value: "close") }
        if let exchange {
            exchange.bytesOut += body.utf8.count
            finish(exchange, status: status, errorClass: errorClass, error: error)
        }
        let version = exchange?.head.version ?? .http1_1
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if !isHead { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if close { context.close(promise: nil) }
        }
        if !close, case .answered = state {
            state = .idle
            idleSince = .now()
            drainPipeline(context: context)
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
        let micros = UInt64(max(0, (NIODeadline.now() - exchange.started).nanoseconds / 1000))
        let now = shared.configuration.now()
        if counted {
            let outcome = RequestOutcome(service: exchange.service, release: exchange.target.release, appId: exchange.appId,
                                         status: Int(status.code), errorClass: errorClass, latencyMicros: micros, at: now, unit: exchange.unit)
            shared.statistics.record(outcome)
            shared.metrics?.record(outcome, route: exchange.route.target)
        }
        shared.accessLog?.append(AccessLogLine(
            time: now, service: exchange.service, release: exchange.target.release.number, label: exchange.target.release.label,
            route: Self.routeName(exchange.route), appId: exchange.appId, bucket: exchange.route.bucket?.value,
            method: exchange.head.method.rawValue, path: exchange.head.uri, status: Int(status.code),
            latencyMs: Double(micros) / 1000, upstream: exchange.target.upstream.description,
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

    static func isHopByHop(_ name: String) -> Bool { hopByHop.contains { isASCIICaseInsensitiveEqual(name, $0) } }

    /// `headers` without the hop-by-hop ones and those `dropped` names, in one pass.
    static func strippingHopByHop(_ headers: HTTPHeaders, reserving extra: Int = 0, dropping dropped: (String) -> Bool = { _ in false }) -> HTTPHeaders {
        // Headers the Connection header names are hop-by-hop too (keep-alive and close name none).
        // Connection may not name the framing or the host away: the proxy sets the framing itself.
        // Most messages have no Connection header: no array for them.
        let named = headers.contains(name: "connection") ? headers[canonicalForm: "connection"].filter { name in
            !["keep-alive", "close", "content-length", "transfer-encoding", "host"].contains { isASCIICaseInsensitiveEqual(name, $0) }
        } : []
        var result = HTTPHeaders()
        result.reserveCapacity(headers.count + extra)
        for (name, value) in headers {
            if isHopByHop(name) || dropped(name) { continue }
            if !named.isEmpty, named.contains(where: { isASCIICaseInsensitiveEqual(name, $0) }) { continue }
            result.add(name: name, value: value)
        }
        return result
    }

    private func upstreamHead(for exchange: Exchange) -> HTTPRequestHead {
        let routingHeader = shared.configuration.routingHeader
        var forwardedFor: String?
        var headers = Self.strippingHopByHop(exchange.head.headers, reserving: 7) { name in
            Self.replacedUpstream.contains { isASCIICaseInsensitiveEqual(name, $0) }
                || routingHeader.map { isASCIICaseInsensitiveEqual(name, $0) } == true
        }
        for (name, value) in exchange.head.headers where isASCIICaseInsensitiveEqual(name, "x-forwarded-for") {
            forwardedFor = value  // the first, extended with this hop; any others are dropped
            break
        }
        switch exchange.framing {
        case .length(let length): headers.add(name: "content-length", value: String(length))
        case .chunked: headers.add(name: "transfer-encoding", value: "chunked")
        case .none: if RequestFraming.expectsBody(exchange.head.method) { headers.add(name: "content-length", value: "0") }
        }
        if exchange.isUpgrade {
            headers.add(name: "connection", value: "upgrade")
            headers.add(name: "upgrade", value: exchange.head.headers.first(name: "upgrade") ?? "websocket")
        }
        headers.add(name: "x-forwarded-for", value: forwardedFor.map { "\($0), \(clientAddress)" } ?? clientAddress)
        headers.add(name: "x-forwarded-proto", value: "http")
        headers.add(name: "x-grayscale-version", value: exchange.target.versionHeader)
        headers.add(name: "x-grayscale-route", value: Self.routeName(exchange.route))
        if let routingHeader, let bucket = exchange.routingBucket {
            headers.add(name: routingHeader, value: String(bucket))
        }
        return HTTPRequestHead(version: .http1_1, method: exchange.head.method, uri: exchange.head.uri, headers: headers)
    }

    private func clientHead(for head: HTTPResponseHead, exchange: Exchange) -> HTTPResponseHead {
        var headers: HTTPHeaders
        if head.status == .switchingProtocols && exchange.isUpgrade {
            headers = head.headers
            headers.replaceOrAdd(name: "x-grayscale-version", value: exchange.target.versionHeader)
        } else {
            // The response's framing is the proxy's too: a length it knows, else chunked for
            // HTTP/1.1 clients, else (HTTP/1.0, or HEAD with no length) the end of the connection.
            var lengths = 0
            var length: String?
            for (name, value) in head.headers where isASCIICaseInsensitiveEqual(name, "content-length") {
                lengths += 1
                length = value
            }
            headers = Self.strippingHopByHop(head.headers, reserving: 4) { name in
                Self.replacedDownstream.contains { isASCIICaseInsensitiveEqual(name, $0) }
            }
            if lengths == 1, let length, length.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                headers.add(name: "content-length", value: length)
            } else if exchange.head.method == .HEAD || exchange.head.version.major < 1 || (exchange.head.version.major == 1 && exchange.head.version.minor == 0) {
                exchange.keepAlive = false
            }
            if !exchange.keepAlive { headers.add(name: "connection", value: "close") }
            headers.add(name: "x-grayscale-version", value: exchange.target.versionHeader)
        }
        if let cookie = exchange.stickyCookie { headers.add(name: "set-cookie", value: cookie) }
        return HTTPResponseHead(version: exchange.head.version, status: head.status, headers: headers)
    }

    static func isUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
            && head.headers.first(name: "upgrade")?.lowercased() == "websocket"
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

    /// After a 101, both connections stop speaking HTTP: remove the codecs and glue the bytes.
    private func startTunnel(_ exchange: Exchange, upstream: UpstreamConnection, context: ChannelHandlerContext) {
        state = .tunnel
        upstream.handler.exchange = nil
        finish(exchange, status: .switchingProtocols, errorClass: nil, error: nil)
        let (clientGlue, upstreamGlue) = GlueHandler.matchedPair()
        do {
            let client = context.pipeline.syncOperations, server = upstream.channel.pipeline.syncOperations
            // Upstream: glue first, then drop the codecs (the decoder forwards any bytes it still holds).
            try server.addHandler(upstreamGlue, position: .before(upstream.handler))
            server.removeHandler(upstream.handler, promise: nil)
            server.removeHandler(name: UpstreamConnection.encoderName, promise: nil)
            server.removeHandler(name: UpstreamConnection.decoderName, promise: nil)
            // Client: the same, after this handler has gone.
            try client.addHandler(clientGlue, position: .after(self))
            client.removeHandler(name: Self.name, promise: nil)
            for name in Self.serverHandlerNames { client.removeHandler(name: name, promise: nil) }
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        } catch {
            context.close(promise: nil)
            upstream.channel.close(promise: nil)
        }
    }
}

/// Compares header names without allocating lowercased copies.
@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: some StringProtocol, _ rhs: StaticString) -> Bool {
    let right = UnsafeBufferPointer(start: rhs.utf8Start, count: rhs.utf8CodeUnitCount)
    guard lhs.utf8.count == right.count else { return false }
    return zip(lhs.utf8, right).allSatisfy { $0 | 0x20 == $1 | 0x20 }
}

@inline(__always)
func isASCIICaseInsensitiveEqual(_ lhs: some StringProtocol, _ rhs: some StringProtocol) -> Bool {
    lhs.utf8.count == rhs.utf8.count && zip(lhs.utf8, rhs.utf8).allSatisfy { $0 | 0x20 == $1 | 0x20 }
}
