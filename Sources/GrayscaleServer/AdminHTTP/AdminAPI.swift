import Crypto
import Foundation
import GrayscaleCore
import GrayscaleProxy
import GrayscaleStore
import NIOCore
import NIOHTTP1
import Prometheus

/// The admin server's routes: the dashboard page, `/stats`, `/metrics`, the JSON API
/// (bearer token for anything that changes state) and Slack's endpoints.
/// `openapi.yaml` at the repository root documents the API.
public struct AdminAPI: Sendable {
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

    public init(database: GrayscaleDatabase, statistics: ProxyStatistics, registry: PrometheusCollectorRegistry, bot: ReleaseBot,
                slack: SlackEndpoint?, adminToken: String?) {
        self.database = database
        self.statistics = statistics
        self.registry = registry
        self.bot = bot
        self.slack = slack
        self.adminToken = adminToken
    }

    public typealias Response = HTTPEndpointServer.Response

    public func respond(_ request: HTTPEndpointServer.Request) async -> Response {
        let uri = request.head.uri
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let query = Self.query(uri)
        let parts = path.split(separator: "/").map(String.init)
        switch (request.head.method, parts.count > 0 ? parts[0] : "") {
        case (.GET, ""):
            return Response(status: .ok, contentType: "text/html; charset=utf-8", body: DashboardPage.html)
        case (.GET, "healthz"):
            return Response(status: .ok, body: "ok\n")
        case (.GET, "metrics"):
            return Response(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                            body: registry.emitToString() + (accessLog?.prometheusText ?? ""))
        case (.GET, "stats"):
            return statistics.response(to: request.head)
        case (.POST, "slack"):
            guard let slack else { return Response(status: .notFound, body: "Slack is not configured (set GRAYSCALE_SLACK_SIGNING_SECRET)\n") }
            return await slack.respond(request)
        case (_, "api") where parts.count >= 2 && parts[1] == "v1":
            return await api(request, Array(parts.dropFirst(2)), query: query)
        default:
            return Self.problem(.notFound, "no route for \(request.head.method) \(path)")
        }
    }

