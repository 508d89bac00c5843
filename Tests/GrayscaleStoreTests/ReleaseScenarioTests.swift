import Foundation
import Testing
import GrayscaleCore
import GrayscaleStore

/// DESIGN.md "Stable and canary", each scenario through the store on each engine (a real SQLite file, a real
/// PostgreSQL database), checked after reopening it so nothing lives only in memory.
@Suite("Release scenarios")
struct ReleaseScenarioTests {
    /// Releases 5 and 6 exist, 6 is stable.
    func fiveAndSixWithSixStable(_ database: GrayscaleDatabase) throws {
        try database.publish(draft(5, "v2.0.0"), salt: "s5", by: operatorAlice, at: minutes(0))
        try database.publish(draft(6, "v2.0.1"), salt: "s6", by: operatorAlice, at: minutes(1))
        try database.finish("engine", by: operatorAlice, at: minutes(2))
    }

    @Test("the first release of a service is stable at once and takes all traffic", arguments: StoreBackend.allCases)
    func firstReleaseIsStable(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try database.publish(draft(5, "v2.0.0"), salt: "s5", by: operatorAlice, at: minutes(0))
        let state = try reopened().serviceState("engine")
        #expect(state.stable?.number == 5)
        #expect(state.canary == nil)
        let split = try #require(state.split)
        #expect(split.stable == ReleaseRef(number: 5, label: "v2.0.0"))
        #expect(split.canary == nil)
        #expect(split.route(appId: "anyone").target == .stable)
        #expect(try reopened().rollouts("engine").isEmpty)
    }

    @Test("a mirror share with its routes is stored with the split (SQLite and PostgreSQL); a new range ends the mirror", arguments: StoreBackend.allCases)
    func mirrorStored(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        let routes = [try #require(MirrorRoute(method: "POST", pathPrefix: "/v1/query"))]
        try database.setMirror("engine", share: 2000, routes: routes, by: operatorAlice, at: minutes(4))
        var canary = try #require(try reopened().serviceState("engine").split?.canary)
        #expect(canary.mirror == 2000)
        #expect(canary.mirrorRoutes == routes)
        try database.setCanaryTraffic("engine", range: .parse(percent: "5"), by: operatorAlice, at: minutes(5))
        canary = try #require(try reopened().serviceState("engine").split?.canary)
        #expect(canary.mirror == nil && canary.mirrorRoutes == nil)
        #expect(try reopened().splitHistory("engine").contains { $0.split.canary?.mirror == 2000 }, "the history keeps it")
    }

    @Test("publish 7 over stable 6: canary 7, stable 6", arguments: StoreBackend.allCases)
    func publishMakesCanary(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        let state = try reopened().serviceState("engine")
        #expect(state.stable?.number == 6)
        #expect(state.canary?.number == 7)
        #expect(state.release(number: 5)?.status == .retired)
        let split = try #require(state.split)
        #expect(split.canary?.release.number == 7)
        #expect(split.canary?.salt == "s7")
        #expect(split.range.isEmpty, "a new canary gets no users until a split is set")
        #expect(try reopened().rollouts("engine").map(\.state) == ["promoted", "published"])
    }

    @Test("roll back 7 with nothing newer: only stable 6 remains, all traffic to 6", arguments: StoreBackend.allCases)
    func rollbackLeavesStable(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        try database.setCanaryTraffic("engine", range: .parse(percent: "30"), by: operatorAlice, at: minutes(4))
        try database.rollBack("engine", by: operatorAlice, at: minutes(5))
        let state = try reopened().serviceState("engine")
        #expect(state.stable?.number == 6)
        #expect(state.canary == nil)
        #expect(state.release(number: 7)?.status == .rolledBack)
        let split = try #require(state.split)
        #expect(split.canary == nil)
        #expect(split.nonAuthWeight == 0)
        #expect((0..<1000).allSatisfy { split.route(appId: "app-\($0)").target == .stable })
        #expect(try reopened().rollouts("engine").map(\.state) == ["promoted", "rolledBack"])
    }

    @Test("roll back 7, later publish 8: canary 8, stable still 6", arguments: StoreBackend.allCases)
    func publishAfterRollback(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        try database.rollBack("engine", by: operatorAlice, at: minutes(4))
        try database.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: minutes(5))
        let state = try reopened().serviceState("engine")
        #expect(state.stable?.number == 6)
        #expect(state.canary?.number == 8)
        #expect(state.release(number: 7)?.status == .rolledBack)
        #expect(state.split?.canary?.salt == "s8")
    }

