import Foundation
import GRDB
import GrayscaleCore

/// Where a controller stands after asking for the lease.
public enum LeaseStanding: Hashable, Sendable {
    /// This controller decides; its commits carry the lease's token.
    case leading(ControllerLease)
    /// Another controller's lease runs; this one stands by until it lapses.
    case standingBy(behind: ControllerLease)
}

struct PresenceRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "controllerPresence"
    var holder: String
    var role: ControllerPresence.Role
    var seenAt: Date
}

extension GrayscaleDatabase {
    static let leaseName = "controller"

    static func lease(_ db: Database) throws -> ControllerLease? {
        guard let json = try String.fetchOne(db, sql: "SELECT lease FROM controllerLease WHERE name = ?", arguments: [leaseName]) else { return nil }
        return try JSONDecoder().decode(ControllerLease.self, from: Data(json.utf8))
    }

    /// Renews the lease for `holder`, takes it over when it has lapsed, or reports who
    /// holds it; records that `holder` was seen, leading or standing by. One transaction.
    public func claimLease(holder: String, period: Double, at now: Date) throws(GrayscaleError) -> LeaseStanding {
        try write("claim the controller's lease") { db in
            let current = try Self.lease(db)
            let standing: LeaseStanding
            if let claimed = ControllerLease.claim(current, by: holder, period: period, at: now) {
                let json = String(decoding: try JSONEncoder().encode(claimed), as: UTF8.self)
                try db.execute(sql: "INSERT INTO controllerLease (name, lease) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET lease = excluded.lease",
                               arguments: [Self.leaseName, json])
                standing = .leading(claimed)
            } else {
                standing = .standingBy(behind: current!)
            }
            if case .leading = standing {
                // Whoever led before and has not been seen since is no longer the leader.
                try db.execute(sql: "UPDATE controllerPresence SET role = 'standby' WHERE holder <> ? AND role = 'leader'", arguments: [holder])
            }
            try PresenceRow(holder: holder, role: { if case .leading = standing { .leader } else { .standby } }(), seenAt: now).save(db)
            return standing
        }
    }

    /// Gives the lease up (a clean shutdown): a standby takes over on its next pass instead of waiting for it to lapse.
    public func releaseLease(holder: String, at now: Date) throws(GrayscaleError) {
        try write("release the controller's lease") { db in
            guard var lease = try Self.lease(db), lease.holder == holder else { return }
            lease.expiresAt = now
            let json = String(decoding: try JSONEncoder().encode(lease), as: UTF8.self)
            try db.execute(sql: "UPDATE controllerLease SET lease = ? WHERE name = ?", arguments: [json, Self.leaseName])
            try db.execute(sql: "DELETE FROM controllerPresence WHERE holder = ?", arguments: [holder])
        }
    }

    /// The lease as stored, and every controller seen since `since`.
    public func controllers(seenSince since: Date) throws(GrayscaleError) -> (lease: ControllerLease?, present: [ControllerPresence]) {
        try read("read the controllers") { db in
            let rows = try PresenceRow.filter(Column("seenAt") >= since).order(Column("holder")).fetchAll(db)
            return (try Self.lease(db), rows.map { ControllerPresence(holder: $0.holder, role: $0.role, seenAt: $0.seenAt) })
        }
    }
}
