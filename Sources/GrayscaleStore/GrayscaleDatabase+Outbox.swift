import Foundation
import GrayscaleCore

extension GrayscaleDatabase {
    // MARK: - Metric samples

    public func record(_ samples: [MetricSample]) throws(GrayscaleError) {
        try write("record metric samples") { db in
            for sample in samples { try sample.insert(db) }
        }
    }

    /// A release's samples whose window starts at or after `since`, oldest first.
    public func samples(_ service: String, release number: Int, since: Date) throws(GrayscaleError) -> [MetricSample] {
        try read("read metric samples") { db in
            try db.rows("SELECT * FROM metricSample WHERE service = ? AND releaseNumber = ? AND windowStart >= ? ORDER BY windowStart, id",
                        .text(service), .of(number), .date(since)).map(MetricSample.init(row:))
        }
    }

    // MARK: - Notification outbox

    /// Queues a message; it stays until `markDelivered` records its delivery. `threadTs` posts
    /// it inside a thread; `responseUrl` sends it to a slash command's response URL instead.
    @discardableResult
    public func enqueue(channel: String, text: String, service: String?, at now: Date, threadTs: String? = nil,
                        responseUrl: String? = nil) throws(GrayscaleError) -> Notification {
        try write("queue a notification") { db in
            var notification = Notification(createdAt: now, service: service, channel: channel, text: text,
                                            attempts: 0, nextAttemptAt: now, deliveredAt: nil, lastError: nil,
                                            threadTs: threadTs, responseUrl: responseUrl)
            try notification.insert(db)
            return notification
        }
    }

    /// Undelivered messages due by `now`, oldest first.
    public func dueNotifications(at now: Date, limit: Int = 100) throws(GrayscaleError) -> [Notification] {
        try read("read the outbox") { db in
            try db.rows("SELECT * FROM notification WHERE deliveredAt IS NULL AND nextAttemptAt <= ? ORDER BY id LIMIT ?",
                        .date(now), .of(limit)).map(Notification.init(row:))
        }
    }

    public func markDelivered(_ id: Int64, at now: Date) throws(GrayscaleError) {
        try write("mark a notification delivered") { db in
            try db.execute("UPDATE notification SET deliveredAt = ?, attempts = attempts + 1 WHERE id = ?", .date(now), .integer(id))
        }
    }

    /// Records a failed attempt; the message is tried again from `retryAt`.
    public func markFailed(_ id: Int64, error: String, retryAt: Date) throws(GrayscaleError) {
        try write("mark a notification failed") { db in
            try db.execute("UPDATE notification SET attempts = attempts + 1, lastError = ?, nextAttemptAt = ? WHERE id = ?",
                           .text(error), .date(retryAt), .integer(id))
        }
    }

    /// Every undelivered message (set-aside ones excluded), oldest first.
    public func undeliveredNotifications(limit: Int = 1000) throws(GrayscaleError) -> [Notification] {
        try read("read the outbox") { db in
            try db.rows("SELECT * FROM notification WHERE deliveredAt IS NULL AND deadAt IS NULL ORDER BY id LIMIT ?", .of(limit))
                .map(Notification.init(row:))
        }
    }

    /// The oldest `perService` undelivered messages of every service, oldest first: a
    /// service with a long backlog cannot keep the others' messages from being read.
    public func outboxHeads(perService: Int = 20) throws(GrayscaleError) -> [Notification] {
        try read("read the outbox") { db in
            try db.rows("""
                SELECT * FROM (
                    SELECT *, ROW_NUMBER() OVER (PARTITION BY coalesce(service, '') ORDER BY id) AS position
                    FROM notification WHERE deliveredAt IS NULL AND deadAt IS NULL) AS heads
                WHERE position <= ? ORDER BY id
                """, .of(perService)).map(Notification.init(row:))
        }
    }

    /// Sets a message Slack refused for good aside: kept (with why) for the dashboard and
    /// audited, no longer retried, and the service's later messages go on.
    public func markDead(_ id: Int64, error: String, at now: Date) throws(GrayscaleError) {
        try write("set a notification aside") { db in
            guard let message = try db.row("SELECT * FROM notification WHERE id = ?", .integer(id)).map(Notification.init(row:)) else { return }
            try db.execute("UPDATE notification SET attempts = attempts + 1, lastError = ?, deadAt = ? WHERE id = ?",
                           .text(error), .date(now), .integer(id))
            try AuditEntry(at: now, service: message.service, actor: "grayscale-notifier", action: "notification-dead", command: nil,
                           reason: error, outcome: "refused", detail: "not delivered to \(message.channel): \(error); message: \(message.text)",
                           splitBefore: nil, splitAfter: nil).insert(db)
        }
    }

    /// Messages set aside, newest first.
    public func deadNotifications(limit: Int = 100) throws(GrayscaleError) -> [Notification] {
        try read("read the outbox") { db in
            try db.rows("SELECT * FROM notification WHERE deadAt IS NOT NULL ORDER BY id DESC LIMIT ?", .of(limit)).map(Notification.init(row:))
        }
    }

    /// Records a Slack event id; false when it was already there (a retry).
    public func markSlackEventHandled(_ eventId: String, at now: Date) throws(GrayscaleError) -> Bool {
        try write("record a Slack event") { db in
            try db.execute("INSERT INTO slackEvent (eventId, receivedAt) VALUES (?, ?) ON CONFLICT DO NOTHING", .text(eventId), .date(now)) == 1
        }
    }
}
