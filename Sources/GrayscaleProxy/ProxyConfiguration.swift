import Foundation
import NIOCore

/// How the proxy listens, finds users and services, and protects itself.
public struct ProxyConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var identity: IdentitySource
    public var matching: ServiceMatching
    /// Larger request header blocks are refused with 431.
    public var maxHeaderBytes: Int
    /// Larger request bodies are refused with 413.
    public var maxBodyBytes: Int
    /// A client connection with no request in flight is closed after this long.
    public var idleTimeout: TimeAmount
    public var upstreamConnectTimeout: TimeAmount
    /// No response head from the upstream within this long answers 504.
    public var upstreamResponseTimeout: TimeAmount
    /// Connections beyond this many are closed at once.
    public var maxConnections: Int
    /// Idle keep-alive connections kept per upstream and event loop.
    public var maxIdleUpstreamConnections: Int
    /// When set, each forwarded request carries the bucket a platform's routing rules
    /// (Tencent SCF aliases) need to pick the version the split chose.
    public var routingHeader: String?
    /// A WebSocket on a release the routing no longer serves (a rolled-back canary) gets a
    /// close frame with code 1012 at once and its connection is closed at most this long after.
    public var webSocketDrainGrace: TimeAmount = .seconds(10)
    /// The wall clock for statistics windows and the access log.
    public var now: @Sendable () -> Date

    public init(
        host: String = "127.0.0.1", port: Int = 8080, identity: IdentitySource = IdentitySource(),
        matching: ServiceMatching = ServiceMatching(), maxHeaderBytes: Int = 32 * 1024, maxBodyBytes: Int = 10 * 1024 * 1024,
        idleTimeout: TimeAmount = .seconds(60), upstreamConnectTimeout: TimeAmount = .seconds(2),
        upstreamResponseTimeout: TimeAmount = .seconds(30), maxConnections: Int = 10_000, maxIdleUpstreamConnections: Int = 128,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.host = host
        self.port = port
        self.identity = identity
        self.matching = matching
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.idleTimeout = idleTimeout
        self.upstreamConnectTimeout = upstreamConnectTimeout
        self.upstreamResponseTimeout = upstreamResponseTimeout
        self.maxConnections = maxConnections
        self.maxIdleUpstreamConnections = maxIdleUpstreamConnections
        self.now = now
    }
}
