import Foundation
import GrayscaleCore
import GrayscaleProxy
import GrayscaleServer
import GrayscaleStore
import Logging
import NIOConcurrencyHelpers
import Testing

/// The whole loop in one process: users → proxy → releases, the proxy's statistics →
/// controller → split in SQLite → proxy. Nothing is stubbed but the users.
@Suite("Controller and proxy end to end", .serialized)
struct ControllerEndToEndTests {
    /// A policy with short steps; `stepMinimum` long enough keeps a rollout on its first step.
    func policies(stepMinimum: String = "2s", extra: String = "") throws -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-e2e-policies-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try """
            name: default
            steps: [5, 20, 50, 100]
            stepMinimum: \(stepMinimum)
            analysis: {interval: 1s, minRequests: 20}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            \(extra)
            """.write(to: folder.appendingPathComponent("default.yaml"), atomically: true, encoding: .utf8)
        return folder.path
    }

    /// Runs users against the proxy and the controller on a 100 ms tick until `done` or 40 s.
    func run(_ harness: ProxyHarness, users: Int, dottedEvery: Int?, stepMinimum: String = "2s", policy extra: String = "",
             until done: @escaping @Sendable () throws -> Bool) async throws {
        let controller = ControllerService(
            database: harness.database, policiesFolder: try policies(stepMinimum: stepMinimum, extra: extra), metrics: InProcessProxyMetrics(statistics: harness.proxy.statistics),
            configuration: .init(tick: .milliseconds(100)), logger: Logger(label: "test"))
        let proxy = harness.proxy!, database = harness.database
        let watcher = Task { await database.watchServiceStates(every: .milliseconds(50), onChange: { proxy.update(RoutingTable(states: $0)) }) }
        defer { watcher.cancel() }
        let stop = NIOLockedValueBox(false)
        let port = harness.port, group = harness.clientGroup
        let load = Task {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for worker in 0..<8 {
                    tasks.addTask {
                        try await TestHTTPClient.withConnection(port: port, group: group) { client in
                            var index = worker
                            while !stop.withLockedValue({ $0 }) {
                                let user = index % users
                                let dotted = dottedEvery.map { user % $0 == 0 } ?? false
                                _ = try await client.send("/deploy?name=\(dotted ? "dotted.name" : "plain")", headers: [ProxyHarness.bearer("app-\(user)")])
                                index += 8
                                try await Task.sleep(for: .milliseconds(2))
                            }
                        }
                    }
                }
                try await tasks.waitForAll()
            }
        }
        for _ in 0..<400 {
            await controller.tickAll()
            if try done() { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        stop.withLockedValue { $0 = true }
        try await load.value
    }

    @Test("a bad release is rolled back automatically after hurting a handful of users")
    func badReleaseRolledBack() async throws {
        try await ProxyHarness.run { harness in
            let database = harness.database
            // The first step lasts longer than the test: the bad release must be caught there, however busy the machine.
            try await run(harness, users: 1000, dottedEvery: 13, stepMinimum: "10m") {
                try database.serviceState("engine").release(number: 8)?.status == .rolledBack
            }
            let state = try database.serviceState("engine")
            #expect(state.release(number: 8)?.status == .rolledBack)
            #expect(state.split?.canary == nil)
            let rollout = try #require(try database.rolloutState("engine"))
            #expect(rollout.phase == .rolledBack)
            #expect(rollout.step == 0, "caught at the first step")
            let hurt = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }?.totals.affectedUsers ?? 0
            print("bad release: rolled back at step \(rollout.step + 1) after \(hurt) users got an error; \(rollout.lastVerdict?.reason ?? "")")
            #expect(hurt >= 1 && hurt <= 10)
            let audit = try database.auditLog(service: "engine")
            #expect(audit.contains { $0.action == "rollback" && $0.actor == "grayscale-controller" })
            #expect(try database.dueNotifications(at: Date().addingTimeInterval(1)).contains { $0.text.contains("rolled back canary") })
        }
    }

    @Test("a healthy release walks every step and is promoted")
    func healthyPromoted() async throws {
        try await ProxyHarness.run { harness in
            let database = harness.database
            try await run(harness, users: 500, dottedEvery: nil) {
                try database.serviceState("engine").stable?.number == 8
            }
            #expect(try database.serviceState("engine").stable?.number == 8)
            let widths = try database.splitHistory("engine").compactMap { $0.split.canary?.range.widthHundredths }
            #expect(Array(Set(widths)).sorted() == [0, 500, 2000, 5000, 8000], "the last step holds 20% back until the final verdict")
        }
    }

    @Test("the name-rule incident over GETs, under a mirror phase: rolled back before any user is routed to the canary")
    func mirrorCatchesBeforeAnyUser() async throws {
        try await ProxyHarness.run { harness in
            let database = harness.database
            // The same users and the same failing GETs as above; the policy copies 20% of stable's GETs to the canary first.
            try await run(harness, users: 1000, dottedEvery: 13, policy: "mirror: {share: 20, duration: 10m, minRequests: 100}") {
                try database.serviceState("engine").release(number: 8)?.status == .rolledBack
            }
            let state = try database.serviceState("engine")
            #expect(state.release(number: 8)?.status == .rolledBack)
            let rollout = try #require(try database.rolloutState("engine"))
            #expect(rollout.step == -1, "rolled back in the mirror phase")
            #expect(try database.splitHistory("engine").allSatisfy { ($0.split.canary?.range.widthHundredths ?? 0) == 0 && $0.split.nonAuthWeight == 0 },
                    "no split ever gave the canary a user")
            let canary = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }
            #expect(canary?.totals.requests ?? 0 == 0, "no user's request reached the canary")
            #expect(canary?.totals.affectedUsers ?? 0 == 0, "no user was hurt")
            let mirrored = canary?.totals.evidence?.mirror
            print("name rule over GETs with a mirror phase: rolled back after \(mirrored?.pairs ?? 0) mirrored requests "
                  + "(\(mirrored?.canaryOnlyFailures ?? 0) failed only on the canary); 0 users hurt; \(rollout.lastVerdict?.reason ?? "")")
            #expect(rollout.lastVerdict?.reason.contains("mirrored") == true)
            let audit = try database.auditLog(service: "engine")
            #expect(audit.contains { $0.action == "mirror" })
            #expect(audit.contains { $0.action == "rollback" && $0.actor == "grayscale-controller" })
        }
    }
}
