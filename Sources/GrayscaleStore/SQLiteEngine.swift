import Foundation
import GRDB
import GrayscaleCore

/// The embedded default: one SQLite file in WAL mode. Every write is one IMMEDIATE
/// transaction, so two processes changing the same service queue up behind each other
/// instead of losing an update.
struct SQLiteEngine: StoreEngine {
    let writer: any DatabaseWriter
    let name: String

    static func open(path: String, busyTimeout: TimeInterval) throws(GrayscaleError) -> SQLiteEngine {
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.foreignKeysEnabled = true
        configuration.label = "grayscale"
        do {
            return SQLiteEngine(writer: try DatabasePool(path: path, configuration: configuration), name: path)
        } catch {
            throw describe(error, name: path, doing: "open")
        }
    }

    static func inMemory() throws(GrayscaleError) -> SQLiteEngine {
        do { return SQLiteEngine(writer: try DatabaseQueue(), name: ":memory:") } catch { throw describe(error, name: ":memory:", doing: "open") }
    }

    func migrate() throws(GrayscaleError) {
        let migrator = GrayscaleDatabase.migrator
        do {
            let unknown = try writer.read { db in try migrator.appliedIdentifiers(db).subtracting(migrator.migrations).sorted() }
            guard unknown.isEmpty else { throw GrayscaleDatabase.newerSchema(name, unknown) }
            try migrator.migrate(writer)
        } catch let error as GrayscaleError {
            throw error
        } catch {
            throw describe(error, doing: "migrate")
        }
    }

    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        try writer.read { db in try body(Session(db: db)) }
    }

    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        try writer.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(Session(db: db))
                return .commit
            }
            return result!
        }
    }

    func appliedMigrations() throws -> [String] {
        try writer.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid") }
    }

    func tables() throws -> [String] {
        try writer.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'grdb_migrations' ORDER BY name")
        }
    }

    func columns(of table: String) throws -> [(name: String, kind: ColumnKind)] {
        try writer.read { db in
            try db.columns(in: table).map { column in
                let type = column.type.uppercased()
                let kind: ColumnKind = switch type {
                case "INTEGER": .integer
                case "DOUBLE", "REAL": .real
                case "BLOB": .blob
                case "BOOLEAN": .boolean
                case "DATETIME": .date
                default: .text
                }
                return (column.name, kind)
            }
        }
    }

    func close() { try? (writer as? DatabasePool)?.close() }

    func describe(_ error: any Error, doing what: String) -> GrayscaleError { Self.describe(error, name: name, doing: what) }

    /// Turns SQLite's result codes into messages an operator can act on.
    static func describe(_ error: any Error, name path: String, doing what: String) -> GrayscaleError {
        if let error = error as? GrayscaleError { return error }
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

    struct Session: SQLExecutor {
        let db: Database

        @discardableResult
        func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int {
            try db.execute(sql: sql, arguments: StatementArguments(arguments.map(Self.bind)))
            return db.changesCount
        }

        func rows(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow] {
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments.map(Self.bind))).map { row in
                SQLRow(row.columnNames.enumerated().map { index, name in (name, Self.value(row[index] as DatabaseValue)) })
            }
        }

        /// Every process sees SQLite's commits through `PRAGMA data_version`; nothing to send.
        func routingChanged() {}

        /// SQLite's AUTOINCREMENT follows the largest id inserted by itself.
        func idsInserted(into table: String) {}

        static func bind(_ value: SQLValue) -> DatabaseValue {
            switch value {
            case .null: .null
            case .integer(let value): value.databaseValue
            case .real(let value): value.databaseValue
            case .text(let value): value.databaseValue
            case .blob(let value): value.databaseValue
            case .boolean(let value): value.databaseValue
            case .date(let value): value.databaseValue
            }
        }

        static func value(_ value: DatabaseValue) -> SQLValue {
            switch value.storage {
            case .null: .null
            case .int64(let value): .integer(value)
            case .double(let value): .real(value)
            case .string(let value): .text(value)
            case .blob(let value): .blob(value)
            }
        }
    }
}
