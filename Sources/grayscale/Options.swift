import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleStore

struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: "The database: an SQLite file, or postgres://USER@HOST:PORT/DB with the password in $GRAYSCALE_DB_PASSWORD or $GRAYSCALE_DB_PASSWORD_FILE (default: $GRAYSCALE_DB or grayscale.sqlite).")
    var db: String?

    var path: String { db ?? ProcessInfo.processInfo.environment["GRAYSCALE_DB"] ?? "grayscale.sqlite" }

    func open() throws -> GrayscaleDatabase { try GrayscaleDatabase.open(path: path) }
}

/// Who a change is recorded as, and the command line it came from.
struct ActorOptions: ParsableArguments {
    @Option(name: .customLong("as"), help: "Who the audit log records as making the change (default: $USER).")
    var actor: String?

    @Option(help: "Why: recorded in the audit log and the split history.")
    var reason: String?

    var attribution: Attribution {
        let who = actor ?? ProcessInfo.processInfo.environment["USER"] ?? "cli"
        return Attribution(actor: who, command: (["grayscale"] + CommandLine.arguments.dropFirst()).joined(separator: " "), reason: reason)
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table
    case json
}

struct FormatOptions: ParsableArguments {
    @Option(help: "Output format: table or json (stable keys, see README).")
    var format: OutputFormat = .table

    func emit<Value: Encodable>(_ value: Value, table: () -> String) throws {
        switch format {
        case .table:
            print(table())
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            print(String(decoding: try encoder.encode(value), as: UTF8.self))
        }
    }
}

/// Lays out rows in aligned columns under a header.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

extension Date {
    var shortISO: String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: self)
    }
}
