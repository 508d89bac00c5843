import Foundation
import GrayscaleProxy
import GrayscaleStore
import Logging
import ServiceLifecycle

/// Rebuilds the proxy's routing table whenever the database changes (on PostgreSQL: when
/// any replica's write sends the routing NOTIFY), and hands it to the fleet's long poll.
public struct SplitWatchService: Service {
    let database: GrayscaleDatabase
    let proxy: ProxyServer
    let matching: ServiceMatching
    let logger: Logger
    let routing: RoutingBroadcast?

    public init(database: GrayscaleDatabase, proxy: ProxyServer, matching: ServiceMatching, logger: Logger, routing: RoutingBroadcast? = nil) {
        self.database = database
        self.proxy = proxy
        self.matching = matching
        self.logger = logger
        self.routing = routing
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await database.watchServiceStates(onChange: { states in
                let table = RoutingTable(states: states, matching: matching)
                proxy.update(table)
                routing?.publish(states)
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

/// Waits for SIGTERM/SIGINT (or the group's cancellation), then runs every step of the
/// shutdown in order: one that fails or is cancelled does not skip the ones after it
/// (the admin server still stops, the access log is still flushed and closed).
public struct ShutdownService: Service {
    public struct Step: Sendable {
        let name: String
        let run: @Sendable () async throws -> Void

        public init(_ name: String, _ run: @escaping @Sendable () async throws -> Void) {
            self.name = name
            self.run = run
        }
    }

    let logger: Logger
    let steps: [Step]

    public init(logger: Logger, steps: [Step]) {
        self.logger = logger
        self.steps = steps
    }

    public func run() async throws {
        try? await gracefulShutdown()
        logger.info("shutting down: no new connections; in-flight requests finish")
        // Detached from the group's cancellation: the steps must run to the end.
        let steps = self.steps, logger = self.logger
        await Task.detached {
            for step in steps {
                do { try await step.run() } catch {
                    logger.error("shutdown step failed; going on with the next", metadata: ["step": "\(step.name)", "problem": "\(error)"])
                }
            }
        }.value
    }
}
