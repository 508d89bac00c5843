import Foundation
import GrayscaleCore
import GrayscaleProxy
import GrayscaleStore
import GrayscaleAdminContract
import OpenAPIRuntime
import Prometheus

/// The admin API (`/api/v1`), as `openapi.yaml` (the contract) declares it: the
/// generated `APIProtocol`, answered from the database. Requests reach these methods
/// already decoded and checked against the document's types; the constraints the
/// generator does not check (bounds, lengths) are checked here and refused as 400.
/// Errors are thrown (`AdminProblem`, `GrayscaleError`) and rendered in the one error
/// shape by `AdminServer`'s middleware; POST's bearer token is checked there too.
public struct AdminAPI: APIProtocol {
    public let database: GrayscaleDatabase
    public let statistics: ProxyStatistics
    public let registry: PrometheusCollectorRegistry
    public let bot: ReleaseBot
    public let slack: SlackEndpoint?
    /// Its health goes out on /metrics.
    public var accessLog: AccessLog?
    /// The routing as this process's watch last read it; the long poll waits on it (read from the database when nil).
    public var routing: RoutingBroadcast?
    /// Required as `Authorization: Bearer …` for POST; POST is refused when nil.
    public let adminToken: String?
    /// The query parameters each operation declares in openapi.yaml (a test holds the two
    /// together); any other is refused.
    static let queryParameters: [String: Set<String>] = [
        "/api/v1/services/{service}/rollout": ["limit"],
        "/api/v1/audit": ["service", "limit"],
    ]

    /// The request's `Idempotency-Key` as sent, set by `AdminServer`'s middleware for the handler.
    @TaskLocal static var idempotencyKey: String?

    /// The longest value, in octets, of each header openapi.yaml bounds (`maxLength`). Checked
    /// on the header as sent, by `AdminServer`'s middleware: the generated code reads header
    /// values percent-decoded, which shortens them, or drops a value that does not decode.
    static let headerLimits: [String: Int] = ["Idempotency-Key": 200]

    /// How long the routing long poll waits for a change before it answers the same version.
    public var longPollWait: Duration = .seconds(25)

    public init(database: GrayscaleDatabase, statistics: ProxyStatistics, registry: PrometheusCollectorRegistry, bot: ReleaseBot,
                slack: SlackEndpoint?, adminToken: String?) {
        self.database = database
        self.statistics = statistics
        self.registry = registry
        self.bot = bot
        self.slack = slack
        self.adminToken = adminToken
    }

    public func listServices(_ input: Operations.ListServices.Input) async throws -> Operations.ListServices.Output {
        .ok(.init(body: .json(try Contract.convert(try database.services().map { try serviceSummary($0) }))))
    }

    public func getService(_ input: Operations.GetService.Input) async throws -> Operations.GetService.Output {
        .ok(.init(body: .json(try Contract.convert(try serviceSummary(try known(input.path.service))))))
    }

    public func listReleases(_ input: Operations.ListReleases.Input) async throws -> Operations.ListReleases.Output {
        let service = try known(input.path.service)
        return .ok(.init(body: .json(try Contract.convert(try database.serviceState(service).releases.reversed().map { $0 }))))
    }

    public func getSplit(_ input: Operations.GetSplit.Input) async throws -> Operations.GetSplit.Output {
        .ok(.init(body: .json(try Contract.convert(SplitSummary(try database.split(try known(input.path.service)))))))
    }

    public func getSplitHistory(_ input: Operations.GetSplitHistory.Input) async throws -> Operations.GetSplitHistory.Output {
        let history = try database.splitHistory(try known(input.path.service)).map {
            HistoryEntry(revision: $0.revision, changedAt: $0.changedAt, actor: $0.actor, action: $0.action, reason: $0.reason,
                         split: SplitSummary($0.split))
        }
        return .ok(.init(body: .json(try Contract.convert(history))))
    }

    public func getRollout(_ input: Operations.GetRollout.Input) async throws -> Operations.GetRollout.Output {
        let limit = try Contract.check(input.query.limit ?? 100, in: 1...1000, "query: limit")
        let service = try known(input.path.service)
        guard let rollout = try database.rolloutState(service) else { throw AdminProblem(.notFound, "\(service) has no rollout yet") }
        let report = RolloutReport(rollout: RolloutSummary(rollout),
                                   verdicts: try database.verdicts(service, release: rollout.release.number, limit: limit))
        return .ok(.init(body: .json(try Contract.convert(report))))
    }

    public func getAudit(_ input: Operations.GetAudit.Input) async throws -> Operations.GetAudit.Output {
        let limit = try Contract.check(input.query.limit ?? 100, in: 1...1000, "query: limit")
        return .ok(.init(body: .json(try Contract.convert(try database.auditLog(service: input.query.service, limit: limit)))))
    }

