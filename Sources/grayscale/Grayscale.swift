import ArgumentParser
import Foundation

@main
struct Grayscale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grayscale",
        abstract: "Canary releases for a serverless platform: cohorts, traffic splits, rollbacks.",
        discussion: "The database is --db, else $GRAYSCALE_DB, else grayscale.sqlite in the working directory.",
        subcommands: [ReleaseCommand.self, TrafficCommand.self, RolloutCommand.self, PolicyCommand.self, AuditCommand.self, ProxyCommand.self, ServeCommand.self, ControllerCommand.self, BotCommandLine.self, SimulateCommand.self, DashboardCommand.self, DemoCommand.self, LogsCommand.self, DatabaseCommand.self]
    )

    static func main() async {
        // A file-size limit (or a full disk) must fail the write, to be handled and said,
        // not kill the process with SIGXFSZ.
        signal(SIGXFSZ, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
