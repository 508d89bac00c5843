import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleStore
import GrayscaleTestSupport
import Logging
import NIOConcurrencyHelpers
import Testing

@Suite("Controller reliability")
struct ControllerReliabilityTests {
    @Test("a controller that died while the rollout was verifying: the next one runs the smoke checks and the rollout goes on")
    func verifyingSurvivesRestart() async throws {
        let upstream = try FakeSlack()
        defer { upstream.stop() }
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        try fixture.writeEnginePolicy(stepMinimum: "1h", extra: "smokeChecks: [{name: health, path: /healthz, expectStatus: 200}]")
        try fixture.database.publish(ReleaseDraft(service: "engine", number: 9, label: "v2.1.2", upstream: upstream.url), salt: "c",
                                     by: Attribution(actor: "test"), at: Date())
        var library = PolicyLibrary(folder: fixture.policies)
        try library.reload()
        let policy = library.policy(for: "engine")
        // What a controller commits on its first tick before it dies: the rollout, verifying.
        let snapshot = try fixture.database.controllerSnapshot("engine")
        let first = Reconciler.reconcile(ReconcileInput(policy: policy, service: snapshot.service, rollout: snapshot.rollout, now: Date()))
        #expect(first.awaitsSmokeChecks)
        try fixture.database.commitTick(snapshot, first, fence: nil, notifyChannel: "#c", at: Date())

        let controller = ControllerService(database: fixture.database, policiesFolder: fixture.policies, metrics: NoMetrics(),
                                           logger: Logger(label: "test"))
        await controller.tickAll()
        let rollout = try #require(try fixture.database.rolloutState("engine"))
        #expect(rollout.phase == .progressing, "\(rollout.phase) \(rollout.holdReason ?? "")")
        #expect(rollout.step == 0)
        #expect(try fixture.database.split("engine").range.widthHundredths == 500)
        #expect(upstream.received.withLockedValue { $0.map(\.path) } == ["/healthz"])
    }

    @Test("a bot command retried with its id gets the first reply and changes nothing")
    func commandOnce() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let bot = fixture.bot()
        let first = await bot.handle("-g -m engine -p 30", executor: "U0OPERATOR", commandId: "398738663015.47445629121")
        let revision = try fixture.database.split("engine").revision
        let audits = try fixture.database.auditLog(service: "engine").count
        // Meanwhile someone else moves the canary; the retry must not move it back.
        _ = await bot.handle("-g -m engine -p 10", executor: "U0OPERATOR", commandId: "another")
        let retried = await bot.handle("-g -m engine -p 30", executor: "U0OPERATOR", commandId: "398738663015.47445629121")
        #expect(first.contains("Done"), "\(first)")
        #expect(retried == first)
        #expect(try fixture.database.split("engine").revision == revision + 1, "only the other command changed the split")
        #expect(try fixture.database.split("engine").range.widthHundredths == 1000)
        #expect(try fixture.database.auditLog(service: "engine").count == audits + 1)

