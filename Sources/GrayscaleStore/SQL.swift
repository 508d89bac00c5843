import Foundation
import GRDB
import GrayscaleCore

/// A value bound to or read from a statement, the same on SQLite and PostgreSQL.
public enum SQLValue: Hashable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)
    case boolean(Bool)
    case date(Date)
}

/// One row of a result, its columns looked up by name (PostgreSQL folds unquoted names
/// to lower case, so the lookup ignores case).
public struct SQLRow: Sendable {
    var values: [String: SQLValue]

    init(_ pairs: [(String, SQLValue)]) {
        values = Dictionary(pairs.map { ($0.0.lowercased(), $0.1) }, uniquingKeysWith: { first, _ in first })
    }

    public subscript(_ column: String) -> SQLValue { values[column.lowercased()] ?? .null }

    func missing(_ column: String, _ expected: String) -> GrayscaleError {
        GrayscaleError("stored column \(column) holds \(self[column]), expected \(expected)")
    }

    func int64(_ column: String) throws -> Int64 {
        switch self[column] {
        case .integer(let value): return value
        case .boolean(let value): return value ? 1 : 0
        case .real(let value) where value.rounded() == value && abs(value) < 9e15: return Int64(value)
        default: throw missing(column, "an integer")
        }
    }
    func int(_ column: String) throws -> Int { Int(try int64(column)) }
    func optionalInt64(_ column: String) throws -> Int64? { self[column] == .null ? nil : try int64(column) }
    func optionalInt(_ column: String) throws -> Int? { self[column] == .null ? nil : try int(column) }

    func double(_ column: String) throws -> Double {
        switch self[column] {
        case .real(let value): return value
        case .integer(let value): return Double(value)
        default: throw missing(column, "a number")
        }
    }
    func optionalDouble(_ column: String) throws -> Double? { self[column] == .null ? nil : try double(column) }

    func string(_ column: String) throws -> String {
        guard case .text(let value) = self[column] else { throw missing(column, "text") }
        return value
    }
    func optionalString(_ column: String) throws -> String? { self[column] == .null ? nil : try string(column) }

    func bool(_ column: String) throws -> Bool {
        switch self[column] {
        case .boolean(let value): return value
        case .integer(let value): return value != 0
        default: throw missing(column, "a boolean")
        }
    }

    func date(_ column: String) throws -> Date {
        switch self[column] {
        case .date(let value): return value
        // SQLite keeps dates as GRDB writes them: "yyyy-MM-dd HH:mm:ss.SSS", UTC.
        case .text(let text):
            guard let date = Date.fromDatabaseValue(text.databaseValue) else { throw missing(column, "a date") }
            return date
        default: throw missing(column, "a date")
        }
    }
    func optionalDate(_ column: String) throws -> Date? { self[column] == .null ? nil : try date(column) }

    func data(_ column: String) throws -> Data {
        switch self[column] {
        case .blob(let value): return value
        case .text(let value): return Data(value.utf8)
        default: throw missing(column, "bytes")
        }
    }
    func optionalData(_ column: String) throws -> Data? { self[column] == .null ? nil : try data(column) }

    func json<T: Decodable>(_ type: T.Type, _ column: String) throws -> T {
        do {
            return try JSONColumn.decoder.decode(type, from: try data(column))
        } catch let error as DecodingError {
            throw GrayscaleError("stored column \(column) does not hold a \(T.self): \(error)")
        }
    }
    func optionalJSON<T: Decodable>(_ type: T.Type, _ column: String) throws -> T? { self[column] == .null ? nil : try json(type, column) }
}

/// JSON stored in a text column, written the way GRDB's Codable records wrote it (sorted
/// keys, dates in milliseconds) so files written before the store was shared still read.
enum JSONColumn {
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dataEncodingStrategy = .base64
        encoder.dateEncodingStrategy = .millisecondsSince1970
        encoder.nonConformingFloatEncodingStrategy = .throw
        encoder.outputFormatting = .sortedKeys
        return encoder
    }
    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dataDecodingStrategy = .base64
        decoder.dateDecodingStrategy = .millisecondsSince1970
        decoder.nonConformingFloatDecodingStrategy = .throw
        return decoder
    }
}

