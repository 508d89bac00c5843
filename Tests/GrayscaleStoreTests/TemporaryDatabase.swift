import Foundation
import GrayscaleCore
import GrayscaleStore

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

let operatorAlice = Attribution(actor: "alice")
let t0 = Date(timeIntervalSince1970: 1_795_000_000)

func minutes(_ n: Int) -> Date { t0.addingTimeInterval(TimeInterval(n * 60)) }

func draft(_ number: Int, _ label: String, service: String = "engine") -> ReleaseDraft {
    ReleaseDraft(service: service, number: number, label: label, upstream: "http://127.0.0.1:\(9000 + number)")
}
