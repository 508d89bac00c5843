import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleStore
import Logging
import NIOConcurrencyHelpers
import Testing

/// Records the splits it is given; fails the first `failures` times.
final class RecordingDriver: TrafficDriver {
    let name = "recording"
    let applied = NIOLockedValueBox<[Int]>([])
    let failures = NIOLockedValueBox(0)

    func apply(_ split: TrafficSplit) async throws {
        let fail = failures.withLockedValue { remaining -> Bool in
            defer { remaining = max(0, remaining - 1) }
            return remaining > 0
        }
        if fail { throw GrayscaleError("RequestLimitExceeded (RequestId test)") }
        applied.withLockedValue { $0.append(split.revision) }
    }
}

/// Every interval healthy: enough canary traffic, no canary errors, and 100 new users
/// with an error on stable (outside a 1% canary), so that each step gathers its evidence.
struct HealthyMetrics: MetricsSource {
    func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        let failing = (0..<100).map { _ in UnitEvent(unit: "u:\(UUID().uuidString)", canary: false, lower: 0, upper: 100) }
        return IntervalObservation(from: from, to: to, canary: VersionObservation(requests: 100, errors: 0, evidence: VersionEvidence(requests: 100)),
                                   stable: VersionObservation(requests: 900, errors: 100, evidence: VersionEvidence(requests: 900, failures: failing)))
    }
}

@Suite("Traffic drivers in the controller")
struct TrafficDriverTests {
    @Test("the committed split is applied (and re-applied on start); while the platform lags the rollout holds; one notification")
    func driverSync() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        try fixture.writeEnginePolicy(stepMinimum: "1s")
        let driver = RecordingDriver()
        driver.failures.withLockedValue { $0 = 2 }
        let clock = NIOLockedValueBox(Date())
        func controller() -> ControllerService {
            ControllerService(database: fixture.database, policiesFolder: fixture.policies, metrics: HealthyMetrics(),
                              now: { clock.withLockedValue { $0 } }, logger: Logger(label: "test"), drivers: ["engine": driver])
        }
        let first = controller()
        // Both attempts of the first pass fail (before and after the tick).
        await first.tickAll()
        clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
        #expect(driver.applied.withLockedValue { $0 }.isEmpty)
        let held = try #require(try fixture.database.rolloutState("engine"))
        #expect(held.step == -1, "the rollout must not give the canary users while the platform lags")
        #expect(held.holdReason?.contains("the platform does not show the split yet") == true)
        let notices = try fixture.database.undeliveredNotifications().filter { $0.text.contains("did not take split revision") }
        #expect(notices.count == 1)

        for _ in 0..<12 {
            await first.tickAll()
            clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
        }
        let applied = driver.applied.withLockedValue { $0 }
        let history = try fixture.database.splitHistory("engine").map(\.revision)
        #expect(applied == Array(applied.sorted()), "splits reach the platform in order")
        #expect(applied.last == history.last, "the platform shows the last committed split")
        #expect(try fixture.database.serviceState("engine").stable?.number == 8)

        // A new controller process re-applies the committed split first.
        first.resign()
        await controller().tickAll()
        #expect(driver.applied.withLockedValue { $0 }.suffix(2) == [history.last!, history.last!])
    }
}
