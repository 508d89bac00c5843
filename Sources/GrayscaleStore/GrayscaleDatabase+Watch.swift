import Foundation
import GRDB
import GrayscaleCore

extension GrayscaleDatabase {
    /// Calls `onChange` with every service's state at once, then again whenever any
    /// connection (another process, or this one's writer) commits, checked every
    /// `interval` with SQLite's `PRAGMA data_version`. A failing read (the database locked,
    /// unreadable, its disk gone) is handed to `onProblem` and tried again with backoff: the
    /// caller keeps what it had. Returns when the task is cancelled.
    public func watchServiceStates(every interval: Duration = .milliseconds(200), maxBackoff: Duration = .seconds(5),
                                   onChange: @Sendable ([ServiceState]) -> Void,
                                   onProblem: @Sendable (GrayscaleError, _ retryIn: Duration) -> Void = { _, _ in }) async {
        // data_version is per connection, so the watch keeps a connection of its own.
        var probe: DatabaseQueue?
        var lastVersion: Int?
        var backoff = interval
        while !Task.isCancelled {
            do {
                if probe == nil {
                    var configuration = Configuration()
                    configuration.readonly = true
                    configuration.busyMode = .timeout(1)
                    do { probe = try DatabaseQueue(path: path, configuration: configuration) } catch { throw Self.describe(error, path: path, doing: "watch") }
                }
                let version = try guarded("watch") { try probe!.read { db in try Int.fetchOne(db, sql: "PRAGMA data_version") } }
                if version != lastVersion {
                    let states = try allServiceStates()
                    lastVersion = version
                    onChange(states)
                }
                backoff = interval
            } catch {
                let problem = error as? GrayscaleError ?? GrayscaleError("\(path): cannot watch: \(error)")
                backoff = min(backoff * 2, maxBackoff)
                onProblem(problem, backoff)
                probe = nil  // open it again: the file may have been replaced or its disk remounted
            }
            try? await Task.sleep(for: backoff)
        }
    }
}
