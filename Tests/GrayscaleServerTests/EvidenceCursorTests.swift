import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleStore
import Logging
import NIOConcurrencyHelpers
import Testing

/// Records each span it is asked for; on one call, another writer changes the split
/// before the tick commits (as a bot command or a CLI write would).
final class RecordingMetrics: MetricsSource, Sendable {
    let spans = NIOLockedValueBox<[(from: Date, to: Date)]>([])
    let interfereOnCall: Int
    let database: GrayscaleDatabase

    init(database: GrayscaleDatabase, interfereOnCall: Int) {
        self.database = database
        self.interfereOnCall = interfereOnCall
    }

    func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        let call = spans.withLockedValue { $0.append((from, to)); return $0.count }
        if call == interfereOnCall {
            try database.setRules(service, allowList: ["someone-else"], by: Attribution(actor: "cli"), at: to)
        }
        return IntervalObservation(from: from, to: to, canary: VersionObservation(requests: 10, errors: 0, evidence: VersionEvidence(requests: 10)),
                                   stable: VersionObservation(requests: 90, errors: 0, evidence: VersionEvidence(requests: 90)))
    }
}

@Suite("Evidence cursor")
struct EvidenceCursorTests {
    @Test("a tick that loses its commit reads the same span again; a restarted controller continues after the last committed one")
    func cursor() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        try fixture.writeEnginePolicy(stepMinimum: "1h")
        let metrics = RecordingMetrics(database: fixture.database, interfereOnCall: 2)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let clock = NIOLockedValueBox(start)
        func controller() -> ControllerService {
            ControllerService(database: fixture.database, policiesFolder: fixture.policies, metrics: metrics,
                              now: { clock.withLockedValue { $0 } }, logger: Logger(label: "test"))
        }
        let first = controller()
        for _ in 0..<4 {
            await first.tickAll()
            clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
        }
        // The second restart of the loop: a new process, after the first stopped.
        first.resign()
        await controller().tickAll()
        let spans = metrics.spans.withLockedValue { $0 }.map { ($0.from.timeIntervalSince(start), $0.to.timeIntervalSince(start)) }
        // Tick 1 starts the rollout; tick 2 reads [1, 2]; tick 3 reads [2, 4] but another
        // writer gets in before its commit, so tick 4 reads [2, 6] again; the new process reads from 6.
        #expect(spans.map(\.0) == [1, 2, 2, 6], "\(spans)")
        #expect(spans.map(\.1) == [2, 4, 6, 8], "\(spans)")
        #expect(try fixture.database.rolloutState("engine")?.observedUntil == start.addingTimeInterval(8))
    }
}
