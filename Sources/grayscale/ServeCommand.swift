import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleServer
import Logging

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run it all in one process: proxy, controller, admin API and dashboard, Slack endpoint, notifier.",
        discussion: """
            Without --config: proxy on 127.0.0.1:8080, dashboard and API on 127.0.0.1:8081, grayscale.sqlite, policies/.
            Secrets from the environment (or NAME_FILE): GRAYSCALE_ADMIN_TOKEN, GRAYSCALE_JWT_SECRET,
            GRAYSCALE_SLACK_SIGNING_SECRET, GRAYSCALE_SLACK_BOT_TOKEN or GRAYSCALE_SLACK_WEBHOOK_URL.
            """)

    @Option(help: "The configuration file (see grayscale.example.yaml).") var config: String?
    @Option(help: "The database, an SQLite file or postgres://USER@HOST:PORT/DB (overrides the configuration).") var db: String?

    func run() async throws {
        var configuration = try config.map { path throws in try ServeConfiguration.load(path: path) } ?? ServeConfiguration()
        if let db { configuration.database = db } else if config == nil, let env = ProcessInfo.processInfo.environment["GRAYSCALE_DB"] {
            configuration.database = env
        }
        var logger = Logger(label: "grayscale")
        logger.logLevel = .info
        try await GrayscaleServe(configuration: configuration, logger: logger).run()
    }
}

struct DashboardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Print dashboards for other tools.",
        subcommands: [Grafana.self])

    struct Grafana: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The Grafana dashboard JSON (dashboards/grafana.json is this output: make dashboards).")

        func run() { print(GrafanaDashboard.json, terminator: "") }
    }
}
