import ArgumentParser

@main
struct Grayscale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grayscale",
        abstract: "Canary releases for a serverless platform: cohorts, traffic splits, rollbacks.",
        discussion: "The database is --db, else $GRAYSCALE_DB, else grayscale.sqlite in the working directory.",
        subcommands: [ReleaseCommand.self, TrafficCommand.self, RolloutCommand.self, PolicyCommand.self, AuditCommand.self, ProxyCommand.self, ServeCommand.self, ControllerCommand.self, BotCommandLine.self, SimulateCommand.self, DashboardCommand.self, DemoCommand.self, LogsCommand.self]
    )
}
