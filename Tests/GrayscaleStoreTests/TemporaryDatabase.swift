import Foundation
import GrayscaleCore
import GrayscaleStore
import GrayscaleTestSupport
import Testing

/// A real SQLite file in a fresh temporary directory, removed when the test ends.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    var databasePath: String { url.appendingPathComponent("grayscale.sqlite").path }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The engines every store contract test runs on.
enum StoreBackend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// A fresh, empty database on one engine: a new SQLite file, or a new database on the
/// test process's PostgreSQL server.
struct TestStore {
    let directory: TemporaryDirectory
    let location: String

    init(_ backend: StoreBackend) throws {
        directory = try TemporaryDirectory()
        switch backend {
        case .sqlite: location = directory.databasePath
        case .postgres: location = try PostgresServer.shared.get().createDatabase()
        }
    }

    /// Opens the database again: what is read from it was stored, not kept in memory.
    func open() throws -> GrayscaleDatabase { try GrayscaleDatabase.open(path: location) }
}

let operatorAlice = Attribution(actor: "alice")
let t0 = Date(timeIntervalSince1970: 1_795_000_000)

func minutes(_ n: Int) -> Date { t0.addingTimeInterval(TimeInterval(n * 60)) }

func draft(_ number: Int, _ label: String, service: String = "engine") -> ReleaseDraft {
    ReleaseDraft(service: service, number: number, label: label, upstream: "http://127.0.0.1:\(9000 + number)")
}
