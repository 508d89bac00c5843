import Foundation
import GRDB
import GrayscaleCore

/// The one door to Grayscale's SQLite database (WAL mode). Every state change is
/// one IMMEDIATE transaction, so two processes changing the same service queue up
/// behind each other instead of losing an update.
public struct GrayscaleDatabase: Sendable {
    let writer: any DatabaseWriter
    /// What errors name the database by: its path, or `:memory:`.
    public let path: String

    /// Opens (creating if needed) the database file at `path` and migrates it.
    /// A newer schema, a corrupt file or a lock held too long gives a clear error.
    public static func open(path: String, busyTimeout: TimeInterval = 5) throws(GrayscaleError) -> GrayscaleDatabase {
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.foreignKeysEnabled = true
        configuration.label = "grayscale"
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw describe(error, path: path, doing: "open")
        }
        let database = GrayscaleDatabase(writer: pool, path: path)
        try database.migrate()
        return database
    }

    /// A private in-memory database, for tests and dry runs.
    public static func inMemory() throws(GrayscaleError) -> GrayscaleDatabase {
        let queue: DatabaseQueue
        do { queue = try DatabaseQueue() } catch { throw describe(error, path: ":memory:", doing: "open") }
        let database = GrayscaleDatabase(writer: queue, path: ":memory:")
        try database.migrate()
        return database
    }

    private func migrate() throws(GrayscaleError) {
        let migrator = Self.migrator
        try guarded("migrate") {
            let unknown = try writer.read { db in
                try migrator.appliedIdentifiers(db).subtracting(migrator.migrations).sorted()
            }
            guard unknown.isEmpty else {
                throw GrayscaleError("\(path): this database was written by a newer Grayscale (unknown schema migrations: \(unknown.joined(separator: ", "))); upgrade grayscale to use it. Nothing was changed.")
            }
            try migrator.migrate(writer)
        }
    }

    /// Runs a read in a consistent snapshot.
    func read<T>(_ what: String, _ body: (Database) throws -> T) throws(GrayscaleError) -> T {
        try guarded(what) { try writer.read(body) }
    }

    /// Runs `body` in one IMMEDIATE write transaction: all of it is stored, or none.
    func write<T>(_ what: String, _ body: (Database) throws -> T) throws(GrayscaleError) -> T {
        try guarded(what) {
            try writer.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        }
    }

    func guarded<T>(_ what: String, _ body: () throws -> T) throws(GrayscaleError) -> T {
        do {
            return try body()
        } catch let error as GrayscaleError {
            throw error
        } catch {
            throw Self.describe(error, path: path, doing: what)
        }
    }

    /// Turns SQLite's result codes into messages an operator can act on.
    static func describe(_ error: any Error, path: String, doing what: String) -> GrayscaleError {
        guard let error = error as? DatabaseError else {
            return GrayscaleError("\(path): cannot \(what): \(error)")
        }
        switch error.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return GrayscaleError("\(path): cannot \(what): the database is locked by another process; nothing was changed, try again", kind: .busy)
        case .SQLITE_NOTADB, .SQLITE_CORRUPT:
            return GrayscaleError("\(path): cannot \(what): the file is not a Grayscale database or is corrupt (\(error.message ?? "SQLite error \(error.resultCode.rawValue)")); it was left untouched")
        case .SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_PERM:
            return GrayscaleError("\(path): cannot \(what): \(error.message ?? "cannot open the file") (check the path and its permissions)")
        case .SQLITE_FULL:
            return GrayscaleError("\(path): cannot \(what): the disk is full; nothing was changed")
        default:
            return GrayscaleError("\(path): cannot \(what): \(error.message ?? "SQLite error \(error.resultCode.rawValue)")")
        }
    }
}
