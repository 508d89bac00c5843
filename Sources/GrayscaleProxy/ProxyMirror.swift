import Foundation
import GrayscaleCore
import NIOCore
import NIOHTTP1

/// The two answers to one mirrored request: stable's, which its user got, and the
/// canary's to the copy, which nobody gets. Both sides end on the client connection's
/// event loop; whichever ends last records the pair (`ProxyStatistics.recordMirror`).
final class MirrorPair {
    struct Side {
        var failed: Bool
        var micros: UInt64
    }

    let service: String
    let canary: ReleaseRef
    private let shared: ProxyShared
    private var stable: Side?
    private var canaryAnswer: Side?
    /// Recorded already, or void (the user left before stable answered: nothing to compare).
    private var closed = false

    init(service: String, canary: ReleaseRef, shared: ProxyShared) {
        self.service = service
        self.canary = canary
        self.shared = shared
    }

    func stableEnded(failed: Bool, micros: UInt64) {
        stable = Side(failed: failed, micros: micros)
        complete()
    }

    func canaryEnded(failed: Bool, micros: UInt64) {
        canaryAnswer = Side(failed: failed, micros: micros)
        complete()
    }

    /// Stable's answer was not counted (its client went away): the pair is not either.
    func abandon() { closed = true }

    private func complete() {
        guard !closed, let stable, let canaryAnswer else { return }
        closed = true
        shared.statistics.recordMirror(service: service, canary: canary, at: shared.configuration.now(), stableFailed: stable.failed,
                                       canaryFailed: canaryAnswer.failed, stableMs: Double(stable.micros) / 1000,
                                       canaryMs: Double(canaryAnswer.micros) / 1000)
        shared.metrics?.mirrored(service: service, release: canary, stableFailed: stable.failed, canaryFailed: canaryAnswer.failed)
    }
}

/// One copy of a stable request sent to the canary: on its own upstream connection, with
/// its own deadline, its answer read and thrown away. Nothing here touches the user's
/// exchange: a canary that hangs, resets or answers garbage ends only this copy (as a
/// failure of the canary's), and the user's answer never waits for it.
final class MirrorExchange: UpstreamExchange {
    private let pair: MirrorPair
    private let pool: UpstreamPool
    private let shared: ProxyShared
    private let target: ServiceRoute.Target
    private let method: HTTPMethod
    private let path: String
    private let appId: String?
    private let head: ByteBuffer
    private let started = NIODeadline.now()
    private var connection: UpstreamConnection?
    private var status: Int?
    private var keepAlive = true
    private var retried = false
    private var timer: Scheduled<Void>?
    private var ended = false

    init(pair: MirrorPair, pool: UpstreamPool, shared: ProxyShared, target: ServiceRoute.Target, method: HTTPMethod, path: String,
         appId: String?, head: ByteBuffer) {
        self.appId = appId
        self.pair = pair
        self.pool = pool
        self.shared = shared
        self.target = target
        self.method = method
        self.path = path
        self.head = head
    }

    /// Sends the copy; false (and nothing sent) when the loop has too many copies in flight.
    static func start(pair: MirrorPair, pool: UpstreamPool, shared: ProxyShared, target: ServiceRoute.Target, method: HTTPMethod,
                      path: String, appId: String?, head: ByteBuffer) -> Bool {
        guard pool.mirrors.count < UpstreamPool.maxMirrors else { return false }
        let mirror = MirrorExchange(pair: pair, pool: pool, shared: shared, target: target, method: method, path: path, appId: appId, head: head)
        pool.mirrors[ObjectIdentifier(mirror)] = mirror
        mirror.timer = pool.eventLoop.assumeIsolated().scheduleTask(in: shared.configuration.upstreamResponseTimeout) { [weak mirror] in
            mirror?.end(failed: true, why: "the canary did not answer the mirrored request in time")
        }
        mirror.connect(fresh: false)
        return true
    }

    private func connect(fresh: Bool) {
        if !fresh, let idle = pool.idleConnection(to: target.upstream) {
            send(on: idle)
            return
        }
        pool.connection(to: target.upstream, fresh: true) { [weak self, pool] result in
            guard let self, !self.ended else {
                if case .success(let connection) = result { pool.release(connection) }
                return
            }
            switch result {
            case .failure(let error): self.end(failed: true, why: "connect: \(error)")
            case .success(let connection): self.send(on: connection)
            }
        }
    }

    private func send(on connection: UpstreamConnection) {
        self.connection = connection
        connection.handler.exchange = self
        connection.handler.expectResponse(to: method)
        connection.channel.writeAndFlush(head, promise: nil)
    }

    func upstreamRead(_ part: UpstreamPart) {
        switch part {
        case .head(let head):
            status = Int(head.code)
            keepAlive = ProxyHandler.ConnectionTokens(head).keepsAlive(head.version) && head.code != 101
        case .body:
            break  // nobody reads the canary's answer
        case .end:
            let code = status ?? 502
            end(failed: code >= 500, why: nil, reusable: true)
        }
    }

    func upstreamClosed() {
        // A pooled connection the canary closed as it was reused: sent again once, as the
        // user's request would be (otherwise the copy alone would fail where stable's retried).
        if status == nil, connection?.reused == true, !retried, !ended {
            retried = true
            connection = nil
            connect(fresh: true)
            return
        }
        end(failed: true, why: status == nil ? "the canary closed the connection before answering" : "the canary's answer was cut short")
    }

    func upstreamFailed(_ error: Error) {
        end(failed: true, why: "malformed answer from the canary: \(error)")
    }

    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}

    private func end(failed: Bool, why: String?, reusable: Bool = false) {
        guard !ended else { return }
        ended = true
        timer?.cancel()
        timer = nil
        pool.mirrors[ObjectIdentifier(self)] = nil
        if let connection {
            connection.handler.exchange = nil
            if reusable, keepAlive, connection.handler.reusable, connection.channel.isActive {
                pool.release(connection)
            } else {
                connection.channel.close(promise: nil)
            }
        }
        connection = nil
        let micros = UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000))
        pair.canaryEnded(failed: failed, micros: micros)
        // The canary's own status when it gave one that says it failed; the proxy's 504 or 502 otherwise.
        let code: Int
        if let status, failed == (status >= 500) {
            code = status
        } else {
            code = why?.hasPrefix("the canary did not answer") == true ? 504 : 502
        }
        shared.accessLog?.append(AccessLogLine(
            time: shared.configuration.now(), service: pair.service, release: target.release.number, label: target.release.label,
            route: "mirror", appId: appId, bucket: nil, method: method.rawValue, path: path, status: code, latencyMs: Double(micros) / 1000,
            upstream: target.upstreamText, bytesIn: 0, bytesOut: 0,
            error: "mirrored copy of a stable request; its answer was discarded" + (why.map { ": \($0)" } ?? "")))
    }
}
