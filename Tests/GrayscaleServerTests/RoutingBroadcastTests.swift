import Foundation
import GrayscaleCore
import GrayscaleServer
import Testing

@Suite("Routing broadcast (the fleet long poll)")
struct RoutingBroadcastTests {
    func states(revision: Int) throws -> [ServiceState] {
        var state = ServiceState(service: "engine")
        let t0 = Date(timeIntervalSince1970: 1_795_000_000)
        try state.publish(ReleaseDraft(service: "engine", number: 7, label: "v7", upstream: "http://127.0.0.1:9007"), salt: "s7", at: t0)
        for index in 0..<revision { try state.setRules(allowList: ["user-\(index)"], denyList: nil, optInAllowed: nil) }
        return [state]
    }

    @Test("a wait ends at the change, at once when the version already differs, and at its timeout otherwise; nothing stays registered")
    func waits() async throws {
        let broadcast = RoutingBroadcast()
        broadcast.publish(try states(revision: 0))
        let first = try #require(broadcast.current?.version)

        let clock = ContinuousClock()
        // Already different: no wait.
        var elapsed = await clock.measure { await broadcast.waitForChange(from: "something else", timeout: .seconds(30)) }
        #expect(elapsed < .seconds(5))
        // Nothing changes: the timeout ends it.
        elapsed = await clock.measure { await broadcast.waitForChange(from: first, timeout: .milliseconds(200)) }
        #expect(elapsed >= .milliseconds(200))
        #expect(broadcast.waiting == 0)
        // A change wakes every waiter long before its timeout.
        let waiters = (0..<5).map { _ in Task { await clock.measure { await broadcast.waitForChange(from: first, timeout: .seconds(60)) } } }
        while broadcast.waiting < 5 { try await Task.sleep(for: .milliseconds(10)) }
        broadcast.publish(try states(revision: 1))
        for waiter in waiters { #expect(await waiter.value < .seconds(30)) }
        #expect(broadcast.current?.version != first)
        #expect(broadcast.waiting == 0)
    }
}
