import ArgumentParser
import Foundation
import GrayscaleServer
import GrayscaleStore
import Logging

struct BotCommandLine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bot",
        abstract: "Run a release-bot command without Slack: same grammar, authorization, audit and reply.",
        discussion: """
            grayscale bot "-g -m engine -p 20:55" --as kaiyuzeng
            Who may change traffic: each policy's slack.operators, plus the users in $GRAYSCALE_OPERATORS (comma-separated).
            """)

    @OptionGroup var database: DatabaseOptions
    @Option(help: "The rollout policies folder.") var policies = "policies"
    @Option(name: .customLong("as"), help: "Who runs the command (default: $USER).") var executor: String?
    @Option(name: .customLong("command-id"), help: "Names the command across retries: run again with the same id, it answers the first reply and changes nothing.")
    var commandId: String?
    @Argument(parsing: .allUnrecognized, help: "The command, as typed to the bot (quote it).") var words: [String] = []

    func run() async throws {
        let db = try database.open()
        var logger = Logger(label: "grayscale.bot")
        logger.logLevel = .warning
        let controller = ControllerService(database: db, policiesFolder: policies, metrics: NoMetrics(), logger: logger)
        let operators = (ProcessInfo.processInfo.environment["GRAYSCALE_OPERATORS"] ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let bot = ReleaseBot(database: db, controller: controller, policiesFolder: policies, operators: operators)
        let who = executor ?? ProcessInfo.processInfo.environment["USER"] ?? "cli"
        print(await bot.handle(words.joined(separator: " "), executor: who, commandId: commandId))
    }
}
