import Foundation
import GRDB
import GrayscaleCore
import GrayscaleStore
import NIOConcurrencyHelpers
import Testing

@Suite("Split watcher faults")
struct WatchFaultTests {
    @Test("a database that cannot be read stops nothing: the watcher says why, keeps trying, and picks up again")
    func survivesReadErrors() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-watch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("grayscale.sqlite").path
        let watched = try GrayscaleDatabase.open(path: path)
        let who = Attribution(actor: "test")
        try watched.publish(ReleaseDraft(service: "engine", number: 1, label: "v1", upstream: "http://127.0.0.1:1"), salt: "a", by: who, at: Date())
        try watched.publish(ReleaseDraft(service: "engine", number: 2, label: "v2", upstream: "http://127.0.0.1:2"), salt: "b", by: who, at: Date())
        // A bad restore put something else where the database was: every read of it fails.
        for suffix in ["", "-wal", "-shm"] { try FileManager.default.moveItem(atPath: path + suffix, toPath: path + suffix + ".aside") }
        try Data(String(repeating: "not a database ", count: 300).utf8).write(to: URL(fileURLWithPath: path))
        let seen = NIOLockedValueBox<[Int]>([])
        let problems = NIOLockedValueBox<[String]>([])
        let watcher = Task {
            await watched.watchServiceStates(every: .milliseconds(20), maxBackoff: .milliseconds(100), onChange: { states in
                seen.withLockedValue { $0.append(states.first?.split?.revision ?? 0) }
            }, onProblem: { problem, _ in problems.withLockedValue { $0.append(problem.message) } })
        }
        defer { watcher.cancel() }
        try await waitUntil { problems.withLockedValue { $0.count } >= 3 }
        #expect(problems.withLockedValue { $0.count } >= 3, "the watcher kept trying")
        #expect(problems.withLockedValue { $0.first }?.contains("not a Grayscale database or is corrupt") == true,
                "\(problems.withLockedValue { $0.first } ?? "")")
        #expect(seen.withLockedValue { $0 }.isEmpty)

        // The database back in place: the watcher reads it, and then follows its changes again.
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(atPath: path + suffix)
            try FileManager.default.moveItem(atPath: path + suffix + ".aside", toPath: path + suffix)
        }
        try await waitUntil { !seen.withLockedValue { $0 }.isEmpty }
        let revision = try GrayscaleDatabase.open(path: path).setCanaryTraffic("engine", range: .parse(percent: "30"), by: who, at: Date()).split!.revision
        try await waitUntil { seen.withLockedValue { $0 }.last == revision }
        #expect(seen.withLockedValue { $0 }.last == revision)
    }

    func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<200 where !condition() { try await Task.sleep(for: .milliseconds(25)) }
    }
}
