import Foundation
import GRDB
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
            try MetricSample
                .filter(Column("service") == service && Column("releaseNumber") == number && Column("windowStart") >= since)
                .order(Column("windowStart"))
                .fetchAll(db)
        }
    }

    // MARK: - Notification outbox

    /// Queues a message; it stays until `markDelivered` records its delivery.
    @discardableResult
    public func enqueue(channel: String, text: String, service: String?, at now: Date) throws(GrayscaleError) -> Notification {
        try write("queue a notification") { db in
            var notification = Notification(createdAt: now, service: service, channel: channel, text: text,
                                            attempts: 0, nextAttemptAt: now, deliveredAt: nil, lastError: nil)
            try notification.insert(db)
            return notification
        }
    }

    /// Undelivered messages due by `now`, oldest first.
    public func dueNotifications(at now: Date, limit: Int = 100) throws(GrayscaleError) -> [Notification] {
        try read("read the outbox") { db in
            try Notification
                .filter(Column("deliveredAt") == nil && Column("nextAttemptAt") <= now)
                .order(Column("id"))
                .limit(limit)
                .fetchAll(db)
        }
    }

    public func markDelivered(_ id: Int64, at now: Date) throws(GrayscaleError) {
        try write("mark a notification delivered") { db in
            try db.execute(sql: "UPDATE notification SET deliveredAt = ?, attempts = attempts + 1 WHERE id = ?",
                           arguments: [now, id])
        }
    }

    /// Records a failed attempt; the message is tried again from `retryAt`.
    public func markFailed(_ id: Int64, error: String, retryAt: Date) throws(GrayscaleError) {
        try write("mark a notification failed") { db in
            try db.execute(sql: "UPDATE notification SET attempts = attempts + 1, lastError = ?, nextAttemptAt = ? WHERE id = ?",
                           arguments: [error, retryAt, id])
        }
    }

    /// Every undelivered message, oldest first: the notifier sends each service's in order.
    public func undeliveredNotifications(limit: Int = 1000) throws(GrayscaleError) -> [Notification] {
        try read("read the outbox") { db in
            try Notification.filter(Column("deliveredAt") == nil).order(Column("id")).limit(limit).fetchAll(db)
        }
    }

    /// Records a Slack event id; false when it was already there (a retry).
    public func markSlackEventHandled(_ eventId: String, at now: Date) throws(GrayscaleError) -> Bool {
        try write("record a Slack event") { db in
            try db.execute(sql: "INSERT OR IGNORE INTO slackEvent (eventId, receivedAt) VALUES (?, ?)", arguments: [eventId, now])
            return db.changesCount == 1
        }
    }
}