/// Shorthands for binding Swift values.
extension SQLValue {
    static func of(_ value: Int) -> SQLValue { .integer(Int64(value)) }
    static func of(_ value: Int?) -> SQLValue { value.map { .integer(Int64($0)) } ?? .null }
    static func of(_ value: Int64?) -> SQLValue { value.map { .integer($0) } ?? .null }
    static func of(_ value: String?) -> SQLValue { value.map { .text($0) } ?? .null }
    static func of(_ value: Double?) -> SQLValue { value.map { .real($0) } ?? .null }
    static func of(_ value: Date?) -> SQLValue { value.map { .date($0) } ?? .null }
    static func of(_ value: Bool) -> SQLValue { .boolean(value) }
    static func of(_ value: Data?) -> SQLValue { value.map { .blob($0) } ?? .null }
    static func json<T: Encodable>(_ value: T?) throws -> SQLValue {
        guard let value else { return .null }
        return .text(String(decoding: try JSONColumn.encoder.encode(value), as: UTF8.self))
    }
}

/// One open transaction on either engine. Statements use `?` placeholders.
protocol SQLExecutor {
    /// Runs a statement; returns how many rows it changed.
    @discardableResult
    func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int
    func rows(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow]
    /// Tells every replica's routing watch, when the transaction commits, that splits or releases changed.
    func routingChanged() throws
    /// After rows were inserted with their ids given: the next generated id follows the largest.
    func idsInserted(into table: String) throws
}

extension SQLExecutor {
    @discardableResult
    func execute(_ sql: String, _ arguments: SQLValue...) throws -> Int { try execute(sql, arguments) }
    func rows(_ sql: String, _ arguments: SQLValue...) throws -> [SQLRow] { try rows(sql, arguments) }
    func row(_ sql: String, _ arguments: SQLValue...) throws -> SQLRow? { try rows(sql, arguments).first }

    /// Inserts one row; returns its generated `id` when `returningID`.
    @discardableResult
    func insert(_ table: String, _ columns: KeyValuePairs<String, SQLValue>, returningID: Bool = false,
                onConflictDoNothing: Bool = false) throws -> Int64? {
        let names = columns.map(\.key).joined(separator: ", ")
        let marks = Array(repeating: "?", count: columns.count).joined(separator: ", ")
        var sql = "INSERT INTO \(table) (\(names)) VALUES (\(marks))"
        if onConflictDoNothing { sql += " ON CONFLICT DO NOTHING" }
        if returningID {
            return try rows(sql + " RETURNING id", columns.map(\.value)).first?.int64("id")
        }
        try execute(sql, columns.map(\.value))
        return nil
    }
}

/// Where the store keeps its tables: an SQLite file (the embedded default) or a PostgreSQL
/// database that several replicas share.
protocol StoreEngine: Sendable {
    /// What errors name the database by: a path, or a URL without its password.
    var name: String { get }
    /// A read in one consistent snapshot.
    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T
    /// One write transaction, serialized with every other writer: all of it is stored, or none.
    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T
    /// Turns the engine's errors into messages an operator can act on.
    func describe(_ error: any Error, doing what: String) -> GrayscaleError
    /// The identifiers of the schema migrations applied, in order.
    func appliedMigrations() throws -> [String]
    /// Names of the tables, for copying and comparing a whole database.
    func tables() throws -> [String]
    /// Each column of `table` and whether it holds a date, a boolean, bytes or a number.
    func columns(of table: String) throws -> [(name: String, kind: ColumnKind)]
    func close()
}

/// What a column holds, as far as converting between engines needs to know.
enum ColumnKind: Sendable { case integer, real, text, blob, boolean, date }
