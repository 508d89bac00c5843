import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleStore

struct DatabaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Move an installation between databases.",
        subcommands: [Copy.self])

    struct Copy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy every table from one database to another and compare them after.",
            discussion: """
                For moving from the embedded SQLite file to a shared PostgreSQL:
                  grayscale db copy --from grayscale.sqlite --to postgres://grayscale@db.internal:5432/grayscale
                The password comes from $GRAYSCALE_DB_PASSWORD or $GRAYSCALE_DB_PASSWORD_FILE. Stop every
                grayscale process that writes to the source first. A target that holds any row is refused
                unless --replace, which empties it in the same transaction as the copy.
                """)

        @Option(help: "The database to copy: an SQLite file or a postgres:// URL.") var from: String
        @Option(help: "The database to copy into (created tables, migrated to this grayscale's schema).") var to: String
        @Flag(help: "Empty a target that already holds rows instead of refusing.") var replace = false

        func run() throws {
            guard from != to else { throw GrayscaleError("--from and --to name the same database") }
            if !PostgresLocation.isURL(from), !FileManager.default.fileExists(atPath: from) {
                throw GrayscaleError("\(from): no such database file")
            }
            let source = try GrayscaleDatabase.open(path: from)
            let target = try GrayscaleDatabase.open(path: to)
            defer { source.close(); target.close() }
            let report = try source.copy(to: target, replacing: replace)
            print(table(["TABLE", "ROWS"], report.rows.map { [$0.table, String($0.count)] }))
            print("copied \(report.rows.reduce(0) { $0 + $1.count }) rows from \(source.path) to \(target.path); every table compared equal")
        }
    }
}
