import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleEdges
import GrayscaleProxy
import GrayscaleStore
import Logging
import NIOCore
import NIOPosix
import GrayscaleServer
import ServiceLifecycle

struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Run the embedded reverse proxy: every request to its service's stable or canary release.",
        discussion: """
            Splits written by any process (grayscale traffic set, the controller) take effect within a second.
            The HS256 secret for verifying tokens comes from $GRAYSCALE_JWT_SECRET or --jwt-secret-file, never an argument.
            """)

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Address to serve on.") var listen = "127.0.0.1:8080"
    @Option(help: "Follow this controller's routing table (the admin URL of grayscale serve) instead of a database of its own.")
    var controller: String?
    @Option(help: "Address of GET /stats (per-version statistics as JSON).") var admin = "127.0.0.1:8081"
    @Option(help: "Where the appId comes from: jwt, jwt:CLAIM, header:NAME, cookie:NAME, query:NAME.") var identity = "jwt"
    @Option(name: .customLong("jwt-secret-file"), help: "File holding the HS256 secret tokens must be signed with.")
    var jwtSecretFile: String?
    @Option(name: .customLong("host-route"), help: "HOST=SERVICE: requests for HOST go to SERVICE (repeatable).")
    var hostRoutes: [String] = []
    @Option(name: .customLong("prefix-route"), help: "/PREFIX=SERVICE: paths under PREFIX go to SERVICE (repeatable).")
    var prefixRoutes: [String] = []
    @Option(name: .customLong("access-log"), help: "JSON-lines access log file (SIGUSR1 reopens it, as nginx does for logrotate).")
    var accessLog = "grayscale-access.log"
    @Option(name: .customLong("access-log-max-mib"), help: "Rotate the access log past this many MiB.") var accessLogMaxMiB = 256
    @Option(name: .customLong("access-log-keep"), help: "Rotated access logs kept (access.log.1 is the newest).") var accessLogKeep = 5
    @Option(name: .customLong("max-body-bytes"), help: "Larger request bodies get 413.") var maxBodyBytes = 10 * 1024 * 1024
    @Option(name: .customLong("max-header-bytes"), help: "Larger header blocks get 431.") var maxHeaderBytes = 32 * 1024
    @Option(name: .customLong("max-connections"), help: "Client connections beyond this are closed.") var maxConnections = 10_000
    @Option(name: .customLong("idle-timeout"), help: "Close idle client connections after this long.") var idleTimeout = "60s"
    @Option(name: .customLong("upstream-timeout"), help: "No upstream response within this long gets 504.") var upstreamTimeout = "30s"
    @Option(name: .customLong("stats-window"), help: "Length of one statistics window.") var statsWindow = "10s"
    @Option(help: "Event loop threads (default: one per core).") var threads = System.coreCount
    @Option(name: .customLong("routing-header"), help: "Write each request's bucket into this header (for Tencent SCF alias rules).")
    var routingHeader: String?

    func validate() throws {
        guard accessLogMaxMiB >= 1 else { throw ValidationError("--access-log-max-mib: must be at least 1 (got \(accessLogMaxMiB))") }
        guard accessLogKeep >= 0 else { throw ValidationError("--access-log-keep: must be 0 or more (got \(accessLogKeep))") }
        for (name, value) in [("--idle-timeout", idleTimeout), ("--upstream-timeout", upstreamTimeout), ("--stats-window", statsWindow)]
        where (parseDuration(value) ?? 0) <= 0 {
            throw ValidationError("\(name): expected a duration such as 30s or 1m (got '\(value)')")
        }
        _ = try Self.address(listen, "--listen")
        _ = try Self.address(admin, "--admin")
        _ = try matching()
    }

    static func address(_ text: String, _ option: String) throws -> (host: String, port: Int) {
        guard let address = HostPort(parsing: text) else {
            throw ValidationError("\(option): expected HOST:PORT, e.g. 127.0.0.1:8080 (got '\(text)')")
        }
        return (address.host, address.port)
    }

    func matching() throws -> ServiceMatching {
        func pairs(_ values: [String], _ option: String) throws -> [(String, String)] {
            try values.map { value in
                let parts = value.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw ValidationError("\(option): expected KEY=SERVICE (got '\(value)')")
                }
                return (parts[0], parts[1])
            }
        }
        return ServiceMatching(
            hosts: Dictionary(try pairs(hostRoutes, "--host-route").map { ($0.lowercased(), $1) }, uniquingKeysWith: { $1 }),
            prefixes: try pairs(prefixRoutes, "--prefix-route").map { (prefix: $0, service: $1) })
    }

    func run() async throws {
        var logger = Logger(label: "grayscale.proxy")
        logger.logLevel = .info
        let secret = try Self.jwtSecret(file: jwtSecretFile)
        let identitySource: IdentitySource
        do { identitySource = try IdentitySource(parsing: identity, hs256Secret: secret) } catch { throw ValidationError(error.description) }
        let listenAddress = try Self.address(listen, "--listen"), adminAddress = try Self.address(admin, "--admin")
        let db = controller == nil ? try database.open() : nil
        let matching = try matching()
        let configuration = ProxyConfiguration(
            host: listenAddress.host, port: listenAddress.port, identity: identitySource, matching: matching,
            maxHeaderBytes: maxHeaderBytes, maxBodyBytes: maxBodyBytes,
            idleTimeout: .seconds(Int64(parseDuration(idleTimeout)!)),
            upstreamResponseTimeout: .seconds(Int64(parseDuration(upstreamTimeout)!)), maxConnections: maxConnections)
        var proxyConfiguration = configuration
        proxyConfiguration.routingHeader = routingHeader
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let log = try AccessLog(path: accessLog, limits: .init(maxFileBytes: accessLogMaxMiB << 20, keep: accessLogKeep),
                                onProblem: { [logger] problem in logger.error("\(problem)") })
        let reopenSignal = log.reopenOnSignal()
        defer { reopenSignal.cancel() }
        let statistics = ProxyStatistics(windowSeconds: parseDuration(statsWindow)!, retainedWindows: max(1, 3600 / parseDuration(statsWindow)!))
        let proxy = ProxyServer(configuration: proxyConfiguration, table: RoutingTable(states: try db?.allServiceStates() ?? [], matching: matching),
                                statistics: statistics, accessLog: log, group: group)
        let address = try await proxy.start()
        let adminServer = try await AdminHTTPServer.start(host: adminAddress.host, port: adminAddress.port,
                                                          router: AdminServer.statsRouter(statistics: statistics, logger: logger),
                                                          group: group, logger: logger)
        logger.info("proxy listening", metadata: ["address": "\(address)", "stats": "http://\(adminServer.localAddress)/stats",
                                                  "routing": "\(db?.path ?? "following \(controller ?? "")")", "accessLog": "\(accessLog)"])
        let services: [any Service] = [
            db.map { SplitWatchService(database: $0, proxy: proxy, matching: matching, logger: logger) as any Service }
                ?? RoutingFollower(controller: controller!, proxy: proxy, matching: matching, logger: logger),
            // A fleet proxy drains like serve's: requests in flight finish before it exits.
            ShutdownService(logger: logger, steps: [
                .init("drain the proxy") { try await proxy.drain() },
                .init("stop the admin server") { try await adminServer.stop() },
                .init("close the access log") { log.close() },
            ]),
        ]
        let serviceGroup = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        try await group.shutdownGracefully()
    }

    /// The HS256 secret: from the file, else $GRAYSCALE_JWT_SECRET, else none (claims are read unverified).
    static func jwtSecret(file: String?) throws -> [UInt8]? {
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("--jwt-secret-file: cannot read '\(file)'")
            }
            return Array(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        }
        return Secret.read("GRAYSCALE_JWT_SECRET").map { Array($0.utf8) }
    }
}
