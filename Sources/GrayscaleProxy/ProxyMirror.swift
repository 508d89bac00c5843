import Foundation
import GrayscaleCore
import NIOCore
import NIOHTTP1

/// One sampled safe request of stable's and its copy to the canary. The copy goes only
/// once stable's side is settled (its answer's head came, or it failed, or its user
/// left): the canary never wins a race on shared state (a single-use code in a GET, a
/// rate limit, a session) against the user's own request. Each side is judged by its
/// answer's head against the same limit (`MirrorPairs.record(stable:canary:limitMicros:)`);
/// whichever side ends last records the pair. Everything runs on the client connection's
/// event loop.
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
    /// The body a copy of a route marked safe carries (its length known from the request's head), as it is read.
    private var body: ByteBuffer?
    private let bodyLength: Int
    /// A copy carries a body up to this size (a route marked safe with more is not copied).
    static let maxBody = 64 * 1024
    private var stable: MirrorSide?
    private var canaryAnswer: MirrorSide?
    private var limitMicros: UInt64
    /// Recorded already, or dropped (nothing to compare).
    private var closed = false

    init(service: String, canary: ServiceRoute.Target, shared: ProxyShared, pool: UpstreamPool, method: HTTPMethod, path: String,
         appId: String?, request: ByteBuffer, bodyLength: Int = 0) {
        self.bodyLength = bodyLength
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

    /// Stable's side is settled: its head (status and time from its request being written),
    /// or none. `cutoffMicros`: the user left that long after stable's request was written,
    /// before its head came; both sides are then judged by that moment. The copy goes now.
    func stableSettled(_ side: MirrorSide, cutoffMicros: UInt64? = nil) {
        guard stable == nil, !closed else { return }
        stable = side
        if let cutoffMicros { limitMicros = min(limitMicros, cutoffMicros) }
        sendIfReady()
    }

    /// A piece of the request's body (a copy of a route marked safe carries it whole).
    func appendBody(_ piece: ByteBuffer) {
        guard var body, !closed else { return }
        self.body = nil
        var piece = piece
        body.writeBuffer(&piece)
        guard body.readableBytes <= bodyLength else { return drop() }
        self.body = body
        sendIfReady()
    }

    /// The copy goes once stable's side is settled and the body it carries has been read whole.
    private func sendIfReady() {
        guard !closed, stable != nil, let request, (body?.readableBytes ?? 0) == bodyLength else { return }
        self.request = nil
        if !MirrorExchange.start(pair: self, pool: pool, shared: shared, target: canary, method: method, path: path, appId: appId,
                                 head: request, body: body) {
            closed = true  // too many copies in flight to this canary: this pair is not made (whatever either side did)
        }
        body = nil
    }

    /// No pair: stable's request never reached its upstream (its user left while it connected),
    /// the copy never reached the canary, or the body was not what its head said.
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

/// The copy of a stable request sent to the canary: on a new connection of its own, timed
/// from when it is written, ended at its answer's head (the connection is closed then, the
/// body never read: an endless or huge answer costs nothing). A canary that hangs, resets
/// or answers garbage ends only this copy, as a side without an answer; the user's answer
/// was settled before it went.
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
    private var ended = false

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
        guard pool.mirrorsInFlight[target.upstream, default: 0] < UpstreamPool.maxMirrors else { return false }
        let mirror = MirrorExchange(pair: pair, pool: pool, shared: shared, target: target, method: method, path: path, appId: appId,
                                    head: head, body: body)
        pool.mirrors[ObjectIdentifier(mirror)] = mirror
        pool.mirrorsInFlight[target.upstream, default: 0] += 1
        // Past stable's own limit and the slack of its timer: a side is judged by the limit, the timer only ends the wait.
        let timeout = shared.configuration.upstreamResponseTimeout
        mirror.timer = pool.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanoseconds + timeout.nanoseconds / 4) + .seconds(1)) { [weak mirror] in
            mirror?.end(.noAnswer, why: "the canary did not answer the mirrored request in time", status: 504)
        }
        pool.connection(to: target.upstream, fresh: true) { [weak mirror] result in
            guard let mirror, !mirror.ended else {
                if case .success(let connection) = result { connection.channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure(let error):
                // No pair: stable's request went on a pooled connection, the copy on a new one, so a
                // failure to connect (a full accept queue, no local port) would fall on the canary alone.
                mirror.end(nil, why: "connect: \(error)", status: 502)
            case .success(let connection): mirror.send(on: connection)
            }
        }
        return true
    }

    private func send(on connection: UpstreamConnection) {
        self.connection = connection
        guard connection.channel.isActive else {
            // Closed between its connect and now: its handler had nobody to tell.
            return end(.noAnswer, why: "the canary closed the connection before answering", status: 502)
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
        guard case .head(let answer) = part, let sentAt else { return }
        let micros = UInt64(max(0, (NIODeadline.now() - sentAt).nanoseconds / 1000))
        end(MirrorSide(status: Int(answer.code), headMicros: micros), why: nil, status: Int(answer.code))
    }

    func upstreamClosed() {
        end(.noAnswer, why: "the canary closed the connection before answering", status: 502)
    }

    func upstreamFailed(_ error: Error) {
        end(.noAnswer, why: "the canary's answer could not be read: \(error)", status: 502)
    }

    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}

    /// Ends the copy: `side` is what the canary did, nil when the copy never reached it (no pair).
    private func end(_ side: MirrorSide?, why: String?, status: Int) {
        guard !ended else { return }
        ended = true
        timer?.cancel()
        timer = nil
        pool.mirrors[ObjectIdentifier(self)] = nil
        pool.mirrorsInFlight[target.upstream, default: 1] -= 1
        if pool.mirrorsInFlight[target.upstream] == 0 { pool.mirrorsInFlight[target.upstream] = nil }
        if let connection {
            connection.handler.exchange = nil
            // The body is never read and the connection never reused; closed with a reset (SO_LINGER 0), so
            // that copies leave no TIME_WAIT socket behind and cannot run the proxy out of local ports.
            let channel = connection.channel
            if let options = channel as? SocketOptionProvider {
                options.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
        }
        connection = nil
        if let side { pair.canarySettled(side) } else { pair.drop() }
        let micros = side?.headMicros ?? UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000))
        shared.accessLog?.append(AccessLogLine(
            time: shared.configuration.now(), service: pair.service, release: target.release.number, label: target.release.label,
            route: "mirror", appId: appId, bucket: nil, method: method.rawValue, path: path, status: status, latencyMs: Double(micros) / 1000,
            upstream: target.upstreamText, bytesIn: 0, bytesOut: 0,
            error: "mirrored copy of a stable request; its answer was discarded" + (why.map { ": \($0)" } ?? "")))
    }
}
