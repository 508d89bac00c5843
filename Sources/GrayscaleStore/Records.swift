import Foundation
import GrayscaleCore

/// Who asked for a change and why: every change is audited with it.
public struct Attribution: Hashable, Sendable {
    public var actor: String
    /// The command text as typed (bot command, CLI invocation), when there was one.
    public var command: String?
    public var reason: String?

    public init(actor: String, command: String? = nil, reason: String? = nil) {
        self.actor = actor
        self.command = command
        self.reason = reason
    }
}

/// One entry of a service's split history.
public struct SplitChange: Codable, Hashable, Sendable {
    public var id: Int64?
    public var service: String
    public var revision: Int
    public var changedAt: Date
    public var actor: String
    public var action: String
    public var reason: String?
    public var split: TrafficSplit
}

/// One line of the audit trail: who did what, when, why, and what it changed.
public struct AuditEntry: Codable, Hashable, Sendable {
    public var id: Int64?
    public var at: Date
    public var service: String?
    public var actor: String
    public var action: String
    public var command: String?
    public var reason: String?
    /// `done`, `unchanged` or `refused`.
    public var outcome: String
    /// For a refusal, why it was refused.
    public var detail: String?
    public var splitBefore: TrafficSplit?
    public var splitAfter: TrafficSplit?
    /// The lease token of the controller that decided it (nil: a human's direct change).
    public var leaseToken: Int64? = nil
}

/// A canary release's way from publication to promotion or rollback.
public struct Rollout: Codable, Hashable, Sendable {
    public var id: Int64?
    public var service: String
    public var releaseNumber: Int
    /// `published` while in progress; `promoted`, `rolledBack` or `superseded` once ended.
    public var state: String
    public var step: Int
    public var startedAt: Date
    public var updatedAt: Date
    public var endedAt: Date?
}

/// Requests and errors one release served in one window, from the proxy or Prometheus.
public struct MetricSample: Codable, Hashable, Sendable {
    public var id: Int64?
    public var service: String
    public var releaseNumber: Int
    public var route: RouteTarget
    public var windowStart: Date
    public var windowEnd: Date
    public var requests: Int
    public var errors: Int
    public var latencyP50Ms: Double?
    public var latencyP99Ms: Double?
    /// An encoded latency histogram, when the source has one.
    public var histogram: Data?

    public init(service: String, releaseNumber: Int, route: RouteTarget, windowStart: Date, windowEnd: Date,
                requests: Int, errors: Int, latencyP50Ms: Double? = nil, latencyP99Ms: Double? = nil, histogram: Data? = nil) {
        self.service = service
        self.releaseNumber = releaseNumber
        self.route = route
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.requests = requests
        self.errors = errors
        self.latencyP50Ms = latencyP50Ms
        self.latencyP99Ms = latencyP99Ms
        self.histogram = histogram
    }
}

/// A message waiting in the outbox until the notifier delivers it.
public struct Notification: Codable, Hashable, Sendable {
    public var id: Int64?
    public var createdAt: Date
    public var service: String?
    public var channel: String
    public var text: String
    public var attempts: Int
    public var nextAttemptAt: Date
    public var deliveredAt: Date?
    public var lastError: String?
    /// Set when Slack refused the message for good: it is kept for the dashboard and the audit, not retried.
    public var deadAt: Date? = nil
    /// A reply inside a thread: the thread's first message.
    public var threadTs: String? = nil
    /// A slash command's reply: its `response_url` (good for 30 minutes), used instead of the channel.
    public var responseUrl: String? = nil
}

/// The stored form of a service's current split: columns an operator can query,
/// with the release labels and salt joined back in from `release` on read.
struct SplitRow {
    var service: String
    var revision: Int
    var stableNumber: Int
    var canaryNumber: Int?
    var rangeLower: Int
    var rangeUpper: Int
    var nonAuthWeight: Int
    var allowList: [String]
    var denyList: [String]
    var optInAllowed: Bool
    var mirrorShare: Int?
    var mirrorRoutes: [MirrorRoute]?
    var webSocketDrain: Int?
    var updatedAt: Date

    init(_ split: TrafficSplit, at now: Date) {
        service = split.service
        revision = split.revision
        stableNumber = split.stable.number
        canaryNumber = split.canary?.release.number
        rangeLower = split.range.lower
        rangeUpper = split.range.upper
        nonAuthWeight = split.nonAuthWeight
        allowList = split.allowList
        denyList = split.denyList
        optInAllowed = split.optInAllowed
        mirrorShare = split.canary?.mirror
        mirrorRoutes = split.canary?.mirrorRoutes
        webSocketDrain = split.webSocketDrain
        updatedAt = now
    }

