import Foundation
import GrayscaleCore
import NIOCore
import NIOHTTP1

/// One sampled safe request of stable's and its copy to the canary. The copy goes only
/// once stable's side is settled (its answer's head came, or it failed, or its user
/// left) and the body it carries (a route marked safe) has been read whole: the canary
/// never wins a race on shared state (a single-use code in a GET, a rate limit, a
/// session) against the user's own request. Each side is judged by its answer's head
/// against the same limit (`MirrorPairs.record(stable:canary:limitMicros:)`); whichever
/// side ends last records the pair. Everything runs on the client connection's event loop.
final class MirrorPair {
    let service: String
    let canary: ServiceRoute.Target
    private let shared: ProxyShared
    private let pool: UpstreamPool
    private let method: HTTPMethod
    private let path: String
    private let appId: String?
    /// The copy's request head, until it is sent.
    private var request: ByteBuffer?
    /// The body the copy carries, as the client's is read (`expectedBody` bytes in all).
    private var body: ByteBuffer?
    private let expectedBody: Int
    /// A copy carries a body up to this size (a route marked safe with more is not copied).
    static let maxBody = 64 * 1024
    private var stable: MirrorSide?
    private var canaryAnswer: MirrorSide?
    private var limitMicros: UInt64
    /// Recorded already, or dropped (nothing to compare).
    private var closed = false

    init(service: String, canary: ServiceRoute.Target, shared: ProxyShared, pool: UpstreamPool, method: HTTPMethod, path: String,
         appId: String?, request: ByteBuffer, bodyLength: Int = 0) {
        expectedBody = bodyLength
        if bodyLength > 0 { body = ByteBuffer() }
        self.service = service
        self.canary = canary
        self.shared = shared
        self.pool = pool
        self.method = method
        self.path = path
        self.appId = appId
        self.request = request
        limitMicros = UInt64(max(0, shared.configuration.upstreamResponseTimeout.nanoseconds / 1000))
    }

    /// Whether the copy still waits for body bytes.
    var wantsBody: Bool { !closed && body.map { $0.readableBytes < expectedBody } ?? false }

    /// Stable's side is settled: its head (status, time from its request being written, and
    /// whether its connection was reused), or none. `cutoffMicros`: the user left that long
    /// after stable's request was written, before its head came; both sides are then judged
    /// by that moment. The copy goes now, or once its body is whole.
    func stableSettled(_ side: MirrorSide, cutoffMicros: UInt64? = nil) {
        guard stable == nil, !closed else { return }
        stable = side
        if let cutoffMicros { limitMicros = min(limitMicros, cutoffMicros) }
        sendIfReady()
    }

    /// Bytes of the client's body, as they are read (whatever became of stable's exchange meanwhile).
    func appendBody(_ piece: ByteBuffer) {
        guard var body, !closed else { return }
        self.body = nil
        var piece = piece
        body.writeBuffer(&piece)
        guard body.readableBytes <= expectedBody else { return drop() }
        self.body = body
        sendIfReady()
    }

    private func sendIfReady() {
        guard !closed, stable != nil, let request, (body?.readableBytes ?? 0) == expectedBody else { return }
        self.request = nil
        if !MirrorExchange.start(pair: self, pool: pool, shared: shared, target: canary, method: method, path: path, appId: appId,
                                 head: request, body: body) {
            closed = true  // too many copies in flight to this canary: this pair is not made (whatever either side did)
        }
        body = nil
    }

    /// No pair: stable's request never reached its upstream (its user left while it connected),
    /// the client's body never came whole, or the copy never reached the canary.
    func drop() {
        closed = true
        body = nil
    }

    func canarySettled(_ side: MirrorSide) {
        canaryAnswer = side
        complete()
    }

