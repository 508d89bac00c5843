import Foundation
import GrayscaleCore

/// A verdict as stored, with the numbers behind it.
public struct VerdictRecord: Codable, Hashable, Sendable {
    public var id: Int64?
    public var service: String
    public var releaseNumber: Int
    public var at: Date
    public var outcome: String
    public var reason: String
    public var critical: Bool
    public var numbers: [String: Double]
    /// The lease token of the controller that decided it.
    public var leaseToken: Int64? = nil
}

/// What the controller reads at the start of a tick.
public struct ControllerSnapshot: Sendable {
    public var service: ServiceState
    public var rollout: RolloutState?
    /// The stored rollout's revision; the tick's commit requires it unchanged.
    public var rolloutRevision: Int
    public var commands: [(id: Int64, command: HumanCommand)]
    /// The canary release's announcement, when it was announced.
    public var announcement: Announcement? = nil
    /// The platform release the canary is part of, with its other services as they stand.
    public var platform: PlatformContext? = nil
}

extension VerdictRecord {
    init(row: SQLRow) throws {
        self.init(id: try row.optionalInt64("id"), service: try row.string("service"), releaseNumber: try row.int("releaseNumber"),
                  at: try row.date("at"), outcome: try row.string("outcome"), reason: try row.string("reason"),
                  critical: try row.bool("critical"), numbers: try row.json([String: Double].self, "numbers"),
                  leaseToken: try row.optionalInt64("leaseToken"))
    }

    func insert(_ db: any SQLExecutor) throws {
        try db.insert("verdict", ["service": .text(service), "releaseNumber": .of(releaseNumber), "at": .date(at), "outcome": .text(outcome),
                                  "reason": .text(reason), "critical": .of(critical), "numbers": try .json(numbers), "leaseToken": .of(leaseToken)])
    }
}

/// The stored state of a service's rollout, compared and swapped by revision.
struct RolloutStateRow {
    var service: String
    var releaseNumber: Int
    var revision: Int
    var state: RolloutState
    var updatedAt: Date

    static func fetch(_ service: String, _ db: any SQLExecutor) throws -> RolloutStateRow? {
        try db.row("SELECT * FROM rolloutState WHERE service = ?", .text(service)).map { row in
            RolloutStateRow(service: try row.string("service"), releaseNumber: try row.int("releaseNumber"), revision: try row.int("revision"),
                            state: try row.json(RolloutState.self, "state"), updatedAt: try row.date("updatedAt"))
        }
    }

    func save(_ db: any SQLExecutor) throws {
        try db.execute("""
            INSERT INTO rolloutState (service, releaseNumber, revision, state, updatedAt) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (service) DO UPDATE SET releaseNumber = excluded.releaseNumber, revision = excluded.revision,
                state = excluded.state, updatedAt = excluded.updatedAt
            """, .text(service), .of(releaseNumber), .of(revision), try .json(state), .date(updatedAt))
    }
}

/// The first answer to a command that carried an id.
enum CommandResultRow {
    static func fetch(_ id: String, _ db: any SQLExecutor) throws -> (service: String, result: CommandResult)? {
        try db.row("SELECT service, result FROM commandResult WHERE id = ?", .text(id)).map { row in
            (try row.string("service"), try row.json(CommandResult.self, "result"))
        }
    }

    static func insert(id: String, service: String, result: CommandResult, at now: Date, ignoringADuplicate: Bool = false,
                       _ db: any SQLExecutor) throws {
        try db.insert("commandResult", ["id": .text(id), "service": .text(service), "result": try .json(result), "at": .date(now)],
                      onConflictDoNothing: ignoringADuplicate)
    }
}

