import Foundation
import GrayscaleCore
import GrayscaleStore

/// The release bot: parses a command, checks who may run it, has the controller carry
/// it out through the reconciler, audits it, and renders the reply. Slack and the
/// CLI twin (`grayscale bot`) both go through here.
public struct ReleaseBot: Sendable {
    public let database: GrayscaleDatabase
    public let controller: ControllerService
    public let policiesFolder: String
    /// Users allowed to change traffic besides each policy's `slack.operators`.
    public let operators: [String]

    public init(database: GrayscaleDatabase, controller: ControllerService, policiesFolder: String, operators: [String] = []) {
        self.database = database
        self.controller = controller
        self.policiesFolder = policiesFolder
        self.operators = operators
    }

    /// Runs `text` as `executor` and returns the reply. Never throws: every problem is a reply.
    /// `commandId` names the command across retries: a retry gets the first reply and changes nothing.
    public func handle(_ text: String, executor: String, commandId: String? = nil) async -> String {
        let command: BotCommand
        do { command = try BotCommand.parse(text) } catch { return error.description }
        guard let service = command.service else { return BotReply.help }
        var library = PolicyLibrary(folder: policiesFolder)
        try? library.reload()
        if service == PlatformRelease.module {
            return await handlePlatform(command, text: text, executor: executor, commandId: commandId, library: library)
        }
        return await handle(command, service: service, text: text, executor: executor, commandId: commandId, library: library)
    }

    /// `-m platform`: the command for every service of the current platform release (the
    /// newest still rolling out), one reply each under the platform's.
    private func handlePlatform(_ command: BotCommand, text: String, executor: String, commandId: String?, library: PolicyLibrary) async -> String {
        func key(_ id: String, _ label: String, _ service: String) -> String { "\(id)/\(label)/\(service)" }
        let all: [PlatformReleaseRecord]
        do { all = try database.platformReleases() } catch {
            return "Executor: @\(executor)\nGrayScale Status: Failed: \(error.message)"
        }
        // A retry of a command carried out before goes to the platform release it went to then
        // (and gets its first answers), even if a newer one was published since.
        let answered = commandId.flatMap { id in
            all.reversed().first { record in
                record.releases.contains { (try? database.commandResult(key(id, record.label, $0.service), service: $0.service)) != nil }
            }
        }
        guard let platform = answered ?? all.last(where: \.isActive) ?? all.last else {
            return "Executor: @\(executor)\nGrayScale Status: Failed: no platform release yet (grayscale release publish-platform)"
        }
        let header = "Platform release \(platform.label)\(platform.isActive ? "" : " (ended)"): "
            + platform.releases.map { "\($0.service) \($0.ref)" }.joined(separator: ", ")
        let changes = command.action.humanCommand != nil
        if changes, !platform.isActive, answered == nil {
            let reason = "platform release \(platform.label) has ended; act on each service with -m <service>"
            for release in platform.releases { auditSkipped(command, text: text, executor: executor, service: release.service, reason: reason) }
            return header + "\nExecutor: @\(executor)\nGrayScale Status: Refused: \(reason)"
        }
        var replies = [header]
        for release in platform.releases {
            // A change goes only to the services whose canary is still this platform release's
            // (one released on its own since, or one already back on stable, is not touched),
            // and names that release, so the controller refuses it if the canary changed meanwhile.
            let id = commandId.map { key($0, platform.label, release.service) }
            let done = id.map { (try? database.commandResult($0, service: release.service)) != nil } ?? false
            if changes, !done {
                let canary: Int?
                do { canary = try database.serviceState(release.service).canary?.number } catch {
                    replies.append("[\(release.service)]\nExecutor: @\(executor)\nGrayScale Status: Failed: \(error.message)")
                    continue
                }
                if canary != release.number {
                    let reason = "\(release.ref) is no longer its canary"
                    auditSkipped(command, text: text, executor: executor, service: release.service,
                                 reason: "platform release \(platform.label): not touched: \(reason)")
                    replies.append("[\(release.service)]\nNot touched: \(reason)")
                    continue
                }
            }
            // Each service's command has an id of its own: a retry runs none of them twice.
            let reply = await handle(command, service: release.service, text: text, executor: executor, commandId: id, library: library,
                                     release: changes ? release.number : nil)
            replies.append("[\(release.service)]\n" + reply)
        }
        return replies.joined(separator: "\n")
    }

