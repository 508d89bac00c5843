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
        var timedOut: Set<Int> = []
        var nextID = 0
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    public var current: RoutingSnapshot? { state.withLockedValue { $0.snapshot } }

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

    /// Returns at the next change, or after `timeout`.
    public func waitForChange(timeout: Duration) async {
        let id = state.withLockedValue { state -> Int in state.nextID += 1; return state.nextID }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.wake(id)
        }
        await withCheckedContinuation { continuation in
            let expired = state.withLockedValue { state -> Bool in
                if state.timedOut.remove(id) != nil { return true }
                state.waiters[id] = continuation
                return false
            }
            if expired { continuation.resume() }
        }
        timer.cancel()
    }

    private func wake(_ id: Int) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
            state.timedOut.insert(id)
            return nil
        }
        waiter?.resume()
    }
}
