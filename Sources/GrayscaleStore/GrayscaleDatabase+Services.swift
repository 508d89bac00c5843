import Foundation
import GrayscaleCore

extension GrayscaleDatabase {
    // MARK: - Reads

    /// The names of every service with at least one release.
    public func services() throws(GrayscaleError) -> [String] {
        try read("list services") { db in try Self.serviceNames(db) }
    }

    /// A service's releases and current split; an unknown service is an error.
    public func serviceState(_ service: String) throws(GrayscaleError) -> ServiceState {
        try read("read \(service)") { db in
            guard try Self.serviceExists(service, db) else { throw unknownService(service, db) }
            return try Self.loadState(service, db)
        }
    }

    /// The current split of a service.
    public func split(_ service: String) throws(GrayscaleError) -> TrafficSplit {
        guard let split = try serviceState(service).split else {
            throw GrayscaleError("\(service): no release published yet")
        }
        return split
    }

    /// Every split the service has had, oldest first.
    public func splitHistory(_ service: String) throws(GrayscaleError) -> [SplitChange] {
        try read("read the split history of \(service)") { db in
            guard try Self.serviceExists(service, db) else { throw unknownService(service, db) }
            return try db.rows("SELECT * FROM splitChange WHERE service = ? ORDER BY revision", .text(service)).map(SplitChange.init(row:))
        }
    }

    /// The audit trail, newest last; all services when `service` is nil.
    public func auditLog(service: String? = nil, limit: Int = 1000) throws(GrayscaleError) -> [AuditEntry] {
        try read("read the audit log") { db in
            let rows = if let service {
                try db.rows("SELECT * FROM audit WHERE service = ? ORDER BY id DESC LIMIT ?", .text(service), .of(limit))
            } else {
                try db.rows("SELECT * FROM audit ORDER BY id DESC LIMIT ?", .of(limit))
            }
            return try rows.map(AuditEntry.init(row:)).reversed()
        }
    }

    public func rollouts(_ service: String) throws(GrayscaleError) -> [Rollout] {
        try read("read the rollouts of \(service)") { db in
            try db.rows("SELECT * FROM rollout WHERE service = ? ORDER BY id", .text(service)).map(Rollout.init(row:))
        }
    }

    // MARK: - Changes

    /// Publishes a release (DESIGN.md "Stable and canary"): the service's first release
    /// becomes stable, later ones the canary with no users yet.
    @discardableResult
    public func publish(_ draft: ReleaseDraft, salt: String, by who: Attribution, at now: Date) throws(GrayscaleError) -> ServiceState {
        try change(draft.service, action: "publish", by: who, at: now, creating: true) { state throws(GrayscaleError) in
            try state.publish(draft, salt: salt, at: now)
        }
    }

    @discardableResult
    public func setCanaryTraffic(_ service: String, range: CanaryRange, nonAuthWeight: Int? = nil,
                                 by who: Attribution, at now: Date) throws(GrayscaleError) -> ServiceState {
        try change(service, action: "set-traffic", by: who, at: now) { state throws(GrayscaleError) in
            try state.setCanaryTraffic(range: range, nonAuthWeight: nonAuthWeight)
        }
    }

    /// Copies `share` (hundredths of a percent) of stable's safe requests to the canary; 0 stops.
    @discardableResult
    public func setMirror(_ service: String, share: Int, routes: [MirrorRoute] = [], by who: Attribution, at now: Date) throws(GrayscaleError) -> ServiceState {
        try change(service, action: "set-mirror", by: who, at: now) { state throws(GrayscaleError) in
            try state.setMirror(share: share, routes: routes)
        }
    }

    @discardableResult
    public func setRules(_ service: String, allowList: [String]? = nil, denyList: [String]? = nil, optInAllowed: Bool? = nil,
                         by who: Attribution, at now: Date) throws(GrayscaleError) -> ServiceState {
        try change(service, action: "set-rules", by: who, at: now) { state throws(GrayscaleError) in
            try state.setRules(allowList: allowList, denyList: denyList, optInAllowed: optInAllowed)
        }
    }

    @discardableResult
    public func rollBack(_ service: String, by who: Attribution, at now: Date) throws(GrayscaleError) -> ServiceState {
        try change(service, action: "rollback", by: who, at: now) { state throws(GrayscaleError) in
            try state.rollBack(at: now)
        }
    }

    @discardableResult
    public func finish(_ service: String, by who: Attribution, at now: Date) throws(GrayscaleError) -> ServiceState {
        try change(service, action: "finish", by: who, at: now) { state throws(GrayscaleError) in
            try state.finish(at: now)
        }
    }

