import Foundation
import GrayscaleCore

/// Where a controller stands after asking for the lease.
public enum LeaseStanding: Hashable, Sendable {
    /// This controller decides; its commits carry the lease's token.
    case leading(ControllerLease)
    /// Another controller's lease runs; this one stands by until it lapses.
    case standingBy(behind: ControllerLease)
}


extension GrayscaleDatabase {
    public static let leaseName = "controller"

    /// The lease of the replicas' notifier: one of them delivers the outbox at a time.
    public static let notifierLeaseName = "notifier"

    static func lease(_ db: any SQLExecutor, name: String = leaseName) throws -> ControllerLease? {
        guard let row = try db.row("SELECT lease FROM controllerLease WHERE name = ?", .text(name)) else { return nil }
        return try JSONDecoder().decode(ControllerLease.self, from: try row.data("lease"))
    }

    /// Renews the lease for `holder`, takes it over when it has lapsed, or reports who
    /// holds it; records that `holder` was seen, leading or standing by. One transaction.
    public func claimLease(holder: String, period: Double, at now: Date, name: String = leaseName) throws(GrayscaleError) -> LeaseStanding {
        try write("claim the \(name)'s lease") { db in
            let current = try Self.lease(db, name: name)
            let standing: LeaseStanding
            if let claimed = ControllerLease.claim(current, by: holder, period: period, at: now) {
                let json = String(decoding: try JSONEncoder().encode(claimed), as: UTF8.self)
                try db.execute("INSERT INTO controllerLease (name, lease) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET lease = excluded.lease",
                               .text(name), .text(json))
                standing = .leading(claimed)
            } else {
                standing = .standingBy(behind: current!)
            }
            guard name == Self.leaseName else { return standing }  // only controllers are listed as present
            if case .leading = standing {
                // Whoever led before and has not been seen since is no longer the leader.
                try db.execute("UPDATE controllerPresence SET role = 'standby' WHERE holder <> ? AND role = 'leader'", .text(holder))
            }
            let role: ControllerPresence.Role = if case .leading = standing { .leader } else { .standby }
            try db.execute("""
                INSERT INTO controllerPresence (holder, role, seenAt) VALUES (?, ?, ?)
                ON CONFLICT (holder) DO UPDATE SET role = excluded.role, seenAt = excluded.seenAt
                """, .text(holder), .text(role.rawValue), .date(now))
            return standing
        }
    }

    /// Gives the lease up (a clean shutdown): a standby takes over on its next pass instead of waiting for it to lapse.
    public func releaseLease(holder: String, at now: Date) throws(GrayscaleError) {
        try write("release the controller's lease") { db in
            guard var lease = try Self.lease(db), lease.holder == holder else { return }
            lease.expiresAt = now
            let json = String(decoding: try JSONEncoder().encode(lease), as: UTF8.self)
            try db.execute("UPDATE controllerLease SET lease = ? WHERE name = ?", .text(json), .text(Self.leaseName))
            try db.execute("DELETE FROM controllerPresence WHERE holder = ?", .text(holder))
        }
    }

    /// The lease as stored, and every controller seen since `since`.
    public func controllers(seenSince since: Date) throws(GrayscaleError) -> (lease: ControllerLease?, present: [ControllerPresence]) {
        try read("read the controllers") { db in
            let present = try db.rows("SELECT * FROM controllerPresence WHERE seenAt >= ? ORDER BY holder", .date(since)).map { row in
                guard let role = ControllerPresence.Role(rawValue: try row.string("role")) else { throw row.missing("role", "leader or standby") }
                return ControllerPresence(holder: try row.string("holder"), role: role, seenAt: try row.date("seenAt"))
            }
            return (try Self.lease(db), present.sorted { $0.holder < $1.holder })
        }
    }
}
