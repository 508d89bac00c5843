/// A release-bot command, as the design document writes them:
/// `-g -m engine -p 20:55`, `-r -m engine`, `-l -m engine`, …
public struct BotCommand: Hashable, Sendable {
    public enum Action: Hashable, Sendable {
        /// `-c`: start the canary on the policy's first step.
        case initialize
        /// `-g -p 30` / `-g -p 20:55`: pin the canary to these users.
        case gray(CanaryRange, nonAuthWeight: Int?)
        case finish(force: Bool)
        case rollback
        /// `-l`: the traffic split and its rules.
        case list
        case rules
        case pause
        case resume
        case status
        case help

        /// Whether the action changes traffic (and so needs an operator).
        public var changesTraffic: Bool {
            switch self {
            case .initialize, .gray, .finish, .rollback, .pause, .resume: return true
            case .list, .rules, .status, .help: return false
            }
        }

        var flag: String {
            switch self {
            case .initialize: return "-c"
            case .gray: return "-g"
            case .finish: return "-f"
            case .rollback: return "-r"
            case .list: return "-l"
            case .rules: return "rules"
            case .pause: return "pause"
            case .resume: return "resume"
            case .status: return "status"
            case .help: return "help"
            }
        }
    }

    public var action: Action
    /// The `-m` module; nil only for `help`.
    public var service: String?

    public init(action: Action, service: String?) {
        self.action = action
        self.service = service
    }

    public static let usage = "Usage: -g -m <service> -p <percent|low:high> [--non-auth <percent>] | -c | -f [--force] | -r | -l | rules | pause | resume | status -m <service> | help"

    /// Parses a command; a leading mention (`@sls-release-bot`, `<@U0LAN0Z89>`) is ignored.
    /// An error names the first thing that could not be parsed.
    public static func parse(_ text: String) throws(BotCommandError) -> BotCommand {
        var tokens = text.split(whereSeparator: \.isWhitespace).map(String.init)
        while let first = tokens.first, first.hasPrefix("@") || (first.hasPrefix("<@") && first.hasSuffix(">")) {
            tokens.removeFirst()
        }
        guard !tokens.isEmpty else { throw BotCommandError("nothing to do") }

        var action: Action?
        var actionToken = ""
        var service: String?
        var percent: String?
        var nonAuth: String?
        var force = false
        var index = 0

        func setAction(_ new: Action, _ token: String) throws(BotCommandError) {
            if action != nil { throw BotCommandError("two actions at once: \(actionToken) and \(token); give one") }
            action = new
            actionToken = token
        }
        func value(_ token: String) throws(BotCommandError) -> String {
            index += 1
            guard index < tokens.count, !tokens[index].hasPrefix("-") || Int(tokens[index]) != nil || tokens[index].contains(":") else {
                throw BotCommandError("\(token) needs a value")
            }
            return tokens[index]
        }

        while index < tokens.count {
            let token = tokens[index]
            switch token {
            case "-c", "--init": try setAction(.initialize, token)
            case "-g", "--gray": try setAction(.gray(.empty, nonAuthWeight: nil), token)
            case "-f", "--finish": try setAction(.finish(force: false), token)
            case "-r", "--rollback": try setAction(.rollback, token)
            case "-l", "--list": try setAction(.list, token)
            case "rules", "--rules": try setAction(.rules, token)
            case "pause", "--pause": try setAction(.pause, token)
            case "resume", "--resume": try setAction(.resume, token)
            case "status", "--status": try setAction(.status, token)
            case "help", "-h", "--help": try setAction(.help, token)
            case "-m", "--module", "--service":
                if service != nil { throw BotCommandError("\(token) given twice") }
                service = try value(token)
            case "-p", "--percent":
                if percent != nil { throw BotCommandError("\(token) given twice") }
                percent = try value(token)
            case "--non-auth":
                nonAuth = try value(token)
            case "--force":
                force = true
            default:
                throw BotCommandError(token.hasPrefix("-") ? "unknown option \(token)" : "unexpected '\(token)'")
            }
            index += 1
        }

        guard var action else { throw BotCommandError("no action: give one of -g, -c, -f, -r, -l, rules, pause, resume, status, help") }
        if case .help = action { return BotCommand(action: .help, service: service) }
        guard let service else { throw BotCommandError("missing -m <service>") }
        do { try ServiceName.validate(service) } catch { throw BotCommandError("-m: \(error.message)") }

        if case .gray = action {
            guard let percent else { throw BotCommandError("-g needs -p <percent>, e.g. -p 30 or -p 20:55") }
            let range: CanaryRange
            do { range = try CanaryRange.parse(percent: percent) } catch { throw BotCommandError("-p \(error.message)") }
            var weight: Int?
            if let nonAuth {
                guard let parsed = parseHundredths(nonAuth), parsed <= 10_000 else {
                    throw BotCommandError("--non-auth '\(nonAuth)': expected a percent from 0 to 100")
                }
                weight = parsed
            }
            action = .gray(range, nonAuthWeight: weight)
        } else {
            if percent != nil { throw BotCommandError("-p only goes with -g") }
            if nonAuth != nil { throw BotCommandError("--non-auth only goes with -g") }
        }
        if force {
            guard case .finish = action else { throw BotCommandError("--force only goes with -f") }
            action = .finish(force: true)
        }
        return BotCommand(action: action, service: service)
    }
}

public struct BotCommandError: Error, Hashable, Sendable, CustomStringConvertible {
    public var problem: String

    public init(_ problem: String) { self.problem = problem }

    /// The reply: the first problem, then the usage.
    public var description: String { "Sorry, I could not run that: \(problem).\n\(BotCommand.usage)" }
}

extension BotCommand.Action {
    /// The controller's command for a bot action; nil for read-only actions.
    public var humanCommand: HumanCommand.Kind? {
        switch self {
        case .initialize: return .initialize
        case .gray(let range, let weight): return .setRange(range, nonAuthWeight: weight)
        case .finish(let force): return .finish(force: force)
        case .rollback: return .rollback
        case .pause: return .pause
        case .resume: return .resume
        case .list, .rules, .status, .help: return nil
        }
    }
}