        // A rollback retried after the canary is gone: the first answer, not "no canary".
        let rollback = await bot.handle("-r -m engine", executor: "U0OPERATOR", commandId: "rollback-1")
        #expect(rollback.contains("Done"), "\(rollback)")
        #expect(await bot.handle("-r -m engine", executor: "U0OPERATOR", commandId: "rollback-1") == rollback)
        #expect(try fixture.database.auditLog(service: "engine").filter { $0.outcome == "refused" }.isEmpty)
    }

    @Test("a command queued with an id and then sent directly with the same id runs once")
    func queuedThenDirect() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let bot = fixture.bot()
        _ = await bot.handle("-c -m engine", executor: "U0OPERATOR")
        try fixture.database.enqueue(HumanCommand(.pause, actor: "U0OPERATOR", text: "pause -m engine", id: "pause-1"), for: "engine", at: Date())
        _ = await bot.handle("pause -m engine", executor: "U0OPERATOR", commandId: "pause-1")
        #expect(try fixture.database.auditLog(service: "engine").filter { $0.action == "pause" }.count == 1)
        #expect(try fixture.database.controllerSnapshot("engine").commands.isEmpty, "the queued copy was consumed with it")
        #expect(try !fixture.database.enqueue(HumanCommand(.pause, actor: "U0OPERATOR", id: "pause-1"), for: "engine", at: Date()))
        // One id, one command: the same id for another service is refused.
        #expect(throws: GrayscaleError.self) { try fixture.database.commandResult("pause-1", service: "events") }
    }

    @Test("two controllers on one database: one decides, the other stands by and takes over when the leader stops renewing")
    func twoControllers() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        try fixture.writeEnginePolicy(stepMinimum: "1s")
        let clock = NIOLockedValueBox(Date(timeIntervalSince1970: 1_800_000_000))
        func controller(_ name: String) -> ControllerService {
            ControllerService(database: fixture.database, policiesFolder: fixture.policies, metrics: HealthyMetrics(),
                              configuration: .init(leasePeriod: 10, holder: name), now: { clock.withLockedValue { $0 } },
                              logger: Logger(label: name))
        }
        let a = controller("a"), b = controller("b")
        for _ in 0..<3 {
            await a.tickAll()
            await b.tickAll()
            clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
        }
        let verdicts = try fixture.database.verdicts("engine", release: 8)
        #expect(!verdicts.isEmpty)
        #expect(verdicts.allSatisfy { $0.leaseToken == 1 }, "only a decided")
        #expect(try fixture.database.controllers(seenSince: .distantPast).present.map(\.role) == [.leader, .standby])
        // a freezes: b takes over once a's lease has lapsed, with token 2; a's late commits are refused.
        clock.withLockedValue { $0 = $0.addingTimeInterval(11) }
        await b.tickAll()
        let revision = try fixture.database.split("engine").revision
        clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
        await b.tickAll()
        #expect(try fixture.database.controllers(seenSince: .distantPast).lease?.holder == "b")
        let tokens = try fixture.database.verdicts("engine", release: 8).map { $0.leaseToken ?? 0 }
        #expect(tokens == tokens.sorted(), "decisions never go back to an older token: \(tokens)")
        #expect(tokens.last == 2)
        await a.tickAll()  // a wakes up: it stands by
        #expect(try fixture.database.verdicts("engine", release: 8).map { $0.leaseToken ?? 0 }.last == 2)
        #expect(try fixture.database.split("engine").revision >= revision)
    }

    @Test("a leader that loses its lease in the middle of a tick has that tick's commit refused by the fence")
    func fenceInTheMiddleOfATick() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        try fixture.writeEnginePolicy(stepMinimum: "1s")
        let clock = NIOLockedValueBox(Date(timeIntervalSince1970: 1_800_000_000))
        let written = NIOLockedValueBox<(verdicts: Int, audits: Int)?>(nil)
        let database = fixture.database
        // On its third reading of metrics, A freezes past its lease and B takes the lease, changing nothing
        // else: only the fence can stop A's commit (the compare-and-swap would let it through).
        let metrics = InterruptingMetrics(onCall: 3) {
            let now = clock.withLockedValue { $0 = $0.addingTimeInterval(11); return $0 }
            _ = try? database.claimLease(holder: "b", period: 10, at: now)
            written.withLockedValue { $0 = ((try? database.verdicts("engine", release: 8).count) ?? -1,
                                            (try? database.auditLog(service: "engine", limit: 1000).count) ?? -1) }
        }
        let a = ControllerService(database: database, policiesFolder: fixture.policies, metrics: metrics,
                                  configuration: .init(leasePeriod: 10, holder: "a"), now: { clock.withLockedValue { $0 } },
                                  logger: Logger(label: "a"))
        for _ in 0..<5 {
            await a.tickAll()
            clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
        }
        #expect(metrics.calls.withLockedValue { $0 } == 3, "a was interrupted in the middle of a tick, then stood by")
        let atClaim = try #require(written.withLockedValue { $0 })
        #expect(try database.verdicts("engine", release: 8).count == atClaim.verdicts, "a's verdict was written after b took the lease")
        #expect(try database.auditLog(service: "engine", limit: 1000).count == atClaim.audits)
        #expect(try database.controllers(seenSince: .distantPast).lease?.holder == "b")
        await a.tickAll()  // a now stands by: it writes nothing
        #expect(try database.verdicts("engine", release: 8).count == atClaim.verdicts)
    }
}

/// Healthy metrics that, on one call, run `interrupt` before answering (another process acting meanwhile).
final class InterruptingMetrics: MetricsSource, Sendable {
    let calls = NIOLockedValueBox(0)
    let onCall: Int
    let interrupt: @Sendable () async -> Void

    init(onCall: Int, interrupt: @escaping @Sendable () async -> Void) {
        self.onCall = onCall
        self.interrupt = interrupt
    }

    func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        let call = calls.withLockedValue { $0 += 1; return $0 }
        if call == onCall { await interrupt() }
        return try await HealthyMetrics().observe(service: service, canary: canary, stable: stable, from: from, to: to)
    }
}