    @Test("publish 8 while 7 is canary: 7 is superseded, 8 starts from the first step with a new cohort", arguments: StoreBackend.allCases)
    func publishSupersedes(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        try database.setCanaryTraffic("engine", range: .parse(percent: "25"), by: operatorAlice, at: minutes(4))
        try database.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: minutes(5))
        let state = try reopened().serviceState("engine")
        #expect(state.stable?.number == 6)
        #expect(state.canary?.number == 8)
        #expect(state.release(number: 7)?.status == .superseded)
        #expect(state.split?.range == .empty)
        #expect(state.split?.canary?.salt == "s8")
        #expect(try reopened().rollouts("engine").map(\.state) == ["promoted", "superseded", "published"])
    }

    @Test("finish: the canary becomes stable and takes all traffic", arguments: StoreBackend.allCases)
    func finishPromotes(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        try database.setCanaryTraffic("engine", range: .parse(percent: "50"), by: operatorAlice, at: minutes(4))
        try database.finish("engine", by: operatorAlice, at: minutes(5))
        let state = try reopened().serviceState("engine")
        #expect(state.stable?.number == 7)
        #expect(state.canary == nil)
        #expect(state.release(number: 6)?.status == .retired)
        #expect(state.split?.stable.number == 7)
        #expect(state.split?.canary == nil)
        #expect(try reopened().rollouts("engine").last?.state == "promoted")
    }

    @Test("a duplicate or lower release number is refused, changes nothing, and is audited", arguments: StoreBackend.allCases)
    func numbersMustIncrease(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        let before = try database.serviceState("engine")
        #expect(throws: GrayscaleError("engine: release number 6 already exists (Version 6(v 2.0.1), stable); numbers are never reused")) {
            try database.publish(draft(6, "v9"), salt: "x", by: operatorAlice, at: minutes(3))
        }
        #expect(throws: GrayscaleError("engine: release number 4 is lower than the newest release 6; numbers must increase")) {
            try database.publish(draft(4, "v1.9.0"), salt: "x", by: operatorAlice, at: minutes(3))
        }
        #expect(try reopened().serviceState("engine") == before)
        let refused = try database.auditLog(service: "engine").filter { $0.outcome == "refused" }
        #expect(refused.count == 2)
        #expect(refused.first?.detail?.contains("already exists") == true)
    }

    @Test("every split change is in the history, in order, with who made it", arguments: StoreBackend.allCases)
    func splitHistory(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        let reopened = store.open
        try fiveAndSixWithSixStable(database)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(3))
        try database.setCanaryTraffic("engine", range: .parse(percent: "5"), by: Attribution(actor: "bob", reason: "first step"), at: minutes(4))
        try database.setCanaryTraffic("engine", range: .parse(percent: "20:55"), by: operatorAlice, at: minutes(5))
        let history = try reopened().splitHistory("engine")
        #expect(history.map(\.revision) == Array(1...history.count))
        #expect(history.suffix(2).map(\.split.range.description) == ["[0 - 4]", "[20 - 55]"])
        #expect(history.suffix(2).map(\.actor) == ["bob", "alice"])
        #expect(history[history.count - 2].reason == "first step")
        let audit = try database.auditLog(service: "engine")
        #expect(audit.last?.splitBefore?.range.description == "[0 - 4]")
        #expect(audit.last?.splitAfter?.range.description == "[20 - 55]")
        #expect(audit.last?.splitAfter?.nonAuthWeight == 3600)
    }

    @Test("setting traffic for an unknown service or without a canary is refused", arguments: StoreBackend.allCases)
    func refusals(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        #expect(throws: GrayscaleError("unknown service 'engine' (no services yet; publish a release first)", kind: .notFound)) {
            try database.setCanaryTraffic("engine", range: .everyone, by: operatorAlice, at: t0)
        }
        try database.publish(draft(6, "v2.0.1"), salt: "s6", by: operatorAlice, at: t0)
        #expect(throws: GrayscaleError("engine: there is no canary release to send traffic to; publish one first; stable Version 6(v 2.0.1) takes all traffic")) {
            try database.setCanaryTraffic("engine", range: .everyone, by: operatorAlice, at: t0)
        }
    }
}
