import Foundation
import GrayscaleCore

/// What `copy` did: rows per table, every table compared after.
public struct CopyReport: Sendable {
    public var rows: [(table: String, count: Int)]
}

extension GrayscaleDatabase {
    /// Tables in an order that satisfies their foreign keys (parents first).
    static let copyOrder = ["service", "release", "split", "splitChange", "rollout", "rolloutState"]

    /// Copies every table of this database into `target` (moving an installation from its
    /// SQLite file to a shared PostgreSQL, or back), in one transaction on the target, then
    /// compares every table of the two. Refuses a target that holds any row unless
    /// `replacing`, which empties it first (in the same transaction). Both must be at the
    /// same schema version.
    public func copy(to target: GrayscaleDatabase, replacing: Bool = false) throws(GrayscaleError) -> CopyReport {
        let sourceMigrations = try appliedMigrations(), targetMigrations = try target.appliedMigrations()
        guard Set(sourceMigrations) == Set(targetMigrations) else {
            throw GrayscaleError("\(path) is at schema \(sourceMigrations.last ?? "none") and \(target.path) at \(targetMigrations.last ?? "none"); upgrade grayscale and open both first")
        }
        let tables = try ordered(guarded("list the tables") { try engine.tables() })
        let targetTables = try target.guarded("list the tables") { try target.engine.tables() }
        let missing = tables.filter { table in !targetTables.contains { $0.lowercased() == table.lowercased() } }
        guard missing.isEmpty else { throw GrayscaleError("\(target.path) has no table \(missing.joined(separator: ", ")); nothing was copied") }
        let targetColumns = try target.guarded("read the columns") {
            try Dictionary(uniqueKeysWithValues: tables.map { ($0.lowercased(), try target.engine.columns(of: $0)) })
        }
        let contents = try read("read every table") { db in try tables.map { table in (table, try db.rows("SELECT * FROM \(table)")) } }

        let report = try target.write("copy into \(target.path)") { db -> CopyReport in
            var occupied: [String] = []
            for table in tables {
                let count = try db.row("SELECT COUNT(*) AS n FROM \(table)")?.int("n") ?? 0
                if count > 0 { occupied.append("\(table) (\(count) rows)") }
            }
            if !occupied.isEmpty {
                guard replacing else {
                    throw GrayscaleError("\(target.path) is not empty: \(occupied.joined(separator: ", ")); nothing was copied (pass --replace to empty it first)")
                }
                for table in tables.reversed() { try db.execute("DELETE FROM \(table)") }
            }
            var rows: [(String, Int)] = []
            for (table, tableRows) in contents {
                let columns = targetColumns[table.lowercased()] ?? []
                for row in tableRows {
                    let values = try columns.map { column in try Self.convert(row[column.name], to: column.kind, column: "\(table).\(column.name)") }
                    let marks = Array(repeating: "?", count: columns.count).joined(separator: ", ")
                    try db.execute("INSERT INTO \(table) (\(columns.map(\.name).joined(separator: ", "))) VALUES (\(marks))", values)
                }
                if columns.contains(where: { $0.name.lowercased() == "id" && $0.kind == .integer }) { try db.idsInserted(into: table) }
                rows.append((table, tableRows.count))
                // Read back before committing: a copy that does not compare equal is not kept.
                let copied = try Self.canonical(try db.rows("SELECT * FROM \(table)"), columns: columns, table: table)
                if let difference = Self.difference(table, try Self.canonical(tableRows, columns: columns, table: table), copied) {
                    throw GrayscaleError("the copy into \(target.path) would differ from \(path) (\(difference)); nothing was copied")
                }
            }
            return CopyReport(rows: rows)
        }
        return report
    }

    /// Every table of the two databases compared row by row, values taken as the column's
    /// kind (a date as its millisecond, a boolean as 0 or 1); what differs, if anything.
    public func compare(with other: GrayscaleDatabase) throws(GrayscaleError) -> [String] {
        let tables = try ordered(guarded("list the tables") { try engine.tables() })
        var differences: [String] = []
        for table in tables {
            let columns = try guarded("read the columns") { try engine.columns(of: table) }
            func canonical(_ database: GrayscaleDatabase) throws(GrayscaleError) -> [String] {
                try database.read("read \(table)") { db in try Self.canonical(try db.rows("SELECT * FROM \(table)"), columns: columns, table: table) }
            }
            if let difference = Self.difference(table, try canonical(self), try canonical(other)) { differences.append(difference) }
        }
        return differences
    }

    /// A table's rows as comparable text, sorted (the engines' text collations differ).
    static func canonical(_ rows: [SQLRow], columns: [(name: String, kind: ColumnKind)], table: String) throws -> [String] {
        try rows.map { row in
            try columns.map { column in try canonical(row[column.name], as: column.kind, column: "\(table).\(column.name)") }
                .joined(separator: "\u{1F}")
        }.sorted()
    }

    static func difference(_ table: String, _ mine: [String], _ theirs: [String]) -> String? {
        if mine.count != theirs.count { return "\(table): \(mine.count) rows in one, \(theirs.count) in the other" }
        guard let index = Array(zip(mine, theirs)).firstIndex(where: { $0 != $1 }) else { return nil }
        let columns = zip(mine[index].split(separator: "\u{1F}", omittingEmptySubsequences: false), theirs[index].split(separator: "\u{1F}", omittingEmptySubsequences: false))
        let first = columns.enumerated().first { $0.element.0 != $0.element.1 }
        return "\(table): row \(index + 1) differs" + (first.map { " in column \($0.offset + 1): \($0.element.0) ≠ \($0.element.1)" } ?? "")
    }

    private func ordered(_ tables: [String]) -> [String] {
        let first = Self.copyOrder.compactMap { name in tables.first { $0.lowercased() == name.lowercased() } }
        return first + tables.filter { !first.contains($0) }.sorted()
    }

    static func convert(_ value: SQLValue, to kind: ColumnKind, column: String) throws -> SQLValue {
        if value == .null { return .null }
        let row = SQLRow([("v", value)])
        switch kind {
        case .date: return .date(try row.date("v"))
        case .boolean: return .boolean(try row.bool("v"))
        case .integer: return .integer(try row.int64("v"))
        case .real: return .real(try row.double("v"))
        case .blob: return .blob(try row.data("v"))
        case .text:
            if case .text = value { return value }
            throw GrayscaleError("\(column): holds \(value), expected text")
        }
    }

    static func canonical(_ value: SQLValue, as kind: ColumnKind, column: String) throws -> String {
        switch try convert(value, to: kind, column: column) {
        case .null: "∅"
        case .date(let date): "\(Int64((date.timeIntervalSince1970 * 1000).rounded()))"
        case .boolean(let flag): flag ? "1" : "0"
        case .integer(let number): "\(number)"
        case .real(let number): "\(number)"
        case .blob(let data): data.base64EncodedString()
        case .text(let text): text
        }
    }
}
