import Foundation
import GrayscaleCore
import GrayscaleStore
import NIOConcurrencyHelpers
import Testing

@Suite("Split hot swap from another writer")
struct SplitWatchTests {
    @Test("a split written through another connection reaches the watcher")
    func pickUp() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-watch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("grayscale.sqlite").path
        let watched = try GrayscaleDatabase.open(path: path)
        let who = Attribution(actor: "test")
        try watched.publish(ReleaseDraft(service: "engine", number: 1, label: "v1", upstream: "http://127.0.0.1:1"), salt: "a", by: who, at: Date())
        try watched.publish(ReleaseDraft(service: "engine", number: 2, label: "v2", upstream: "http://127.0.0.1:2"), salt: "b", by: who, at: Date())

        let seen = NIOLockedValueBox<[Int]>([])
        let watcher = Task {
            await watched.watchServiceStates(every: .milliseconds(50), onChange: { states in
                seen.withLockedValue { $0.append(states.first?.split?.revision ?? 0) }
            })
        }
        defer { watcher.cancel() }
        try await waitUntil { !seen.withLockedValue { $0 }.isEmpty }

        // Another writer, as another process would be: its own connections to the same file.
        let other = try GrayscaleDatabase.open(path: path)
        let revision = try other.setCanaryTraffic("engine", range: .parse(percent: "20:55"), by: who, at: Date()).split!.revision
        try await waitUntil { seen.withLockedValue { $0 }.last == revision }
        #expect(seen.withLockedValue { $0 }.last == revision)
    }

    func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<200 where !condition() { try await Task.sleep(for: .milliseconds(25)) }
    }
}