    /// A `-m platform` command that went to none of a service's releases: audited there as refused, with why.
    private func auditSkipped(_ command: BotCommand, text: String, executor: String, service: String, reason: String) {
        try? database.recordRefusal(service: service, actor: executor, action: command.action.auditName, command: text, detail: reason,
                                    split: try? database.split(service), at: controller.now())
    }

    private func handle(_ command: BotCommand, service: String, text: String, executor: String, commandId: String?,
                        library: PolicyLibrary, release: Int? = nil) async -> String {
        let inPlatform = (try? database.serviceState(service))?.canary?.platform != nil
        let policy = ControllerService.policy(for: service, inPlatform: inPlatform, library: library).policy
        // A retry of a command already carried out gets its first answer, whatever changed since.
        if let commandId {
            do {
                if let first = try database.commandResult(commandId, service: service) { return reply(first, executor: executor, policy: policy) }
            } catch {
                return "Executor: @\(executor)\nGrayScale Status: Failed: \(error.message)"
            }
        }
        let state: ServiceState
        do { state = try database.serviceState(service) } catch {
            return "Executor: @\(executor)\nGrayScale Status: Failed: \(error.message)"
        }
        let rollout = try? database.rolloutState(service)

        switch command.action {
        case .help:
            return BotReply.help
        case .list:
            guard let split = state.split else { return "Executor: @\(executor)\nGrayScale Status: Failed: \(service) has no release yet" }
            return BotReply.status(executor: executor, status: "Done", split: split, rollout: rollout, steps: policy.steps.count)
                + "\n" + split.ruleLines.joined(separator: "\n")
        case .status:
            return BotReply.status(executor: executor, status: "Done", split: state.split, rollout: rollout, steps: policy.steps.count)
        case .rules:
            guard let split = state.split else { return "Executor: @\(executor)\nGrayScale Status: Failed: \(service) has no release yet" }
            return BotReply.rules(executor: executor, split: split, policy: policy)
        case .initialize, .gray, .finish, .rollback, .pause, .resume:
            break
        }

        let allowed = operators + (policy.slack?.operators ?? [])
        guard allowed.contains(executor) else {
            let who = allowed.isEmpty ? "no operators are configured for \(service) (policy slack.operators)" : "operators: \(allowed.joined(separator: ", "))"
            return refuse(command, text: text, executor: executor, state: state, rollout: rollout, policy: policy,
                          reason: "@\(executor) may only list (\(who))")
        }
        guard state.canary != nil else {
            return refuse(command, text: text, executor: executor, state: state, rollout: rollout, policy: policy,
                          reason: "\(service) has no canary release; stable \(state.stable.map { "\($0.ref)" } ?? "none") takes all traffic")
        }
        guard let kind = command.action.humanCommand else { return BotReply.help }
        do {
            let (result, _) = try await controller.execute(HumanCommand(kind, actor: executor, text: text, id: commandId, release: release), service: service,
                                                           policies: library)
            return reply(result, executor: executor, policy: policy)
        } catch {
            return refuse(command, text: text, executor: executor, state: state, rollout: rollout, policy: policy, reason: "\(error)")
        }
    }

    private func reply(_ result: CommandResult, executor: String, policy: RolloutPolicy) -> String {
        BotReply.status(executor: executor, status: result.refusal.map { "Refused: \($0)" } ?? "Done", split: result.split,
                        rollout: result.rollout, steps: policy.steps.count)
    }

    private func refuse(_ command: BotCommand, text: String, executor: String, state: ServiceState, rollout: RolloutState?,
                        policy: RolloutPolicy, reason: String) -> String {
        try? database.recordRefusal(service: state.service, actor: executor, action: command.action.auditName, command: text,
                                    detail: reason, split: state.split, at: controller.now())
        return BotReply.status(executor: executor, status: "Refused: \(reason)", split: state.split, rollout: rollout, steps: policy.steps.count)
    }
}

extension BotCommand.Action {
    var auditName: String {
        switch self {
        case .initialize: return "init"
        case .gray: return "set-traffic"
        case .finish: return "finish"
        case .rollback: return "rollback"
        case .list: return "list"
        case .rules: return "rules"
        case .pause: return "pause"
        case .resume: return "resume"
        case .status: return "status"
        case .help: return "help"
        }
    }
}
