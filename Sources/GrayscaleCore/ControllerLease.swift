import Foundation

/// The right to decide: one controller holds it at a time. Whoever holds it renews it on
/// every pass; when it lapses, another controller takes it with the next token. Every
/// decision the controller commits carries its token, and the store refuses a token that
/// is no longer current (a fence): a leader that was frozen past its lease and wakes up
/// cannot write over its successor. Pure values, so any store can keep the row.
public struct ControllerLease: Codable, Hashable, Sendable {
    /// Who holds it: host, process and start time, as said in logs and status.
    public var holder: String
    /// Grows by one every time the lease changes hands.
    public var token: Int64
    public var acquiredAt: Date
    public var expiresAt: Date

    public init(holder: String, token: Int64, acquiredAt: Date, expiresAt: Date) {
        self.holder = holder
        self.token = token
        self.acquiredAt = acquiredAt
        self.expiresAt = expiresAt
    }

    /// What `holder` holds after asking at `now`: the lease renewed or taken over, or nil
    /// while another controller's lease runs (this one stands by).
    public static func claim(_ current: ControllerLease?, by holder: String, period: Double, at now: Date) -> ControllerLease? {
        guard let current else { return ControllerLease(holder: holder, token: 1, acquiredAt: now, expiresAt: now.addingTimeInterval(period)) }
        if current.holder == holder {
            var renewed = current
            renewed.expiresAt = now.addingTimeInterval(period)
            return renewed
        }
        guard current.expiresAt <= now else { return nil }
        return ControllerLease(holder: holder, token: current.token + 1, acquiredAt: now, expiresAt: now.addingTimeInterval(period))
    }
}

/// A controller process as the others see it: leading, or standing by behind the leader.
public struct ControllerPresence: Codable, Hashable, Sendable {
    public enum Role: String, Codable, Hashable, Sendable { case leader, standby }
    public var holder: String
    public var role: Role
    public var seenAt: Date

    public init(holder: String, role: Role, seenAt: Date) {
        self.holder = holder
        self.role = role
        self.seenAt = seenAt
    }
}
