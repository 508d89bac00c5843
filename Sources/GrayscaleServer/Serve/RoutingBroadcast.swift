import Foundation
import GrayscaleCore
import NIOConcurrencyHelpers

/// The routing this process's watch last read (pushed by PostgreSQL's NOTIFY, or SQLite's
/// change counter), for the fleet's long poll: it waits for the next change here instead
/// of reading the database over and over, so every replica answers it alike.
public final class RoutingBroadcast: Sendable {
    private struct State {
        var snapshot: RoutingSnapshot?
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextID = 0
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    public var current: RoutingSnapshot? { state.withLockedValue { $0.snapshot } }

    /// Ends every wait now and any later one at once: the process is stopping, and a long
    /// poll answered now lets its proxy reconnect to a replica that is not.
    public func close() {
        let waiting = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.closed = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiting { waiter.resume() }
    }

    public var isClosed: Bool { state.withLockedValue { $0.closed } }

    /// How many long polls wait now.
    public var waiting: Int { state.withLockedValue { $0.waiters.count } }

    public func publish(_ states: [ServiceState]) {
        let snapshot = RoutingSnapshot(states: states)
        let waiting = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            guard state.snapshot != snapshot else { return [] }
            state.snapshot = snapshot
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiting { waiter.resume() }
    }

    /// Returns when the routing's version is no longer `version` (at once if it already
    /// differs), after `timeout`, or when the task is cancelled (its client went).
    public func waitForChange(from version: String?, timeout: Duration) async {
        let id = state.withLockedValue { state -> Int in state.nextID += 1; return state.nextID }
        let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Compared under the lock the publisher takes: a change cannot slip in between.
                let ready = state.withLockedValue { state -> Bool in
                    guard state.snapshot?.version == version, !state.closed else { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if ready { return continuation.resume() }
                // A cancellation before the waiter was registered found nothing to wake.
                if Task.isCancelled { return wake(id) }
                timer.withLockedValue { $0 = Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    self?.wake(id)
                } }
            }
        } onCancel: {
            wake(id)
        }
        timer.withLockedValue { $0?.cancel() }
    }

    /// Ends one wait (its time is up); nothing when a change ended it already.
    private func wake(_ id: Int) {
        state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
    }
}