    func split(releases: [Release]) throws -> TrafficSplit {
        guard let stable = releases.first(where: { $0.number == stableNumber }) else {
            throw GrayscaleError("split of \(service) names stable release \(stableNumber), which is not stored")
        }
        var canary: TrafficSplit.Canary?
        if let canaryNumber {
            guard let release = releases.first(where: { $0.number == canaryNumber }) else {
                throw GrayscaleError("split of \(service) names canary release \(canaryNumber), which is not stored")
            }
            canary = .init(release: release.ref, salt: release.salt, range: try CanaryRange(lower: rangeLower, upper: rangeUpper),
                           mirror: mirrorShare, mirrorRoutes: mirrorRoutes)
        }
        var split = TrafficSplit(service: service, revision: revision, stable: stable.ref, canary: canary,
                                 nonAuthWeight: nonAuthWeight, allowList: allowList, denyList: denyList,
                                 optInAllowed: optInAllowed)
        split.webSocketDrain = webSocketDrain
        return split
    }
}

// MARK: - Rows

extension Release {
    init(row: SQLRow) throws {
        guard let status = ReleaseStatus(rawValue: try row.string("status")) else { throw row.missing("status", "a release status") }
        self.init(service: try row.string("service"), number: try row.int("number"), label: try row.string("label"),
                  upstream: try row.string("upstream"), sourceRef: try row.optionalString("sourceRef"), salt: try row.string("salt"),
                  platform: try row.optionalString("platform"), status: status, publishedAt: try row.date("publishedAt"), statusChangedAt: try row.date("statusChangedAt"))
    }

    /// Stores the release, replacing the stored row of the same number.
    func save(_ db: any SQLExecutor) throws {
        try db.execute("""
            INSERT INTO release (service, number, label, upstream, sourceRef, salt, platform, status, publishedAt, statusChangedAt)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (service, number) DO UPDATE SET label = excluded.label, upstream = excluded.upstream,
                sourceRef = excluded.sourceRef, salt = excluded.salt, platform = excluded.platform, status = excluded.status,
                publishedAt = excluded.publishedAt, statusChangedAt = excluded.statusChangedAt
            """, .text(service), .of(number), .text(label), .text(upstream), .of(sourceRef), .text(salt), .of(platform),
            .text(status.rawValue), .date(publishedAt), .date(statusChangedAt))
    }
}

extension SplitChange {
    init(row: SQLRow) throws {
        self.init(id: try row.optionalInt64("id"), service: try row.string("service"), revision: try row.int("revision"),
                  changedAt: try row.date("changedAt"), actor: try row.string("actor"), action: try row.string("action"),
                  reason: try row.optionalString("reason"), split: try row.json(TrafficSplit.self, "split"))
    }

    func insert(_ db: any SQLExecutor) throws {
        try db.insert("splitChange", ["service": .text(service), "revision": .of(revision), "changedAt": .date(changedAt),
                                      "actor": .text(actor), "action": .text(action), "reason": .of(reason), "split": try .json(split)])
    }
}

extension AuditEntry {
    init(row: SQLRow) throws {
        self.init(id: try row.optionalInt64("id"), at: try row.date("at"), service: try row.optionalString("service"),
                  actor: try row.string("actor"), action: try row.string("action"), command: try row.optionalString("command"),
                  reason: try row.optionalString("reason"), outcome: try row.string("outcome"), detail: try row.optionalString("detail"),
                  splitBefore: try row.optionalJSON(TrafficSplit.self, "splitBefore"),
                  splitAfter: try row.optionalJSON(TrafficSplit.self, "splitAfter"), leaseToken: try row.optionalInt64("leaseToken"))
    }

    func insert(_ db: any SQLExecutor) throws {
        try db.insert("audit", ["at": .date(at), "service": .of(service), "actor": .text(actor), "action": .text(action),
                                "command": .of(command), "reason": .of(reason), "outcome": .text(outcome), "detail": .of(detail),
                                "splitBefore": try .json(splitBefore), "splitAfter": try .json(splitAfter), "leaseToken": .of(leaseToken)])
    }
}

extension Rollout {
    init(row: SQLRow) throws {
        self.init(id: try row.optionalInt64("id"), service: try row.string("service"), releaseNumber: try row.int("releaseNumber"),
                  state: try row.string("state"), step: try row.int("step"), startedAt: try row.date("startedAt"),
                  updatedAt: try row.date("updatedAt"), endedAt: try row.optionalDate("endedAt"))
    }

    func insert(_ db: any SQLExecutor) throws {
        try db.insert("rollout", ["service": .text(service), "releaseNumber": .of(releaseNumber), "state": .text(state), "step": .of(step),
                                  "startedAt": .date(startedAt), "updatedAt": .date(updatedAt), "endedAt": .of(endedAt)])
    }
}