    public func listDeadNotifications(_ input: Operations.ListDeadNotifications.Input) async throws -> Operations.ListDeadNotifications.Output {
        let dead = try database.deadNotifications().map {
            DeadNotification(id: $0.id ?? 0, service: $0.service, channel: $0.channel, text: $0.text, lastError: $0.lastError ?? "",
                             createdAt: $0.createdAt, deadAt: $0.deadAt ?? $0.createdAt)
        }
        return .ok(.init(body: .json(try Contract.convert(dead))))
    }

    public func getControllers(_ input: Operations.GetControllers.Input) async throws -> Operations.GetControllers.Output {
        let seen = try database.controllers(seenSince: Date().addingTimeInterval(-60))
        return .ok(.init(body: .json(try Contract.convert(ControllersReply(lease: seen.lease, controllers: seen.present)))))
    }

    /// The bearer token was checked by the middleware (`AdminServer.AdminTokenMiddleware`).
    public func runCommand(_ input: Operations.RunCommand.Input) async throws -> Operations.RunCommand.Output {
        guard case .json(let body) = input.body else { throw AdminProblem(.badRequest, "body: expected JSON") }
        try Contract.check(body.text, length: 0...1000, "body: text")
        try Contract.check(body._as, length: 1...200, "body: as")
        // Holding the admin token makes the named user an operator.
        let trusted = ReleaseBot(database: bot.database, controller: bot.controller, policiesFolder: bot.policiesFolder,
                                 operators: bot.operators + [body._as])
        // `Idempotency-Key` names the command across retries: a retry gets the first reply and changes nothing.
        // The key as sent (the generated input has it percent-decoded, and "" when it does not decode).
        let reply = await trusted.handle(body.text, executor: body._as, commandId: Self.idempotencyKey.map { "api:\($0)" })
        return .ok(.init(body: .json(.init(reply: reply))))
    }

    /// The routing long poll (`GET /api/v1/routing?after=VERSION`, the fleet's protocol, outside
    /// the contract): the snapshot at once when its version differs from `after`, else when it
    /// changes, or after `longPollWait`. Ends early when the task is cancelled (its client went).
    public func routingSnapshot(after: String?) async throws -> RoutingSnapshot {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: longPollWait)
        if let routing, var snapshot = routing.current {
            while snapshot.version == after, clock.now < deadline, !routing.isClosed {
                try Task.checkCancellation()
                await routing.waitForChange(from: snapshot.version, timeout: clock.now.duration(to: deadline))
                snapshot = routing.current ?? snapshot
            }
            return snapshot
        }
        var snapshot = RoutingSnapshot(states: try database.allServiceStates())
        while snapshot.version == after, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            snapshot = RoutingSnapshot(states: try database.allServiceStates())
        }
        return snapshot
    }

    /// The service's name when the database knows it, else a 404.
    func known(_ service: String) throws -> String {
        guard try database.services().contains(service) else { throw AdminProblem(.notFound, "no service named '\(service)'") }
        return service
    }

    func serviceSummary(_ service: String) throws -> ServiceSummary {
        let state = try database.serviceState(service)
        let platform = try state.canary?.platform.map { label in
            PlatformSummary(label: label, services: try database.platformReleases().first { $0.label == label }?.services ?? [service])
        }
        return ServiceSummary(name: service, stable: state.stable?.ref, canary: state.canary?.ref, platform: platform,
                              split: state.split.map(SplitSummary.init), rollout: try database.rolloutState(service).map(RolloutSummary.init))
    }

    struct DeadNotification: Encodable {
        var id: Int64
        var service: String?
        var channel: String
        var text: String
        var lastError: String
        var createdAt: Date
        var deadAt: Date
    }

    struct ControllersReply: Encodable {
        var lease: ControllerLease?
        var controllers: [ControllerPresence]
    }

    struct ServiceSummary: Encodable {
        var name: String
        var stable: ReleaseRef?
        var canary: ReleaseRef?
        var platform: PlatformSummary?
        var split: SplitSummary?
        var rollout: RolloutSummary?
    }

    struct PlatformSummary: Encodable {
        var label: String
        var services: [String]
    }

    struct RolloutSummary: Encodable {
        var release: ReleaseRef
        var phase: String
        var step: Int
        var manual: Bool
        var holdReason: String?
        var lastVerdict: Verdict?
        var eValue: Double
        var startedAt: Date
        var updatedAt: Date

        init(_ rollout: RolloutState) {
            release = rollout.release
            phase = rollout.phase.rawValue
            step = rollout.step
            manual = rollout.manual
            holdReason = rollout.holdReason
            lastVerdict = rollout.lastVerdict
            eValue = rollout.evidence.eValue
            startedAt = rollout.startedAt
            updatedAt = rollout.updatedAt
        }
    }

    struct RolloutReport: Encodable {
        var rollout: RolloutSummary
        var verdicts: [VerdictRecord]
    }

    struct HistoryEntry: Encodable {
        var revision: Int
        var changedAt: Date
        var actor: String
        var action: String
        var reason: String?
        var split: SplitSummary
    }
}
