import Foundation
import GrayscaleCore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// What every connection of one proxy shares: settings, the current routing table,
/// statistics and the access log.
final class ProxyShared: Sendable {
    let configuration: ProxyConfiguration
    let statistics: ProxyStatistics
    let accessLog: AccessLog?
    let metrics: RequestMetrics?
    private let tableBox: NIOLockedValueBox<RoutingTable>
    private let openConnections = Atomic<Int>(0)
    private let activeExchanges = Atomic<Int>(0)
    private let drainingFlag = Atomic<Bool>(false)

    /// The open WebSocket tunnels: which release each serves, and how to end it.
    struct Tunnel {
        var service: String
        var release: Int
        /// Ends it: a close frame (1012) now, the connection cut after the grace.
        var drain: @Sendable (TimeAmount) -> Void
    }
    private let tunnels = NIOLockedValueBox<[ObjectIdentifier: Tunnel]>([:])

    /// Registers a tunnel until `channel` (the client's) closes; `drain` runs on its event loop.
    func tunnelOpened(_ channel: Channel, service: String, release: Int, drain: @escaping @Sendable (TimeAmount) -> Void) {
        let id = ObjectIdentifier(channel)
        let eventLoop = channel.eventLoop
        tunnels.withLockedValue { $0[id] = Tunnel(service: service, release: release, drain: { grace in eventLoop.execute { drain(grace) } }) }
        channel.closeFuture.whenComplete { [tunnels] _ in _ = tunnels.withLockedValue { $0.removeValue(forKey: id) } }
        // A rollback that came between the upgrade request and its 101 has scanned the tunnels
        // already: the table is read after registering, so one of the two always drains it.
        let table = self.table
        if !Self.routes(table, service: service, release: release),
           let tunnel = tunnels.withLockedValue({ $0.removeValue(forKey: id) }) {
            tunnel.drain(drainGrace(service, in: table))
        }
    }

    /// How long a WebSocket of `service` gets to close when its release loses it: what the
    /// split says (the policy's `webSocketDrain`, written by the controller), else the proxy's own setting.
    func drainGrace(_ service: String, in table: RoutingTable) -> TimeAmount {
        table.routes[service]?.split.webSocketDrain.map { .seconds(Int64($0)) } ?? configuration.webSocketDrainGrace
    }

    /// Whether `table` sends any request of `service` to `release` (its stable or its canary).
    static func routes(_ table: RoutingTable, service: String, release: Int) -> Bool {
        guard let route = table.routes[service] else { return false }
        return route.stable.release.number == release || route.canary?.release.number == release
    }

    /// Open WebSockets by service and release.
    var webSockets: [String: [Int: Int]] {
        tunnels.withLockedValue { tunnels in
            tunnels.values.reduce(into: [:]) { counts, tunnel in counts[tunnel.service, default: [:]][tunnel.release, default: 0] += 1 }
        }
    }

    /// Ends every tunnel to a release `table` no longer routes to (neither its service's stable
    /// nor its canary): a rollback sends the canary's WebSockets back to stable. Returns how many.
    @discardableResult
    func drainTunnels(notIn table: RoutingTable) -> Int {
        let ending = tunnels.withLockedValue { tunnels -> [Tunnel] in
            let gone = tunnels.filter { _, tunnel in !Self.routes(table, service: tunnel.service, release: tunnel.release) }
            for id in gone.keys { tunnels.removeValue(forKey: id) }
            return Array(gone.values)
        }
        for tunnel in ending { tunnel.drain(drainGrace(tunnel.service, in: table)) }
        return ending.count
    }

    /// Set at shutdown: responses close their connections instead of keeping them alive.
    var isDraining: Bool { drainingFlag.load(ordering: .relaxed) }
    func startDraining() { drainingFlag.store(true, ordering: .relaxed) }

    init(configuration: ProxyConfiguration, table: RoutingTable, statistics: ProxyStatistics, accessLog: AccessLog?, metrics: RequestMetrics?) {
        self.configuration = configuration
        self.statistics = statistics
        self.accessLog = accessLog
        self.metrics = metrics
        self.tableBox = NIOLockedValueBox(table)
    }

    var table: RoutingTable {
        get { tableBox.withLockedValue { $0 } }
        set { tableBox.withLockedValue { $0 = newValue } }
    }

