import Foundation
import Testing
@testable import GrayscaleCore

@Suite("Service state rules")
struct ServiceStateTests {
    let t0 = Date(timeIntervalSince1970: 1_790_000_000)

    func draft(_ number: Int, _ label: String) -> ReleaseDraft {
        ReleaseDraft(service: "engine", number: number, label: label, upstream: "http://127.0.0.1:90\(number)")
    }

    @Test("routing honours deny list, then allow list, then the bucket")
    func routing() throws {
        var state = ServiceState(service: "engine")
        try state.publish(draft(7, "v2.1.0"), salt: "s7", at: t0)
        try state.publish(draft(8, "v2.1.1"), salt: "s8", at: t0)
        try state.setCanaryTraffic(range: .everyone)
        try state.setRules(allowList: ["tester"], denyList: ["vip"])
        let split = try #require(state.split)
        #expect(split.route(appId: "vip").target == .stable)
        #expect(split.route(appId: "vip").reason == .denyList)
        #expect(split.route(appId: "someone").target == .canary)
        try state.setCanaryTraffic(range: .empty)
        let narrowed = try #require(state.split)
        #expect(narrowed.route(appId: "tester").target == .canary)
        #expect(narrowed.route(appId: "tester").reason == .allowList)
        #expect(narrowed.route(appId: "someone").reason == .outOfRange)
        #expect(narrowed.routeAnonymous(draw: Bucket(0)).target == .stable)
    }

    @Test("non-auth weight follows the range width unless given")
    func nonAuthWeight() throws {
        var state = ServiceState(service: "engine")
        try state.publish(draft(7, "v2.1.0"), salt: "s7", at: t0)
        try state.publish(draft(8, "v2.1.1"), salt: "s8", at: t0)
        try state.setCanaryTraffic(range: CanaryRange.parse(percent: "20:55"))
        #expect(state.split?.nonAuthWeight == 3600)
        try state.setCanaryTraffic(range: CanaryRange.parse(percent: "20:55"), nonAuthWeight: 500)
        #expect(state.split?.nonAuthWeight == 500)
        let split = try #require(state.split)
        #expect(split.routeAnonymous(draw: Bucket(499)).target == .canary)
        #expect(split.routeAnonymous(draw: Bucket(500)).target == .stable)
    }

    @Test("a change that changes nothing keeps the revision")
    func idempotentSet() throws {
        var state = ServiceState(service: "engine")
        try state.publish(draft(7, "v2.1.0"), salt: "s7", at: t0)
        try state.publish(draft(8, "v2.1.1"), salt: "s8", at: t0)
        try state.setCanaryTraffic(range: CanaryRange.parse(percent: "30"))
        let revision = state.split?.revision
        try state.setCanaryTraffic(range: CanaryRange.parse(percent: "30"))
        #expect(state.split?.revision == revision)
    }

    @Test("invalid releases and operations are refused", arguments: [
        ("bad service", ReleaseDraft(service: "Engine!", number: 1, label: "v1", upstream: "http://a")),
        ("number zero", ReleaseDraft(service: "engine", number: 0, label: "v1", upstream: "http://a")),
        ("label with space", ReleaseDraft(service: "engine", number: 1, label: "v 1", upstream: "http://a")),
        ("upstream not a URL", ReleaseDraft(service: "engine", number: 1, label: "v1", upstream: "localhost:9000")),
    ])
    func invalidDrafts(_ name: String, draft: ReleaseDraft) {
        var state = ServiceState(service: "engine")
        #expect(throws: GrayscaleError.self) { try state.publish(draft, salt: "s", at: t0) }
        #expect(state.releases.isEmpty)
    }

    @Test("allow and deny lists may not share an appId")
    func listsDisjoint() throws {
        var state = ServiceState(service: "engine")
        try state.publish(draft(7, "v2.1.0"), salt: "s7", at: t0)
        #expect(throws: GrayscaleError("engine: appId 'qa' cannot be on both the allow list and the deny list")) {
            try state.setRules(allowList: ["qa"], denyList: ["qa", "x"])
        }
    }

    @Test("replies show the version as the design document does")
    func versionDisplay() {
        #expect(ReleaseRef(number: 8, label: "v2.1.1").description == "Version 8(v 2.1.1)")
        #expect(ReleaseRef(number: 3, label: "2024-11-rc1").description == "Version 3(2024-11-rc1)")
    }
}
