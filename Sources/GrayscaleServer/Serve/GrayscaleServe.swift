import Foundation
import GrayscaleCore
import GrayscaleEdges
import GrayscaleIntegrations
import GrayscaleProxy
import GrayscaleStore
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

/// `grayscale serve`: the proxy, the split watcher, the controller, the admin server
/// (dashboard, API, /stats, /metrics, Slack) and the notifier as services of one
/// `ServiceGroup`. SIGTERM or SIGINT: stop accepting, let requests in flight finish,
/// commit nothing half-done (every tick is one transaction), leave the outbox for the next start.
public struct GrayscaleServe: Sendable {
    public let configuration: ServeConfiguration
    public let environment: [String: String]
    public let logger: Logger

    public init(configuration: ServeConfiguration, environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger) {
        self.configuration = configuration
        self.environment = environment
        self.logger = logger
    }

    /// Listen addresses were checked when the configuration was read.
    static func address(_ text: String) -> (String, Int) {
        let address = HostPort(parsing: text)!
        return (address.host, address.port)
    }

    func secret(_ name: String) -> String? { Secret.read(name, environment: environment) }

    public func run() async throws {
        let database = try GrayscaleDatabase.open(path: configuration.database)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let registry = PrometheusCollectorRegistry()
        // Anything recorded through swift-metrics in this process is exported on /metrics too.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let matching = ServiceMatching(hosts: configuration.hosts, prefixes: configuration.prefixes)
        let identity: IdentitySource
        do { identity = try IdentitySource(parsing: configuration.identity, hs256Secret: secret("GRAYSCALE_JWT_SECRET").map { Array($0.utf8) }) } catch {
            throw GrayscaleError("proxy.identity: \(error)")
        }
        let (proxyHost, proxyPort) = Self.address(configuration.proxyListen)
        // An hour of windows, but no more than 900 of them (each holds a latency histogram).
        let statistics = ProxyStatistics(windowSeconds: configuration.statsWindow, retainedWindows: min(900, max(1, 3600 / configuration.statsWindow)))
        let accessLog = try AccessLog(path: configuration.accessLog,
                                      limits: .init(maxFileBytes: configuration.accessLogMaxMiB << 20, keep: configuration.accessLogKeep),
                                      onProblem: { [logger] problem in logger.error("\(problem)") })
        let reopenSignal = accessLog.reopenOnSignal()
        defer { reopenSignal.cancel() }
        var proxyConfiguration = ProxyConfiguration(
            host: proxyHost, port: proxyPort, identity: identity, matching: matching, maxHeaderBytes: configuration.maxHeaderBytes,
            maxBodyBytes: configuration.maxBodyBytes, idleTimeout: .seconds(Int64(configuration.idleTimeout)),
            upstreamResponseTimeout: .seconds(Int64(configuration.upstreamTimeout)), maxConnections: configuration.maxConnections)
        proxyConfiguration.routingHeader = configuration.routingHeader
        // The routing as stored now: the proxy's first table and the long poll's first answer.
        let states = try database.allServiceStates()
        let routing = RoutingBroadcast()
        routing.publish(states)
        let proxy = ProxyServer(
            configuration: proxyConfiguration,
            table: RoutingTable(states: states, matching: matching), statistics: statistics, accessLog: accessLog,
            metrics: RequestMetrics(registry: registry), group: group)
        var drivers: [String: any TrafficDriver] = [:]
        if !configuration.scf.isEmpty {
            guard let secretId = secret("TENCENTCLOUD_SECRET_ID"), let secretKey = secret("TENCENTCLOUD_SECRET_KEY") else {
                throw GrayscaleError("services: an scf service needs TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY in the environment")
            }
            for (service, settings) in configuration.scf {
                let client = TencentCloudClient(endpoint: settings.endpoint, service: "scf", version: "2018-04-16", region: settings.region,
                                                secretId: secretId, secretKey: secretKey)
                drivers[service] = SCFTrafficDriver(client: client, function: settings.function, alias: settings.alias,
                                                    namespace: settings.namespace, routingHeader: settings.routingHeader)
            }
        }
        let controller = ControllerService(
            database: database, policiesFolder: configuration.policies,
            metrics: configuration.fleetStats.isEmpty
                ? InProcessProxyMetrics(statistics: statistics) as any MetricsSource
                : {
                    var fleet = HTTPStatsMetrics(endpoints: ["http://\(configuration.adminListen)"] + configuration.fleetStats, windowSeconds: 10)
                    fleet.onUnreachable = { [logger] endpoint, problem in
                        logger.warning("a proxy's statistics are left out of this interval: it does not answer",
                                       metadata: ["proxy": "\(endpoint)", "problem": "\(problem)"])
                    }
                    return fleet
                }(),
            customMetrics: configuration.prometheus.map { PrometheusMetrics(baseURL: $0) },
            configuration: .init(tick: .milliseconds(configuration.controllerTickMs), analysisInterval: configuration.analysisInterval.map(Double.init),
                                 defaultChannel: configuration.defaultChannel, leasePeriod: Double(configuration.controllerLeaseMs) / 1000),
            logger: logger, controllerMetrics: ControllerMetrics(registry: registry), drivers: drivers)
        let operators = configuration.operators + (secret("GRAYSCALE_OPERATORS")?.split(separator: ",").map(String.init) ?? [])
        let bot = ReleaseBot(database: database, controller: controller, policiesFolder: configuration.policies, operators: operators)
        let slackClient = SlackClient.fromEnvironment(environment)
        let slackEndpoint = secret("GRAYSCALE_SLACK_SIGNING_SECRET").map {
            SlackEndpoint(signature: SlackSignature(secret: Array($0.utf8)), bot: bot, slack: slackClient, logger: logger)
        }
        let api = {
            var api = AdminAPI(database: database, statistics: statistics, registry: registry, bot: bot, slack: slackEndpoint,
                               adminToken: secret("GRAYSCALE_ADMIN_TOKEN"))
            api.accessLog = accessLog
            api.routing = routing
            return api
        }()

        let proxyAddress = try await proxy.start()
        let (adminHost, adminPort) = Self.address(configuration.adminListen)
        let admin = try await AdminHTTPServer.start(host: adminHost, port: adminPort, router: try AdminServer.router(api: api, logger: logger),
                                                    group: group, logger: logger)
        logger.info("grayscale serving", metadata: [
            "proxy": "\(proxyAddress)", "dashboard": "http://\(configuration.adminListen)/", "database": "\(configuration.database)",
            "slack": "\(slackEndpoint == nil ? "endpoint off (no GRAYSCALE_SLACK_SIGNING_SECRET)" : "POST /slack/events, /slack/commands")",
            "notifications": "\(slackClient == nil ? "to the log (no Slack token or webhook)" : "to Slack")"])

        var services: [any Service] = [
            SplitWatchService(database: database, proxy: proxy, matching: matching, logger: logger, routing: routing),
            controller,
            ShutdownService(logger: logger, steps: [
                .init("drain the proxy") { try await proxy.drain() },
                .init("stop the admin server") {
                    routing.close()  // long polls answer now instead of holding the stop for 25 s
                    try await admin.stop()
                },
                .init("close the access log") { accessLog.close() },
            ]),
        ]
        if let slackClient {
            var notifier = NotifierService(database: database, slack: slackClient, logger: logger)
            // Replicas on one PostgreSQL: one of them delivers at a time.
            if database.isShared { notifier.exclusive = (ControllerService.processName(), 30) }
            services.append(notifier)
        } else {
            services.append(LogNotifier(database: database, logger: logger))
        }
        let serviceGroup = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                             gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        try await group.shutdownGracefully()
    }
}
