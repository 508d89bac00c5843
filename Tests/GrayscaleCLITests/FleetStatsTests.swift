import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleTestSupport
import NIOConcurrencyHelpers
import Testing

/// The leader reads every replica's /stats; a replica that does not answer must not stop
/// the judging of the others (a bad canary would be kept for as long as it is down).
@Suite("Fleet statistics with a replica down")
struct FleetStatsTests {
    @Test("a proxy that does not answer is left out of the interval and said; with none answering the interval is not judged")
    func replicaDown() async throws {
        let stats = try StatsFixtureServer()
        defer { stats.stop() }
        let dead = "http://127.0.0.1:\(PostgresServer.freePort())"
        let told = NIOLockedValueBox<[String]>([])
        var metrics = HTTPStatsMetrics(endpoints: [stats.url, dead], timeout: 2)
        metrics.onUnreachable = { endpoint, _ in told.withLockedValue { $0.append(endpoint) } }
        let now = Date()
        let observation = try await metrics.observe(service: "engine", canary: ReleaseRef(number: 8, label: "v8"),
                                                    stable: ReleaseRef(number: 7, label: "v7"), from: now.addingTimeInterval(-30), to: now)
        #expect(observation.canary.requests > 0 && observation.stable.requests > 0, "the answering proxy's windows are judged")
        #expect(told.withLockedValue { $0 } == [dead])

        let none = HTTPStatsMetrics(endpoints: [dead], timeout: 2)
        await #expect(throws: (any Error).self) {
            try await none.observe(service: "engine", canary: ReleaseRef(number: 8, label: "v8"), stable: ReleaseRef(number: 7, label: "v7"),
                                   from: now.addingTimeInterval(-30), to: now)
        }
    }
}
