import Foundation
import GrayscaleCore

extension GrayscaleDatabase {
    /// Announces a published release: records it (the first announcement stands; another
    /// one changes nothing and says when the first was), audits it and queues `message` for
    /// the release channel, in one transaction. Returns the announcement that stands and
    /// whether it is this one.
    /// `post: false` records and audits it without a message (a platform release's services
    /// after the first: one message names them all).
    public func announce(_ service: String, number: Int, notes: String, by who: Attribution, channel: String, at now: Date, post: Bool = true,
                         message: (Announcement, Release) -> String) throws(GrayscaleError) -> (announcement: Announcement, new: Bool) {
        try write("announce \(service) release \(number)") { db in
            guard try Self.serviceExists(service, db) else { throw GrayscaleError("unknown service '\(service)'", kind: .notFound) }
            let state = try Self.loadState(service, db)
            guard let release = state.release(number: number) else {
                throw GrayscaleError("\(service) has no release \(number) (publish it first: grayscale release publish)", kind: .notFound)
            }
            guard release.status == .canary else {
                throw GrayscaleError("\(service) release \(number) is \(release.status.rawValue): only a release still to roll out is announced",
                                     kind: .conflict)
            }
            if let first = try Self.announcement(service, number: number, db) { return (first, false) }
            let announcement = Announcement(service: service, release: number, at: now, actor: who.actor, notes: notes)
            try db.insert("announcement", ["service": .text(service), "number": .of(number), "announcedAt": .date(now),
                                           "actor": .text(who.actor), "notes": .text(notes)])
            try AuditEntry(at: now, service: service, actor: who.actor, action: "announce", command: who.command, reason: who.reason,
                           outcome: "done", detail: "release \(release.ref) announced", splitBefore: nil, splitAfter: nil).insert(db)
            if post {
                var notification = Notification(createdAt: now, service: service, channel: channel, text: message(announcement, release),
                                                attempts: 0, nextAttemptAt: now, deliveredAt: nil, lastError: nil)
                try notification.insert(db)
            }
            return (announcement, true)
        }
    }

    /// The announcement of a release, if it was announced.
    public func announcement(_ service: String, number: Int) throws(GrayscaleError) -> Announcement? {
        try read("read the announcement of \(service) release \(number)") { db in try Self.announcement(service, number: number, db) }
    }

    static func announcement(_ service: String, number: Int, _ db: any SQLExecutor) throws -> Announcement? {
        try db.row("SELECT * FROM announcement WHERE service = ? AND number = ?", .text(service), .of(number)).map { row in
            Announcement(service: try row.string("service"), release: try row.int("number"), at: try row.date("announcedAt"),
                         actor: try row.string("actor"), notes: try row.string("notes"))
        }
    }
}
