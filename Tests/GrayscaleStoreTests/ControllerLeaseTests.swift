import Foundation
import Testing
import GrayscaleCore
import GrayscaleStore

/// The lease and its fence, and commands carried out once, on each engine.
@Suite("Controller lease and exactly-once commands")
struct ControllerLeaseTests {

    static func withTwoReleases(_ backend: StoreBackend) throws -> GrayscaleDatabase {
        let database = try TestStore(backend).open()
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(0))
        try database.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: minutes(1))
        return database
    }

    func transition(_ snapshot: ControllerSnapshot, _ command: HumanCommand, at now: Date) -> Transition {
        Reconciler.reconcile(ReconcileInput(policy: .standard, service: snapshot.service, rollout: snapshot.rollout,
                                            commands: [command], now: now))
    }

    @Test("one leader at a time: a standby takes over only when the lease lapses, with the next token", arguments: StoreBackend.allCases)
    func lease(_ backend: StoreBackend) throws {
        let database = try Self.withTwoReleases(backend)
        guard case .leading(let a) = try database.claimLease(holder: "a", period: 10, at: minutes(0)) else { Issue.record("a leads first"); return }
        #expect(a.token == 1)
        #expect(try database.claimLease(holder: "b", period: 10, at: minutes(0).addingTimeInterval(9)) == .standingBy(behind: a))
        // a renews: b still stands by after a's first period.
        guard case .leading(let renewed) = try database.claimLease(holder: "a", period: 10, at: minutes(0).addingTimeInterval(9)) else {
            Issue.record("a renews"); return
        }
        #expect(renewed.token == 1)
        #expect(try database.claimLease(holder: "b", period: 10, at: minutes(0).addingTimeInterval(15)) == .standingBy(behind: renewed))
        // a stops renewing (killed or frozen): b takes over with token 2.
        guard case .leading(let b) = try database.claimLease(holder: "b", period: 10, at: minutes(0).addingTimeInterval(19)) else {
            Issue.record("b takes over"); return
        }
        #expect(b.token == 2)
        #expect(try database.claimLease(holder: "a", period: 10, at: minutes(0).addingTimeInterval(20)) == .standingBy(behind: b))
        let seen = try database.controllers(seenSince: minutes(0))
        #expect(seen.lease == b)
        #expect(seen.present.map(\.role) == [.standby, .leader], "\(seen.present)")
        // A clean stop hands over at once.
        try database.releaseLease(holder: "b", at: minutes(0).addingTimeInterval(21))
        guard case .leading(let again) = try database.claimLease(holder: "a", period: 10, at: minutes(0).addingTimeInterval(21)) else {
            Issue.record("a takes over after b resigned"); return
        }
        #expect(again.token == 3)
    }

    @Test("a commit with a token that is no longer current is refused and writes nothing", arguments: StoreBackend.allCases)
    func fence(_ backend: StoreBackend) throws {
        let database = try Self.withTwoReleases(backend)
        guard case .leading(let old) = try database.claimLease(holder: "old", period: 10, at: minutes(2)) else { Issue.record("old leads"); return }
        let snapshot = try database.controllerSnapshot("engine")
        let decided = transition(snapshot, HumanCommand(.rollback, actor: "frozen"), at: minutes(2))
        // While "old" is frozen its lease lapses and "new" takes over.
        _ = try database.claimLease(holder: "new", period: 10, at: minutes(3))
        let before = try database.auditLog(service: "engine", limit: 100).count
        let error = #expect(throws: GrayscaleError.self) {
            try database.commitTick(snapshot, decided, fence: old.token, notifyChannel: "#c", at: minutes(3))
        }
        #expect(error?.kind == .fenced)
        #expect(error?.message.contains("new holds token 2") == true, "\(error?.message ?? "")")
        #expect(try database.serviceState("engine").canary?.number == 8, "the late rollback was not written")
        #expect(try database.auditLog(service: "engine", limit: 100).count == before)
        #expect(try database.rolloutState("engine") == nil)
    }

    @Test("a command with an id is carried out once: a retry gets the first answer and changes nothing", arguments: StoreBackend.allCases)
    func exactlyOnce(_ backend: StoreBackend) throws {
        let database = try Self.withTwoReleases(backend)
        let command = HumanCommand(.setRange(try .parse(percent: "30"), nonAuthWeight: nil), actor: "alice", text: "-g -m engine -p 30", id: "T123")
        let snapshot = try database.controllerSnapshot("engine")
        try database.commitTick(snapshot, transition(snapshot, command, at: minutes(2)), command: command, fence: nil,
                                notifyChannel: "#c", at: minutes(2))
        let first = try #require(try database.commandResult("T123"))
        #expect(first.split?.range.widthHundredths == 3000)
        let revision = try database.split("engine").revision
        let audits = try database.auditLog(service: "engine", limit: 100).count

        // The retry was decided on the state before the first commit (it raced the first attempt).
        let error = #expect(throws: GrayscaleError.self) {
            try database.commitTick(snapshot, transition(snapshot, command, at: minutes(3)), command: command, fence: nil,
                                    notifyChannel: "#c", at: minutes(3))
        }
        #expect(error?.kind == .conflict)
        // Decided on the current state: still refused as already done.
        let fresh = try database.controllerSnapshot("engine")
        let again = #expect(throws: GrayscaleError.self) {
            try database.commitTick(fresh, transition(fresh, command, at: minutes(3)), command: command, fence: nil,
                                    notifyChannel: "#c", at: minutes(3))
        }
        #expect(again?.kind == .conflict)
        #expect(try database.commandResult("T123") == first)
        #expect(try database.split("engine").revision == revision)
        #expect(try database.auditLog(service: "engine", limit: 100).count == audits)

        // A queued command with an id is queued once.
        let order = HumanCommand(.pause, actor: "alice", id: "cli-1")
        #expect(try database.enqueue(order, for: "engine", at: minutes(4)))
        #expect(try !database.enqueue(order, for: "engine", at: minutes(5)))
        #expect(try database.controllerSnapshot("engine").commands.count == 1)
    }
}
