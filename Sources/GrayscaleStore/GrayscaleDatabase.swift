import Foundation
import GrayscaleCore

/// The one door to Grayscale's stored state: an SQLite file in WAL mode (the embedded
/// default) or a PostgreSQL database that several replicas share. Every state change is
/// one write transaction serialized with every other writer, so two processes changing
/// the same service queue up behind each other instead of losing an update; the store's
/// logic is written once, in SQL both engines speak.
public struct GrayscaleDatabase: Sendable {
    let engine: any StoreEngine
    /// What errors name the database by: its path, `:memory:`, or a PostgreSQL URL without password.
    public var path: String { engine.name }
    /// True when the database is PostgreSQL: shared by replicas, changes announced by NOTIFY.
    public var isShared: Bool { engine is PostgresEngine }

    /// Opens `location` and migrates it: a file path (created if needed) or
    /// `postgres://USER@HOST:PORT/DB` (its password from `$GRAYSCALE_DB_PASSWORD` or
    /// `$GRAYSCALE_DB_PASSWORD_FILE`). A newer schema, a corrupt file, an unreachable
    /// server or a lock held too long gives a clear error.
    public static func open(path location: String, busyTimeout: TimeInterval = 5) throws(GrayscaleError) -> GrayscaleDatabase {
        if PostgresLocation.isURL(location) {
            let engine = PostgresEngine(location: try PostgresLocation(url: location), busyTimeout: busyTimeout)
            try engine.migrate()
            return GrayscaleDatabase(engine: engine)
        }
        let engine = try SQLiteEngine.open(path: location, busyTimeout: busyTimeout)
        try engine.migrate()
        return GrayscaleDatabase(engine: engine)
    }

    /// A private in-memory database, for tests and dry runs.
    public static func inMemory() throws(GrayscaleError) -> GrayscaleDatabase {
        let engine = try SQLiteEngine.inMemory()
        try engine.migrate()
        return GrayscaleDatabase(engine: engine)
    }

    /// Lets go of the engine's connections (PostgreSQL); the value must not be used after.
    public func close() { engine.close() }

    static func newerSchema(_ name: String, _ unknown: [String]) -> GrayscaleError {
        GrayscaleError("\(name): this database was written by a newer Grayscale (unknown schema migrations: \(unknown.joined(separator: ", "))); upgrade grayscale to use it. Nothing was changed.")
    }

    /// The schema migrations applied to this database, in the order they ran.
    public func appliedMigrations() throws(GrayscaleError) -> [String] {
        try guarded("read the schema version") { try engine.appliedMigrations() }
    }

    /// Runs a read in a consistent snapshot.
    func read<T>(_ what: String, _ body: (any SQLExecutor) throws -> T) throws(GrayscaleError) -> T {
        try guarded(what) { try engine.read(body) }
    }

    /// Runs `body` in one write transaction: all of it is stored, or none.
    @discardableResult
    func write<T>(_ what: String, _ body: (any SQLExecutor) throws -> T) throws(GrayscaleError) -> T {
        try guarded(what) { try engine.write(body) }
    }

    func guarded<T>(_ what: String, _ body: () throws -> T) throws(GrayscaleError) -> T {
        do {
            return try body()
        } catch let error as GrayscaleError {
            throw error
        } catch {
            throw engine.describe(error, doing: what)
        }
    }
}