extension GrayscaleDatabase {
    public func controllerSnapshot(_ service: String) throws(GrayscaleError) -> ControllerSnapshot {
        try read("read \(service) for the controller") { db in
            let state = try Self.loadState(service, db)
            let row = try RolloutStateRow.fetch(service, db)
            let commands = try db.rows("SELECT id, command FROM controlCommand WHERE service = ? AND consumedAt IS NULL ORDER BY id", .text(service))
                .map { (try $0.int64("id"), try $0.json(HumanCommand.self, "command")) }
            let announcement = try state.canary.flatMap { canary in try Self.announcement(service, number: canary.number, db) }
            let platform = try state.canary.flatMap { canary in try canary.platform.map { try Self.platformContext($0, except: service, db) } }
            return ControllerSnapshot(service: state, rollout: row?.state, rolloutRevision: row?.revision ?? 0, commands: commands,
                                      announcement: announcement, platform: platform)
        }
    }

    public func rolloutState(_ service: String) throws(GrayscaleError) -> RolloutState? {
        try read("read the rollout of \(service)") { db in try RolloutStateRow.fetch(service, db)?.state }
    }

    /// Services with a canary or a rollout the controller has not closed yet.
    public func servicesNeedingControl() throws(GrayscaleError) -> [String] {
        try read("list services to control") { db in
            try db.rows("""
                SELECT name FROM service WHERE name IN (SELECT service FROM release WHERE status = 'canary')
                   OR name IN (SELECT service FROM rolloutState)
                   OR name IN (SELECT service FROM controlCommand WHERE consumedAt IS NULL)
                """).map { try $0.string("name") }.sorted()
        }
    }

    /// Queues a human command for the controller's next tick. False when a command with
    /// the same id was queued before (a retry): nothing is queued twice.
    @discardableResult
    public func enqueue(_ command: HumanCommand, for service: String, at now: Date) throws(GrayscaleError) -> Bool {
        try write("queue a command for \(service)") { db in
            guard try Self.serviceExists(service, db) else { throw GrayscaleError("unknown service '\(service)'", kind: .notFound) }
            if let id = command.id {
                if try db.row("SELECT 1 AS queued FROM controlCommand WHERE commandId = ?", .text(id)) != nil { return false }
                if let done = try CommandResultRow.fetch(id, db) {
                    guard done.service == service else {
                        throw GrayscaleError("command id \(id) was already used for \(done.service); give this command an id of its own")
                    }
                    return false
                }
            }
            try db.insert("controlCommand", ["service": .text(service), "command": try .json(command), "createdAt": .date(now),
                                             "consumedAt": .null, "commandId": .of(command.id)])
            return true
        }
    }

    /// The first answer to the command with this id, if it was carried out; an error when
    /// the id was used for another service (one id, one command).
    public func commandResult(_ id: String, service: String? = nil) throws(GrayscaleError) -> CommandResult? {
        let row = try read("read the result of command \(id)") { db in try CommandResultRow.fetch(id, db) }
        if let row, let service, row.service != service {
            throw GrayscaleError("command id \(id) was already used for \(row.service); give this command an id of its own")
        }
        return row?.result
    }

    public func verdicts(_ service: String, release: Int, limit: Int = 100) throws(GrayscaleError) -> [VerdictRecord] {
        try read("read verdicts") { db in
            try db.rows("SELECT * FROM verdict WHERE service = ? AND releaseNumber = ? ORDER BY id DESC LIMIT ?",
                        .text(service), .of(release), .of(limit)).map(VerdictRecord.init(row:)).reversed()
        }
    }

