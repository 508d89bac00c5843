import Foundation
import GRDB
import GrayscaleCore
import PostgresNIO

extension GrayscaleDatabase {
    /// Calls `onChange` with every service's state at once, then again whenever the
    /// routing may have changed: on SQLite when any connection (another process, or this
    /// one's writer) commits, checked every `interval` with `PRAGMA data_version`; on
    /// PostgreSQL when a writer on any replica sends the routing NOTIFY, pushed to a LISTEN
    /// connection of the watch's own. A failing read (the database locked or restarting,
    /// its disk gone) is handed to `onProblem` and tried again with backoff: the caller keeps
    /// what it had. Returns when the task is cancelled.
    public func watchServiceStates(every interval: Duration = .milliseconds(200), maxBackoff: Duration = .seconds(5),
                                   onChange: @Sendable ([ServiceState]) -> Void,
                                   onProblem: @Sendable (GrayscaleError, _ retryIn: Duration) -> Void = { _, _ in }) async {
        if let engine = engine as? PostgresEngine {
            await listen(engine, every: interval, maxBackoff: maxBackoff, onChange: onChange, onProblem: onProblem)
        } else {
            await poll(every: interval, maxBackoff: maxBackoff, onChange: onChange, onProblem: onProblem)
        }
    }

    private func poll(every interval: Duration, maxBackoff: Duration, onChange: @Sendable ([ServiceState]) -> Void,
                      onProblem: @Sendable (GrayscaleError, _ retryIn: Duration) -> Void) async {
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
                    do { probe = try DatabaseQueue(path: path, configuration: configuration) } catch { throw engine.describe(error, doing: "watch") }
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

    private func listen(_ engine: PostgresEngine, every interval: Duration, maxBackoff: Duration,
                        onChange: @Sendable ([ServiceState]) -> Void,
                        onProblem: @Sendable (GrayscaleError, _ retryIn: Duration) -> Void) async {
        var backoff = interval
        while !Task.isCancelled {
            var connection: PostgresConnection?
            defer { connection?.discard() }
            do {
                let listener = try await engine.connectAsync()
                connection = listener
                try await withTaskCancellationHandler {
                    // Listen first, then read: a change committed in between is announced, not lost.
                    try await listener.listen(on: PostgresEngine.routingChannel) { notifications in
                        onChange(try allServiceStates())
                        backoff = interval
                        for try await _ in notifications {
                            onChange(try allServiceStates())
                        }
                    }
                } onCancel: {
                    listener.discard()
                }
                if Task.isCancelled { break }
                throw GrayscaleError("\(path): the routing watch's connection ended", kind: .busy)
            } catch {
                if Task.isCancelled { break }
                let problem = error as? GrayscaleError ?? engine.describe(error, doing: "watch the routing")
                backoff = min(backoff * 2, maxBackoff)
                onProblem(problem, backoff)
            }
            connection?.discard()
            connection = nil
            try? await Task.sleep(for: backoff)
        }
    }
}
