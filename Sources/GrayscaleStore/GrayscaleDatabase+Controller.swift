import Foundation
import GRDB
import GrayscaleCore

/// A verdict as stored, with the numbers behind it.
public struct VerdictRecord: Codable, Hashable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "verdict"
    public var id: Int64?
    public var service: String
    public var releaseNumber: Int
    public var at: Date
    public var outcome: String
    public var reason: String
    public var critical: Bool
    public var numbers: [String: Double]
}

/// What the controller reads at the start of a tick.
public struct ControllerSnapshot: Sendable {
    public var service: ServiceState
    public var rollout: RolloutState?
    /// The stored rollout's revision; the tick's commit requires it unchanged.
    public var rolloutRevision: Int
    public var commands: [(id: Int64, command: HumanCommand)]
}

/// Another writer changed the service between the tick's read and its commit.
public struct TickConflict: Error, CustomStringConvertible {
    public var description: String
}

struct RolloutStateRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "rolloutState"
    var service: String
    var releaseNumber: Int
    var revision: Int
    var state: RolloutState
    var updatedAt: Date
}

struct CommandRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "controlCommand"
    var id: Int64?
    var service: String
    var command: HumanCommand
    var createdAt: Date
    var consumedAt: Date?
}

extension GrayscaleDatabase {
    /// Audit actions of the reconciler that change the split.
    static let splitActions: Set<String> = ["step", "manual", "rollback", "promote"]

    public func controllerSnapshot(_ service: String) throws(GrayscaleError) -> ControllerSnapshot {
        try read("read \(service) for the controller") { db in
            let state = try Self.loadState(service, db)
            let row = try RolloutStateRow.fetchOne(db, key: service)
            let commands = try CommandRow.filter(Column("service") == service && Column("consumedAt") == nil)
                .order(Column("id")).fetchAll(db)
            return ControllerSnapshot(service: state, rollout: row?.state, rolloutRevision: row?.revision ?? 0,
                                      commands: commands.map { ($0.id!, $0.command) })
        }
    }

    public func rolloutState(_ service: String) throws(GrayscaleError) -> RolloutState? {
        try read("read the rollout of \(service)") { db in try RolloutStateRow.fetchOne(db, key: service)?.state }
    }

    /// Services with a canary or a rollout the controller has not closed yet.
    public func servicesNeedingControl() throws(GrayscaleError) -> [String] {
        try read("list services to control") { db in
            try String.fetchAll(db, sql: """
                SELECT name FROM service WHERE name IN (SELECT service FROM release WHERE status = 'canary')
                   OR name IN (SELECT service FROM rolloutState)
                   OR name IN (SELECT service FROM controlCommand WHERE consumedAt IS NULL)
                ORDER BY name
                """)
        }
    }

    /// Queues a human command for the controller's next tick.
    public func enqueue(_ command: HumanCommand, for service: String, at now: Date) throws(GrayscaleError) {
        try write("queue a command for \(service)") { db in
            guard try Self.serviceExists(service, db) else { throw GrayscaleError("unknown service '\(service)'") }
            try CommandRow(id: nil, service: service, command: command, createdAt: now, consumedAt: nil).insert(db)
        }
    }

    public func verdicts(_ service: String, release: Int, limit: Int = 100) throws(GrayscaleError) -> [VerdictRecord] {
        try read("read verdicts") { db in
            try VerdictRecord.filter(Column("service") == service && Column("releaseNumber") == release)
                .order(Column("id").desc).limit(limit).fetchAll(db).reversed()
        }
    }

    /// Commits one tick in one transaction: the split and release changes its actions
    /// make, the new rollout state, verdicts, audit entries, notifications and the
    /// consumed commands. Throws `TickConflict` (and changes nothing) when the split or
    /// the rollout changed since `snapshot` was read.
    @discardableResult
    public func commitTick(_ snapshot: ControllerSnapshot, rollout: RolloutState?, actions: [ControllerAction],
                           notifyChannel: String, at now: Date) throws -> ServiceState {
        let service = snapshot.service.service
        return try write("commit the controller's tick for \(service)") { db in
            let before = try Self.loadState(service, db)
            let stored = try RolloutStateRow.fetchOne(db, key: service)
            guard before.split?.revision == snapshot.service.split?.revision, (stored?.revision ?? 0) == snapshot.rolloutRevision else {
                throw TickConflict(description: "\(service) changed during the tick; it is judged again on the next one")
            }
            var after = before
            try after.apply(actions, at: now)
            try Self.store(after, replacing: before, action: "controller", by: Attribution(actor: Reconciler.actor), at: now, db, audit: false)

            var splitRecorded = false
            for action in actions {
                switch action {
                case .audit(let name, let actor, let detail, let outcome, let command):
                    // The entry of the action that moved traffic carries the split change.
                    let carriesSplit = !splitRecorded && before.split != after.split && Self.splitActions.contains(name)
                    splitRecorded = splitRecorded || carriesSplit
                    try AuditEntry(at: now, service: service, actor: actor, action: name, command: command, reason: nil, outcome: outcome,
                                   detail: detail, splitBefore: carriesSplit ? before.split : nil,
                                   splitAfter: carriesSplit ? after.split : nil).insert(db)
                case .notify(let text):
                    var notification = Notification(createdAt: now, service: service, channel: notifyChannel, text: text,
                                                    attempts: 0, nextAttemptAt: now, deliveredAt: nil, lastError: nil)
                    try notification.insert(db)
                case .recordVerdict(let verdict):
                    try VerdictRecord(id: nil, service: service, releaseNumber: rollout?.release.number ?? 0, at: now,
                                      outcome: verdict.outcome.rawValue, reason: verdict.reason, critical: verdict.critical,
                                      numbers: verdict.numbers).insert(db)
                case .setSplit, .setRules, .rollBack, .promote, .runSmokeChecks:
                    break
                }
            }
            if var rollout {
                if let split = after.split { rollout.knownSplitRevision = split.revision }
                try RolloutStateRow(service: service, releaseNumber: rollout.release.number, revision: snapshot.rolloutRevision + 1,
                                    state: rollout, updatedAt: now).save(db)
                try db.execute(sql: "UPDATE rollout SET state = ?, step = ?, updatedAt = ? WHERE service = ? AND releaseNumber = ? AND endedAt IS NULL",
                               arguments: [rollout.phase.rawValue, rollout.step, now, service, rollout.release.number])
            }
            for (id, _) in snapshot.commands {
                try db.execute(sql: "UPDATE controlCommand SET consumedAt = ? WHERE id = ?", arguments: [now, id])
            }
            return after
        }
    }
}

extension GrayscaleDatabase {
    /// Audits a command that was refused before it reached the controller.
    public func recordRefusal(service: String, actor: String, action: String, command: String, detail: String,
                              split: TrafficSplit?, at now: Date) throws(GrayscaleError) {
        try write("audit a refused \(action)") { db in
            try AuditEntry(at: now, service: service, actor: actor, action: action, command: command, reason: nil,
                           outcome: "refused", detail: detail, splitBefore: split, splitAfter: split).insert(db)
        }
    }
}
