import NIOCore

/// One timer per event loop for the deadlines of every client connection on it: the idle
/// timeout and the upstream's response timeout are checked by a sweep over the loop's
/// connections, a quarter of the shorter timeout apart (each fires within a quarter of its
/// length after it is due). A scheduled task per connection cost every idle connection a
/// few hundred bytes (the task, its promise and closures) and the loop a re-armed timer
/// per connection; the sweep costs a slot in an array.
///
/// Loop-bound: used on its event loop only.
final class ConnectionSweep {
    let eventLoop: EventLoop
    let interval: TimeAmount
    private var connections: [any SweptConnection] = []
    private var timer: Scheduled<Void>?

    init(eventLoop: EventLoop, idleTimeout: TimeAmount, responseTimeout: TimeAmount) {
        self.eventLoop = eventLoop
        self.interval = .nanoseconds(max(min(idleTimeout.nanoseconds, responseTimeout.nanoseconds) / 4, 1_000_000))
    }

    var count: Int { connections.count }

    /// Whether the sweep's timer is armed (it is while any connection is on the list).
    var isArmed: Bool { timer != nil }

    func add(_ connection: any SweptConnection) {
        eventLoop.assertInEventLoop()
        connection.sweepSlot = connections.count
        connections.append(connection)
        if timer == nil { arm() }
    }

    func remove(_ connection: any SweptConnection) {
        eventLoop.assertInEventLoop()
        let slot = connection.sweepSlot
        guard slot >= 0, slot < connections.count, connections[slot] === connection else { return }
        let last = connections.removeLast()
        if slot < connections.count {
            connections[slot] = last
            last.sweepSlot = slot
        }
        connection.sweepSlot = -1
        if connections.isEmpty {
            timer?.cancel()
            timer = nil
        }
    }

    private func arm() {
        timer = eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
            timer = nil
            let now = NIODeadline.now()
            // A copy: a connection the sweep closes may leave the list while it runs.
            for connection in connections { connection.sweep(now: now) }
            if !connections.isEmpty, timer == nil { arm() }
        }
    }
}

/// A connection on a sweep's list: its place in the list, and what it does when swept.
protocol SweptConnection: AnyObject {
    var sweepSlot: Int { get set }
    func sweep(now: NIODeadline)
}

extension ProxyHandler: SweptConnection {}