    private func complete() {
        guard !closed, let stable, let canaryAnswer else { return }
        closed = true
        var pairs = MirrorPairs()
        pairs.record(stable: stable, canary: canaryAnswer, limitMicros: limitMicros)
        shared.statistics.recordMirror(service: service, canary: canary.release, at: shared.configuration.now(), pairs: pairs)
        shared.metrics?.mirrored(service: service, release: canary.release, stableFailed: pairs.stableOnlyFailures + pairs.bothFailed > 0,
                                 canaryFailed: pairs.canaryOnlyFailures + pairs.bothFailed > 0)
    }
}

/// The copy of a stable request sent to the canary: on a connection of the loop's pool
/// (kept alive as stable's are, so that a new connection's setup at the canary is not
/// taken for its latency), timed from when it is written, settled at its answer's head;
/// the rest of the answer is read and thrown away (past `maxDiscard` bytes, or the
/// timer, the connection is closed instead). A canary that hangs, resets or answers
/// garbage ends only this copy, as a side without an answer; the user's answer was
/// settled before it went.
final class MirrorExchange: UpstreamExchange {
    private let pair: MirrorPair
    private let pool: UpstreamPool
    private let shared: ProxyShared
    private let target: ServiceRoute.Target
    private let method: HTTPMethod
    private let path: String
    private let appId: String?
    private let head: ByteBuffer
    private let body: ByteBuffer?
    private let started = NIODeadline.now()
    private var connection: UpstreamConnection?
    private var sentAt: NIODeadline?
    private var timer: Scheduled<Void>?
    /// The pair was told what the canary did.
    private var settled = false
    /// The connection went back to the pool or was closed.
    private var finished = false
    private var retried = false
    private var keepAlive = true
    private var discarded = 0
    /// An answer's body is read and dropped up to this many bytes; past it the connection is closed.
    static let maxDiscard = 1 << 20

    init(pair: MirrorPair, pool: UpstreamPool, shared: ProxyShared, target: ServiceRoute.Target, method: HTTPMethod, path: String,
         appId: String?, head: ByteBuffer, body: ByteBuffer?) {
        self.body = body
        self.pair = pair
        self.pool = pool
        self.shared = shared
        self.target = target
        self.method = method
        self.path = path
        self.appId = appId
        self.head = head
    }

