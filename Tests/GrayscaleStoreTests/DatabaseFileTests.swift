import Foundation
import GRDB
import Testing
import GrayscaleCore
@testable import GrayscaleStore

@Suite("Database file safety")
struct DatabaseFileTests {
    @Test("a database from a newer schema is refused and left untouched")
    func newerSchema() throws {
        let directory = try TemporaryDirectory()
        let database = try GrayscaleDatabase.open(path: directory.databasePath)
        try database.publish(draft(1, "v1"), salt: "s", by: operatorAlice, at: t0)
        let queue = try DatabaseQueue(path: directory.databasePath)
        try queue.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        try queue.close()
        let error = #expect(throws: GrayscaleError.self) { try GrayscaleDatabase.open(path: directory.databasePath) }
        #expect(error?.message == "\(directory.databasePath): this database was written by a newer Grayscale (unknown schema migrations: v99-from-the-future); upgrade grayscale to use it. Nothing was changed.")
        let releases = try DatabaseQueue(path: directory.databasePath).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM release") }
        #expect(releases == 1)
    }

    @Test("a file that is not a database gives a clear error and is not overwritten")
    func corruptFile() throws {
        let directory = try TemporaryDirectory()
        let garbage = Data(repeating: 0x42, count: 8192)
        try garbage.write(to: URL(fileURLWithPath: directory.databasePath))
        let error = #expect(throws: GrayscaleError.self) { try GrayscaleDatabase.open(path: directory.databasePath) }
        #expect(error?.message.hasPrefix("\(directory.databasePath): cannot open: the file is not a Grayscale database or is corrupt") == true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.databasePath)) == garbage)
    }

    @Test("a database locked by another writer gives a clear error, not a crash")
    func lockedDatabase() throws {
        let directory = try TemporaryDirectory()
        let database = try GrayscaleDatabase.open(path: directory.databasePath, busyTimeout: 0.2)
        try database.publish(draft(1, "v1"), salt: "s", by: operatorAlice, at: t0)
        try database.publish(draft(2, "v2"), salt: "s2", by: operatorAlice, at: t0)

        // Another connection holds the write lock.
        let other = try DatabaseQueue(path: directory.databasePath)
        try other.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN IMMEDIATE")
            defer { try? db.execute(sql: "ROLLBACK") }
            let error = #expect(throws: GrayscaleError.self) {
                try database.setCanaryTraffic("engine", range: .everyone, by: operatorAlice, at: t0)
            }
            #expect(error?.message == "\(directory.databasePath): cannot set-traffic: the database is locked by another process; nothing was changed, try again")
        }
        #expect(try database.split("engine").range.isEmpty)
    }

    @Test("the database is in WAL mode")
    func walMode() throws {
        let directory = try TemporaryDirectory()
        _ = try GrayscaleDatabase.open(path: directory.databasePath)
        let mode = try DatabaseQueue(path: directory.databasePath).read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
    }
}

@Suite("Outbox and metric samples")
struct OutboxTests {
    @Test("a notification stays queued until delivered, and a failure schedules a retry", arguments: StoreBackend.allCases)
    func outbox(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let queued = try database.enqueue(channel: "#releases", text: "canary 8 at 5%", service: "engine", at: t0)
        let id = try #require(queued.id)
        #expect(try database.dueNotifications(at: t0).map(\.id) == [id])
        try database.markFailed(id, error: "HTTP 503", retryAt: minutes(1))
        #expect(try database.dueNotifications(at: t0).isEmpty)
        let retry = try store.open().dueNotifications(at: minutes(1))
        #expect(retry.map(\.attempts) == [1])
        #expect(retry.first?.lastError == "HTTP 503")
        try database.markDelivered(id, at: minutes(1))
        #expect(try database.dueNotifications(at: minutes(10)).isEmpty)
    }

    @Test("metric samples are stored per release and read back in window order", arguments: StoreBackend.allCases)
    func samples(_ backend: StoreBackend) throws {
        let database = try TestStore(backend).open()
        try database.record([
            MetricSample(service: "engine", releaseNumber: 8, route: .canary, windowStart: minutes(1), windowEnd: minutes(2), requests: 90, errors: 3),
            MetricSample(service: "engine", releaseNumber: 8, route: .canary, windowStart: minutes(0), windowEnd: minutes(1), requests: 100, errors: 1, latencyP99Ms: 210),
            MetricSample(service: "engine", releaseNumber: 7, route: .stable, windowStart: minutes(0), windowEnd: minutes(1), requests: 900, errors: 1),
        ])
        let canary = try database.samples("engine", release: 8, since: t0)
        #expect(canary.map(\.requests) == [100, 90])
        #expect(canary.first?.latencyP99Ms == 210)
        #expect(try database.samples("engine", release: 8, since: minutes(1)).map(\.errors) == [3])
    }
}