    /// Loads the service, applies `operation` to it and stores the result, the split
    /// history, the rollout rows and an audit entry, all in one transaction. A refused
    /// operation changes nothing and is audited as refused.
    func change(
        _ service: String, action: String, by who: Attribution, at now: Date, creating: Bool = false,
        _ operation: (inout ServiceState) throws(GrayscaleError) -> Void
    ) throws(GrayscaleError) -> ServiceState {
        do {
            return try write(action) { db in
                let exists = try Self.serviceExists(service, db)
                if !exists && !creating { throw unknownService(service, db) }
                let before = exists ? try Self.loadState(service, db) : ServiceState(service: service)
                var after = before
                try operation(&after)
                if !exists {
                    try db.execute("INSERT INTO service (name, createdAt) VALUES (?, ?)", .text(service), .date(now))
                }
                try Self.store(after, replacing: before, action: action, by: who, at: now, db)
                return after
            }
        } catch {
            try? write("audit a refused \(action)") { db in
                let splitBefore = try? Self.serviceExists(service, db) ? Self.loadState(service, db).split : nil
                let entry = AuditEntry(at: now, service: service, actor: who.actor, action: action, command: who.command,
                                       reason: who.reason, outcome: "refused", detail: error.message,
                                       splitBefore: splitBefore ?? nil, splitAfter: nil)
                try entry.insert(db)
            }
            throw error
        }
    }

    private func unknownService(_ service: String, _ db: any SQLExecutor) -> GrayscaleError {
        let known = (try? Self.serviceNames(db)) ?? []
        let list = known.isEmpty ? "no services yet; publish a release first" : "known: \(known.joined(separator: ", "))"
        return GrayscaleError("unknown service '\(service)' (\(list))", kind: .notFound)
    }

    static func serviceNames(_ db: any SQLExecutor) throws -> [String] {
        try db.rows("SELECT name FROM service ORDER BY name").map { try $0.string("name") }.sorted()
    }

    static func serviceExists(_ service: String, _ db: any SQLExecutor) throws -> Bool {
        try db.row("SELECT 1 AS present FROM service WHERE name = ?", .text(service)) != nil
    }

    static func loadState(_ service: String, _ db: any SQLExecutor) throws -> ServiceState {
        let releases = try db.rows("SELECT * FROM release WHERE service = ? ORDER BY number", .text(service)).map(Release.init(row:))
        let split = try db.row("SELECT * FROM split WHERE service = ?", .text(service)).map { try SplitRow(row: $0).split(releases: releases) }
        return ServiceState(service: service, releases: releases, split: split)
    }

    static func store(_ after: ServiceState, replacing before: ServiceState, action: String,
                      by who: Attribution, at now: Date, _ db: any SQLExecutor, audit: Bool = true) throws {
        if after.releases != before.releases || after.split != before.split { try db.routingChanged() }
        for release in after.releases {
            let old = before.release(number: release.number)
            guard old != release else { continue }
            try release.save(db)
            try recordRollout(from: old?.status, to: release, at: now, db)
        }
        if let split = after.split, split != before.split {
            try SplitRow(split, at: now).save(db)
            let change = SplitChange(service: after.service, revision: split.revision, changedAt: now,
                                     actor: who.actor, action: action, reason: who.reason, split: split)
            try change.insert(db)
        }
        guard audit else { return }
        let changed = after != before
        let entry = AuditEntry(at: now, service: after.service, actor: who.actor, action: action, command: who.command,
                               reason: who.reason, outcome: changed ? "done" : "unchanged", detail: nil,
                               splitBefore: before.split, splitAfter: after.split)
        try entry.insert(db)
    }

    /// A release that becomes the canary starts a rollout; one that stops being it ends it.
    static func recordRollout(from old: ReleaseStatus?, to release: Release, at now: Date, _ db: any SQLExecutor) throws {
        if release.status == .canary, old != .canary {
            let rollout = Rollout(service: release.service, releaseNumber: release.number, state: "published",
                                  step: 0, startedAt: now, updatedAt: now, endedAt: nil)
            try rollout.insert(db)
        } else if old == .canary {
            let ended = release.status == .stable ? "promoted" : release.status.rawValue
            try db.execute("""
                UPDATE rollout SET state = ?, updatedAt = ?, endedAt = ?
                WHERE service = ? AND releaseNumber = ? AND endedAt IS NULL
                """, .text(ended), .date(now), .date(now), .text(release.service), .of(release.number))
        }
    }
}

extension GrayscaleDatabase {
    /// Every service's state, for building a routing table.
    public func allServiceStates() throws(GrayscaleError) -> [ServiceState] {
        try read("read all services") { db in
            try Self.serviceNames(db).map { try Self.loadState($0, db) }
        }
    }
}