    /// Counts a new connection; false when the cap is reached.
    func connectionOpened() -> Bool {
        let count = openConnections.wrappingAdd(1, ordering: .relaxed).newValue
        if count > configuration.maxConnections {
            openConnections.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func connectionClosed() { openConnections.wrappingSubtract(1, ordering: .relaxed) }

    var connections: Int { openConnections.load(ordering: .relaxed) }

    func exchangeStarted() { activeExchanges.wrappingAdd(1, ordering: .relaxed) }
    func exchangeEnded() { activeExchanges.wrappingSubtract(1, ordering: .relaxed) }
    var exchanges: Int { activeExchanges.load(ordering: .relaxed) }
}

/// The embedded reverse proxy: HTTP/1.1 on one address, every request routed to the
/// stable or canary release of its service by the current `RoutingTable`.
public final class ProxyServer: Sendable {
    public let statistics: ProxyStatistics
    let shared: ProxyShared
    private let group: EventLoopGroup
    private let pools = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<UpstreamPool>]>([:])
    private let channel = NIOLockedValueBox<Channel?>(nil)

    public init(configuration: ProxyConfiguration, table: RoutingTable, statistics: ProxyStatistics = ProxyStatistics(),
                accessLog: AccessLog? = nil, metrics: RequestMetrics? = nil, group: EventLoopGroup) {
        self.statistics = statistics
        self.shared = ProxyShared(configuration: configuration, table: table, statistics: statistics, accessLog: accessLog, metrics: metrics)
        self.group = group
    }

    /// Swaps in a new routing table: new requests use it at once, requests in flight finish on the old one.
    public func update(_ table: RoutingTable) {
        shared.table = table
        shared.drainTunnels(notIn: table)
    }

    /// Open WebSockets by service and release number.
    public var webSockets: [String: [Int: Int]] { shared.webSockets }

    /// Client connections open now (the proxy's side: closed here even when the peer has not seen it yet).
    public var openConnections: Int { shared.connections }

    /// Stops accepting, lets the requests in flight finish (up to `timeout`), then
    /// closes every connection: a graceful shutdown.
    public func drain(timeout: Duration = .seconds(10)) async throws {
        guard let channel = channel.withLockedValue({ $0 }) else { return }
        shared.startDraining()
        if channel.isActive { try await channel.close() }
        // Requests already on the wire but not yet read get a moment to arrive.
        try await Task.sleep(for: .milliseconds(250))
        let deadline = ContinuousClock.now + timeout
        while shared.exchanges > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await stop()
    }

    /// Binds and starts accepting; returns the bound address (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let shared = self.shared
        // One upstream pool per event loop, made on its loop.
        // And one sweep of the client connections' deadlines per event loop.
        var pools: [ObjectIdentifier: NIOLoopBound<UpstreamPool>] = [:]
        var sweeps: [ObjectIdentifier: NIOLoopBound<ConnectionSweep>] = [:]
        for loop in group.makeIterator() {
            let configuration = shared.configuration
            pools[ObjectIdentifier(loop)] = try await loop.submit {
                NIOLoopBound(UpstreamPool(eventLoop: loop, connectTimeout: configuration.upstreamConnectTimeout,
                                          maxIdle: configuration.maxIdleUpstreamConnections), eventLoop: loop)
            }.get()
            sweeps[ObjectIdentifier(loop)] = try await loop.submit {
                NIOLoopBound(ConnectionSweep(eventLoop: loop, idleTimeout: configuration.idleTimeout,
                                             responseTimeout: configuration.upstreamResponseTimeout), eventLoop: loop)
            }.get()
        }
        self.pools.withLockedValue { [pools] in $0 = pools }
        let loopPools = pools, loopSweeps = sweeps
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // Each connection keeps its receive buffer between reads: start it small (a request
            // head fits) and let it grow for bodies, rather than 2 KiB for every idle connection.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard shared.connectionOpened() else {
                        channel.close(promise: nil)
                        return
                    }
                    let pool = loopPools[ObjectIdentifier(channel.eventLoop)]!.value
                    let sync = channel.pipeline.syncOperations
                    let sweep = loopSweeps[ObjectIdentifier(channel.eventLoop)]!.value
                    try sync.addHandler(ProxyHandler(shared: shared, pool: pool, sweep: sweep), name: ProxyHandler.name)
                }
            }
            .bind(host: shared.configuration.host, port: shared.configuration.port)
            .get()
        self.channel.withLockedValue { $0 = channel }
        return channel.localAddress!
    }

    /// Stops accepting new connections; connections already open finish their requests.
    public func stop() async throws {
        guard let channel = channel.withLockedValue({ $0 }) else { return }
        if channel.isActive { try await channel.close() }
        for (_, pool) in pools.withLockedValue({ $0 }) {
            try await pool.eventLoop.submit { pool.value.closeAll() }.get()
        }
        shared.accessLog?.flush()
    }
}