    /// Sends the copy; false (nothing sent) when this canary has `UpstreamPool.maxMirrors`
    /// copies in flight on this loop already.
    static func start(pair: MirrorPair, pool: UpstreamPool, shared: ProxyShared, target: ServiceRoute.Target, method: HTTPMethod,
                      path: String, appId: String?, head: ByteBuffer, body: ByteBuffer? = nil) -> Bool {
        guard pool.mirrors[target.upstream, default: [:]].count < UpstreamPool.maxMirrors else { return false }
        let mirror = MirrorExchange(pair: pair, pool: pool, shared: shared, target: target, method: method, path: path, appId: appId,
                                    head: head, body: body)
        pool.mirrors[target.upstream, default: [:]][ObjectIdentifier(mirror)] = mirror
        // Past stable's own limit and the slack of its timer: a side is judged by the limit, the timer only ends the wait.
        let timeout = shared.configuration.upstreamResponseTimeout
        mirror.timer = pool.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanoseconds + timeout.nanoseconds / 4) + .seconds(1)) { [weak mirror] in
            mirror?.settle(.noAnswer, why: "the canary did not answer the mirrored request in time", status: 504)
            mirror?.finish(reuse: false)
        }
        mirror.connect(fresh: false)
        return true
    }

    private func connect(fresh: Bool) {
        if !fresh, let idle = pool.idleConnection(to: target.upstream) { return send(on: idle) }
        pool.connection(to: target.upstream, fresh: true) { [weak self] result in
            guard let self, !self.finished else {
                if case .success(let connection) = result { connection.channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure(let error):
                // No pair: stable's request went on a pooled connection, the copy on a new one, so a
                // failure to connect (a full accept queue, no local port) would fall on the canary alone.
                self.settle(nil, why: "connect: \(error)", status: 502)
                self.finish(reuse: false)
            case .success(let connection): self.send(on: connection)
            }
        }
    }

    private func send(on connection: UpstreamConnection) {
        self.connection = connection
        guard connection.channel.isActive else {
            // Closed between its connect (or its time in the pool) and now: its handler had nobody to tell.
            return lost("the canary closed the connection before answering", mayRetry: true)
        }
        connection.handler.exchange = self
        connection.handler.expectResponse(to: method)
        sentAt = .now()
        if let body, body.readableBytes > 0 {
            connection.channel.write(head, promise: nil)
            connection.channel.writeAndFlush(body, promise: nil)
        } else {
            connection.channel.writeAndFlush(head, promise: nil)
        }
    }

    func upstreamRead(_ part: UpstreamPart) {
        switch part {
        case .head(let answer):
            guard let sentAt, let connection else { return }
            keepAlive = ProxyHandler.ConnectionTokens(answer).keepsAlive(answer.version) && answer.code != 101
            let micros = microsSince(sentAt)
            settle(MirrorSide(status: Int(answer.code), headMicros: micros, reused: connection.reused), why: nil, status: Int(answer.code))
            if answer.code == 101 { finish(reuse: false) }
        case .body(let bytes):
            discarded += bytes.readableBytes
            if discarded > Self.maxDiscard { finish(reuse: false) }
        case .end:
            finish(reuse: true)
        }
    }

    func upstreamClosed() { lost("the canary closed the connection before answering", mayRetry: true) }

    /// A malformed answer is the canary's answer (never sent again); a reset is its going away, as a close is.
    func upstreamFailed(_ error: Error) {
        lost("the canary's answer could not be read: \(error)", mayRetry: !(error is HTTP1.ParseError))
    }

    /// The connection went before the answer was whole. Before any of it came on a pooled
    /// connection (the canary's keep-alive ran out as it was reused), a copy without a body
    /// of an idempotent method goes again once on a new one, as a user's request would.
    private func lost(_ why: String, mayRetry: Bool) {
        if mayRetry, !settled, connection?.reused == true, !retried, !finished,
           resendsOnLostConnection(method, bodyBytes: body?.readableBytes ?? 0) {
            retried = true
            connection?.handler.exchange = nil
            connection = nil
            sentAt = nil
            return connect(fresh: true)
        }
        settle(.noAnswer, why: why, status: 502)
        finish(reuse: false)
    }

    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}

    /// Tells the pair what the canary did (nil: the copy never reached it, no pair), once; logs the copy.
    private func settle(_ side: MirrorSide?, why: String?, status: Int) {
        guard !settled else { return }
        settled = true
        if let side { pair.canarySettled(side) } else { pair.drop() }
        let micros = side?.headMicros ?? microsSince(started)
        shared.accessLog?.append(AccessLogLine(
            time: shared.configuration.now(), service: pair.service, release: target.release.number, label: target.release.label,
            route: "mirror", appId: appId, bucket: nil, method: method.rawValue, path: path, status: status, latencyMs: Double(micros) / 1000,
            upstream: target.upstreamText, bytesIn: 0, bytesOut: 0,
            error: "mirrored copy of a stable request; its answer was discarded" + (why.map { ": \($0)" } ?? "")))
    }

    /// Hands the connection back to the pool when its answer ended cleanly, else closes it; once.
    private func finish(reuse: Bool) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        pool.mirrors[target.upstream]?[ObjectIdentifier(self)] = nil
        if pool.mirrors[target.upstream]?.isEmpty == true { pool.mirrors[target.upstream] = nil }
        guard let connection else { return }
        self.connection = nil
        connection.handler.exchange = nil
        if reuse, settled, keepAlive, connection.handler.reusable, connection.channel.isActive {
            pool.release(connection)
        } else {
            connection.channel.close(promise: nil)
        }
    }
}
