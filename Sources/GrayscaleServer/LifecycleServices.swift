import Foundation
import GrayscaleProxy
import GrayscaleStore
import Logging
import ServiceLifecycle

/// Rebuilds the proxy's routing table whenever the database changes.
public struct SplitWatchService: Service {
    let database: GrayscaleDatabase
    let proxy: ProxyServer
    let matching: ServiceMatching
    let logger: Logger

    public init(database: GrayscaleDatabase, proxy: ProxyServer, matching: ServiceMatching, logger: Logger) {
        self.database = database
        self.proxy = proxy
        self.matching = matching
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await database.watchServiceStates(onChange: { states in
                let table = RoutingTable(states: states, matching: matching)
                proxy.update(table)
                for (service, problem) in table.unroutable { logger.warning("service not routable", metadata: ["service": "\(service)", "why": "\(problem)"]) }
                logger.info("routing table updated", metadata: ["splits": "\(states.compactMap { $0.split.map { "\($0.service)#\($0.revision)" } }.joined(separator: " "))"])
            }, onProblem: { problem, retryIn in
                // The proxy keeps routing by the last table it had.
                logger.error("cannot read the splits; the proxy keeps its last routing table", metadata: [
                    "problem": "\(problem.message)", "retryIn": "\(retryIn)"])
            })
        }
    }
}

/// Waits for SIGTERM/SIGINT, then stops accepting and flushes.
public struct ShutdownService: Service {
    let logger: Logger
    let onShutdown: @Sendable () async throws -> Void

    public init(logger: Logger, onShutdown: @escaping @Sendable () async throws -> Void) {
        self.logger = logger
        self.onShutdown = onShutdown
    }

    public func run() async throws {
        try? await gracefulShutdown()
        logger.info("shutting down: no new connections; in-flight requests finish")
        try await onShutdown()
    }
}