    func api(_ request: HTTPEndpointServer.Request, _ parts: [String], query: [String: String]) async -> Response {
        do {
            switch (request.head.method, parts.first ?? "", parts.count) {
            case (.GET, "services", 1):
                return try Self.json(try database.services().map { try serviceSummary($0) })
            case (.GET, "services", 2):
                return try Self.json(try serviceSummary(parts[1]))
            case (.GET, "services", 3):
                let service = parts[1]
                switch parts[2] {
                case "releases": return try Self.json(try database.serviceState(service).releases.reversed().map { $0 })
                case "split": return try Self.json(SplitSummary(try database.split(service)))
                case "history":
                    return try Self.json(try database.splitHistory(service).map {
                        HistoryEntry(revision: $0.revision, changedAt: $0.changedAt, actor: $0.actor, action: $0.action, reason: $0.reason,
                                     split: SplitSummary($0.split))
                    })
                case "rollout":
                    guard let rollout = try database.rolloutState(service) else {
                        return Self.problem(.notFound, "\(service) has no rollout yet")
                    }
                    return try Self.json(RolloutReport(rollout: RolloutSummary(rollout),
                                                       verdicts: try database.verdicts(service, release: rollout.release.number, limit: Int(query["limit"] ?? "") ?? 100)))
                default:
                    return Self.problem(.notFound, "no route for GET /api/v1/services/\(service)/\(parts[2])")
                }
            case (.GET, "routing", 1):
                // Long poll: answers at once when the routing differs from `after`, else when it changes (25 s at most).
                let deadline = Date().addingTimeInterval(25)
                if let routing, var snapshot = routing.current {
                    while snapshot.version == query["after"], Date() < deadline {
                        await routing.waitForChange(from: snapshot.version, timeout: .milliseconds(Int64(deadline.timeIntervalSinceNow * 1000)))
                        snapshot = routing.current ?? snapshot
                    }
                    return try Self.json(snapshot)
                }
                var snapshot = RoutingSnapshot(states: try database.allServiceStates())
                while snapshot.version == query["after"], Date() < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                    snapshot = RoutingSnapshot(states: try database.allServiceStates())
                }
                return try Self.json(snapshot)
            case (.GET, "notifications", 2) where parts[1] == "dead":
                return try Self.json(try database.deadNotifications().map {
                    DeadNotification(id: $0.id ?? 0, service: $0.service, channel: $0.channel, text: $0.text, lastError: $0.lastError ?? "",
                                     createdAt: $0.createdAt, deadAt: $0.deadAt ?? $0.createdAt)
                })
            case (.GET, "controllers", 1):
                let seen = try database.controllers(seenSince: Date().addingTimeInterval(-60))
                return try Self.json(ControllersReply(lease: seen.lease, controllers: seen.present))
            case (.GET, "audit", 1):
                return try Self.json(try database.auditLog(service: query["service"], limit: min(1000, Int(query["limit"] ?? "") ?? 100)))
            case (.POST, "commands", 1):
                guard let adminToken else { return Self.problem(.forbidden, "no admin token is configured (set GRAYSCALE_ADMIN_TOKEN)") }
                guard let given = request.head.headers.first(name: "authorization"), Self.constantTimeEqual(given, "Bearer \(adminToken)") else {
                    return Self.problem(.unauthorized, "a valid Authorization: Bearer token is required")
                }
                guard let body = try? JSONDecoder().decode(CommandRequest.self, from: Data(request.body)) else {
                    return Self.problem(.badRequest, #"expected JSON {"text": "-g -m engine -p 30", "as": "kaiyuzeng"}"#)
                }
                // Holding the admin token makes the named user an operator.
                let trusted = ReleaseBot(database: bot.database, controller: bot.controller, policiesFolder: bot.policiesFolder,
                                         operators: bot.operators + [body.as])
                // `Idempotency-Key` names the command across retries: a retry gets the first reply and changes nothing.
                let key = request.head.headers.first(name: "idempotency-key").map { "api:\($0)" }
                return try Self.json(CommandReply(reply: await trusted.handle(body.text, executor: body.as, commandId: key)))
            default:
                return Self.problem(.notFound, "no route for \(request.head.method) /api/v1/\(parts.joined(separator: "/"))")
            }
        } catch let error as GrayscaleError {
            return Self.problem(error.kind == .notFound ? .notFound : .internalServerError, error.message)
        } catch {
            return Self.problem(.internalServerError, "\(error)")
        }
    }

    func serviceSummary(_ service: String) throws -> ServiceSummary {
        let state = try database.serviceState(service)
        return ServiceSummary(name: service, stable: state.stable?.ref, canary: state.canary?.ref, split: state.split.map(SplitSummary.init),
                              rollout: try database.rolloutState(service).map(RolloutSummary.init))
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
        var split: SplitSummary?
        var rollout: RolloutSummary?
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

    struct CommandRequest: Decodable {
        var text: String
        var `as`: String
    }

    struct CommandReply: Encodable {
        var reply: String
    }

    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return Response(status: .ok, contentType: "application/json", body: String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func problem(_ status: HTTPResponseStatus, _ message: String) -> Response {
        let body = (try? JSONSerialization.data(withJSONObject: ["error": message])) ?? Data()
        return Response(status: status, contentType: "application/json", body: String(decoding: body, as: UTF8.self))
    }

    static func query(_ uri: String) -> [String: String] {
        guard let question = uri.firstIndex(of: "?") else { return [:] }
        return FormFields.parse(uri[uri.index(after: question)...])
    }

    /// Whether two secrets are equal, in time that does not depend on where they differ:
    /// their SHA-256 digests, compared by swift-crypto in constant time (the lengths are
    /// hidden too).
    static func constantTimeEqual(_ lhs: String, _ rhs: String) -> Bool {
        SHA256.hash(data: Array(lhs.utf8)) == SHA256.hash(data: Array(rhs.utf8))
    }
}
