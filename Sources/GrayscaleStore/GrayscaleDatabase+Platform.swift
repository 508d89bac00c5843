import Foundation
import GrayscaleCore

/// A platform release as stored: its label and its services' releases.
public struct PlatformReleaseRecord: Hashable, Sendable {
    public var label: String
    public var releases: [Release]

    /// Still being rolled out: one of its services' releases is the canary.
    public var isActive: Bool { releases.contains { $0.status == .canary } }
    public var services: [String] { releases.map(\.service) }
}

extension GrayscaleDatabase {
    /// Publishes several services' releases as one platform release (DESIGN.md "Platform
    /// releases"): every one with the same `salt` and the platform's label, all in one
    /// transaction with an audit entry each. A label already used, a service named twice or
    /// a release any service refuses publishes nothing.
    @discardableResult
    public func publishPlatform(_ label: String, _ drafts: [ReleaseDraft], salt: String, by who: Attribution,
                                at now: Date) throws(GrayscaleError) -> [ServiceState] {
        do {
            try PlatformRelease.validate(label: label, drafts: drafts)
            return try write("publish platform release \(label)") { db in
                if let used = try db.row("SELECT service, number FROM release WHERE platform = ? LIMIT 1", .text(label)) {
                    throw GrayscaleError("platform release \(label) was published already (\(try used.string("service")) release "
                        + "\(try used.int("number")) is in it); each platform release needs its own label")
                }
                var states: [ServiceState] = []
                for draft in drafts {
                    let exists = try Self.serviceExists(draft.service, db)
                    let before = exists ? try Self.loadState(draft.service, db) : ServiceState(service: draft.service)
                    var after = before
                    do {
                        _ = try after.publish(draft, salt: salt, at: now)
                    } catch let error as GrayscaleError {
                        throw GrayscaleError("platform release \(label): \(error.message); nothing was published")
                    }
                    guard after.canary?.number == draft.number else {
                        throw GrayscaleError("platform release \(label): \(draft.service) has no stable release yet, so release "
                            + "\(draft.number) would become its stable, not a canary; publish a first release of \(draft.service) on its own")
                    }
                    if !exists {
                        try db.execute("INSERT INTO service (name, createdAt) VALUES (?, ?)", .text(draft.service), .date(now))
                    }
                    try Self.store(after, replacing: before, action: "publish", by: who, at: now, db)
                    states.append(after)
                }
                return states
            }
        } catch {
            try? write("audit a refused platform publish") { db in
                let entry = AuditEntry(at: now, service: nil, actor: who.actor, action: "publish-platform", command: who.command,
                                       reason: who.reason, outcome: "refused", detail: error.message, splitBefore: nil, splitAfter: nil)
                try entry.insert(db)
            }
            throw error
        }
    }

    /// Every platform release, oldest first.
    public func platformReleases() throws(GrayscaleError) -> [PlatformReleaseRecord] {
        try read("read the platform releases") { db in
            let releases = try db.rows("SELECT * FROM release WHERE platform IS NOT NULL ORDER BY publishedAt, service").map(Release.init(row:))
            var order: [String] = [], members: [String: [Release]] = [:]
            for release in releases {
                guard let label = release.platform else { continue }
                if members[label] == nil { order.append(label) }
                members[label, default: []].append(release)
            }
            return order.map { PlatformReleaseRecord(label: $0, releases: members[$0] ?? []) }
        }
    }

    /// The platform release the bot's `-m platform` means: the newest one still rolling
    /// out, else the newest one.
    public func currentPlatformRelease() throws(GrayscaleError) -> PlatformReleaseRecord? {
        let all = try platformReleases()
        return all.last(where: \.isActive) ?? all.last
    }

    /// True when every peer of `platform` is as it was read: its release's status and its rollout's revision.
    static func peersUnchanged(_ platform: PlatformContext, _ db: any SQLExecutor) throws -> Bool {
        for peer in platform.peers where !peer.left && !peer.rolledBack && !peer.promoted {
            let status = try db.row("SELECT status FROM release WHERE service = ? AND number = ?", .text(peer.service), .of(peer.release.number))
            guard try status?.string("status") == peer.status.rawValue,
                  (try RolloutStateRow.fetch(peer.service, db)?.revision ?? 0) == peer.revision else { return false }
        }
        return true
    }

    /// The other services of platform release `label`, as the controller's tick of `service` reads them.
    static func platformContext(_ label: String, except service: String, _ db: any SQLExecutor) throws -> PlatformContext {
        let members = try db.rows("SELECT * FROM release WHERE platform = ? AND service <> ? ORDER BY service", .text(label), .text(service))
            .map(Release.init(row:))
        let peers = try members.map { release in
            let row = try RolloutStateRow.fetch(release.service, db)
            return PlatformPeer(service: release.service, release: release.ref, status: release.status,
                                rollout: row?.state.release.number == release.number ? row?.state : nil, revision: row?.revision ?? 0)
        }
        return PlatformContext(label: label, peers: peers)
    }
}
