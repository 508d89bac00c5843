import Foundation
import GRDB
import GrayscaleCore

extension Release: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "release"
}

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
public struct SplitChange: Codable, Hashable, Sendable, FetchableRecord, PersistableRecord {
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
public struct AuditEntry: Codable, Hashable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "audit"
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
public struct Rollout: Codable, Hashable, Sendable, FetchableRecord, PersistableRecord {
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
public struct MetricSample: Codable, Hashable, Sendable, FetchableRecord, PersistableRecord {
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
public struct Notification: Codable, Hashable, Sendable, FetchableRecord, MutablePersistableRecord {
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

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// The stored form of a service's current split: columns an operator can query,
/// with the release labels and salt joined back in from `release` on read.
struct SplitRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "split"
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
            canary = .init(release: release.ref, salt: release.salt, range: try CanaryRange(lower: rangeLower, upper: rangeUpper))
        }
        return TrafficSplit(service: service, revision: revision, stable: stable.ref, canary: canary,
                            nonAuthWeight: nonAuthWeight, allowList: allowList, denyList: denyList,
                            optInAllowed: optInAllowed)
    }
}