extension MetricSample {
    init(row: SQLRow) throws {
        guard let route = RouteTarget(rawValue: try row.string("route")) else { throw row.missing("route", "stable or canary") }
        self.init(service: try row.string("service"), releaseNumber: try row.int("releaseNumber"), route: route,
                  windowStart: try row.date("windowStart"), windowEnd: try row.date("windowEnd"), requests: try row.int("requests"),
                  errors: try row.int("errors"), latencyP50Ms: try row.optionalDouble("latencyP50Ms"),
                  latencyP99Ms: try row.optionalDouble("latencyP99Ms"), histogram: try row.optionalData("histogram"))
        id = try row.optionalInt64("id")
    }

    func insert(_ db: any SQLExecutor) throws {
        try db.insert("metricSample", ["service": .text(service), "releaseNumber": .of(releaseNumber), "route": .text(route.rawValue),
                                       "windowStart": .date(windowStart), "windowEnd": .date(windowEnd), "requests": .of(requests),
                                       "errors": .of(errors), "latencyP50Ms": .of(latencyP50Ms), "latencyP99Ms": .of(latencyP99Ms),
                                       "histogram": .of(histogram)])
    }
}

extension Notification {
    init(row: SQLRow) throws {
        self.init(id: try row.optionalInt64("id"), createdAt: try row.date("createdAt"), service: try row.optionalString("service"),
                  channel: try row.string("channel"), text: try row.string("text"), attempts: try row.int("attempts"),
                  nextAttemptAt: try row.date("nextAttemptAt"), deliveredAt: try row.optionalDate("deliveredAt"),
                  lastError: try row.optionalString("lastError"), deadAt: try row.optionalDate("deadAt"),
                  threadTs: try row.optionalString("threadTs"), responseUrl: try row.optionalString("responseUrl"))
    }

    mutating func insert(_ db: any SQLExecutor) throws {
        id = try db.insert("notification", ["createdAt": .date(createdAt), "service": .of(service), "channel": .text(channel),
                                            "text": .text(text), "attempts": .of(attempts), "nextAttemptAt": .date(nextAttemptAt),
                                            "deliveredAt": .of(deliveredAt), "lastError": .of(lastError), "deadAt": .of(deadAt),
                                            "threadTs": .of(threadTs), "responseUrl": .of(responseUrl)],
                           returningID: true)
    }
}

extension SplitRow {
    init(row: SQLRow) throws {
        service = try row.string("service")
        revision = try row.int("revision")
        stableNumber = try row.int("stableNumber")
        canaryNumber = try row.optionalInt("canaryNumber")
        rangeLower = try row.int("rangeLower")
        rangeUpper = try row.int("rangeUpper")
        nonAuthWeight = try row.int("nonAuthWeight")
        allowList = try row.json([String].self, "allowList")
        denyList = try row.json([String].self, "denyList")
        optInAllowed = try row.bool("optInAllowed")
        mirrorShare = try row.optionalInt("mirrorShare")
        mirrorRoutes = row["mirrorRoutes"] == .null ? nil : try row.json([MirrorRoute].self, "mirrorRoutes")
        webSocketDrain = try row.optionalInt("webSocketDrain")
        updatedAt = try row.date("updatedAt")
    }

    func save(_ db: any SQLExecutor) throws {
        try db.execute("""
            INSERT INTO split (service, revision, stableNumber, canaryNumber, rangeLower, rangeUpper, nonAuthWeight,
                               allowList, denyList, optInAllowed, mirrorShare, mirrorRoutes, webSocketDrain, updatedAt)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (service) DO UPDATE SET revision = excluded.revision, stableNumber = excluded.stableNumber,
                canaryNumber = excluded.canaryNumber, rangeLower = excluded.rangeLower, rangeUpper = excluded.rangeUpper,
                nonAuthWeight = excluded.nonAuthWeight, allowList = excluded.allowList, denyList = excluded.denyList,
                optInAllowed = excluded.optInAllowed, mirrorShare = excluded.mirrorShare, mirrorRoutes = excluded.mirrorRoutes,
                webSocketDrain = excluded.webSocketDrain,
                updatedAt = excluded.updatedAt
            """, .text(service), .of(revision), .of(stableNumber), .of(canaryNumber), .of(rangeLower), .of(rangeUpper),
            .of(nonAuthWeight), try .json(allowList), try .json(denyList), .of(optInAllowed), .of(mirrorShare),
            try .json(mirrorRoutes), .of(webSocketDrain),
            .date(updatedAt))
    }
}