    /// Commits one transition in one transaction, exactly as the reconciler returned it:
    /// the split and release changes, the new rollout state (evidence and cursor with it),
    /// the verdict, audit entries, notifications, the consumed commands and the answer to
    /// `command` when it carries an id. Changes nothing and throws a `.conflict` when the
    /// split or the rollout changed since `snapshot` was read, and a `.fenced` error when
    /// `fence` is not the current lease token (another controller leads).
    @discardableResult
    public func commitTick(_ snapshot: ControllerSnapshot, _ transition: Transition, command: HumanCommand? = nil, fence: Int64?,
                           notifyChannel: String, at now: Date) throws(GrayscaleError) -> (service: ServiceState, transition: Transition) {
        let service = snapshot.service.service
        return try write("commit the controller's tick for \(service)") { db in
            if let fence {
                let current = try Self.lease(db)
                guard current?.token == fence else {
                    throw GrayscaleError("the controller's lease token \(fence) is no longer current (\(current.map { "\($0.holder) holds token \($0.token)" } ?? "no lease")); nothing was written",
                                         kind: .fenced)
                }
            }
            let before = try Self.loadState(service, db)
            let stored = try RolloutStateRow.fetch(service, db)
            guard before.split?.revision == snapshot.service.split?.revision, (stored?.revision ?? 0) == snapshot.rolloutRevision else {
                throw GrayscaleError("\(service) changed during the tick; it is judged again on the next one", kind: .conflict)
            }
            // A platform release's service decided on the others as they were read: one that changed meanwhile
            // (a human's rollback, a step) makes it decide again. A rollback is never held back by that.
            if let platform = snapshot.platform, transition.rollbackReason == nil, try !Self.peersUnchanged(platform, db) {
                throw GrayscaleError("another service of platform release \(platform.label) changed during the tick; "
                    + "\(service) is judged again on the next one", kind: .conflict)
            }
            if let id = command?.id, try CommandResultRow.fetch(id, db) != nil {
                throw GrayscaleError("command \(id) was carried out meanwhile", kind: .conflict)
            }
            var transition = transition
            var after = before
            try transition.apply(to: &after, at: now)
            try Self.store(after, replacing: before, action: "controller", by: Attribution(actor: Reconciler.actor), at: now, db, audit: false)

            var splitRecorded = false
            for note in transition.audit {
                // The entry of the change that moved traffic carries the split before and after.
                let carriesSplit = !splitRecorded && note.movesTraffic && before.split != after.split
                splitRecorded = splitRecorded || carriesSplit
                try AuditEntry(at: now, service: service, actor: note.actor, action: note.action, command: note.command, reason: nil,
                               outcome: note.refused ? "refused" : "done", detail: note.detail,
                               splitBefore: carriesSplit ? before.split : nil, splitAfter: carriesSplit ? after.split : nil,
                               leaseToken: fence).insert(db)
            }
            for text in transition.notifications {
                var notification = Notification(createdAt: now, service: service, channel: notifyChannel, text: text,
                                                attempts: 0, nextAttemptAt: now, deliveredAt: nil, lastError: nil)
                try notification.insert(db)
            }
            if let verdict = transition.verdict {
                try VerdictRecord(id: nil, service: service, releaseNumber: transition.rollout?.release.number ?? 0, at: now,
                                  outcome: verdict.outcome.rawValue, reason: verdict.reason, critical: verdict.critical,
                                  numbers: verdict.numbers, leaseToken: fence).insert(db)
            }
            if let rollout = transition.rollout {
                try RolloutStateRow(service: service, releaseNumber: rollout.release.number, revision: snapshot.rolloutRevision + 1,
                                    state: rollout, updatedAt: now).save(db)
                try db.execute("UPDATE rollout SET state = ?, step = ?, updatedAt = ? WHERE service = ? AND releaseNumber = ? AND endedAt IS NULL",
                               .text(rollout.phase.rawValue), .of(rollout.step), .date(now), .text(service), .of(rollout.release.number))
            }
            let result = CommandResult(split: after.split, rollout: transition.rollout, refusal: transition.refusal)
            for (id, queued) in snapshot.commands {
                try db.execute("UPDATE controlCommand SET consumedAt = ? WHERE id = ?", .date(now), .integer(id))
                // A queued command with an id is answered too: a later retry of it, queued or direct, changes nothing.
                if let commandId = queued.id, commandId != command?.id {
                    try CommandResultRow.insert(id: commandId, service: service, result: result, at: now, ignoringADuplicate: true, db)
                }
            }
            if let command, let id = command.id {
                try CommandResultRow.insert(id: id, service: service, result: result, at: now, db)
            }
            return (after, transition)
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
