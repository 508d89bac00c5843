import Foundation
import GRDB
import GrayscaleCore

extension GrayscaleDatabase {
    /// Calls `onChange` with every service's state at once, then again whenever any
    /// connection (another process, or this one's writer) commits, checked every
    /// `interval` with SQLite's `PRAGMA data_version`. Returns when the task is cancelled.
    public func watchServiceStates(every interval: Duration = .milliseconds(200),
                                   onChange: @Sendable ([ServiceState]) -> Void) async throws {
        // data_version is per connection, so the watch keeps a connection of its own.
        let probe: DatabaseQueue
        do {
            var configuration = Configuration()
            configuration.readonly = true
            configuration.busyMode = .timeout(1)
            probe = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw Self.describe(error, path: path, doing: "watch")
        }
        var lastVersion: Int?
        while !Task.isCancelled {
            let version = try guarded("watch") { try probe.read { db in try Int.fetchOne(db, sql: "PRAGMA data_version") } }
            if version != lastVersion {
                lastVersion = version
                onChange(try allServiceStates())
            }
            try await Task.sleep(for: interval)
        }
    }
}
