import Foundation
import Testing
@testable import GrayscaleCore

/// The release process's step 3: a release is announced in the channel a day before it
/// starts. Under `announce: 24h` the controller gives a canary its first users only in a
/// promotion window that opened at least 24 hours after the announcement; an operator
/// can start it anyway with a reason, which the audit keeps. The clock is injected.
@Suite("Announce gate")
struct AnnounceGateTests {
    /// The default window: Wednesdays 14:00–18:00 in Shanghai (UTC+8).
    static func at(_ iso: String) -> Date { ISO8601DateFormatter().date(from: iso)! }
    /// Wednesday 2026-11-25 14:00 Shanghai, and the next Wednesday's opening.
    static let firstWindow = at("2026-11-25T06:00:00Z")
    static let nextWindow = at("2026-12-02T06:00:00Z")

    static func policy(announce: Int? = 24 * 3600) -> RolloutPolicy {
        var policy = RolloutPolicy.standard
        policy.analysis.minRequests = 50
        policy.announce = announce
        return policy
    }

    static func announced(_ iso: String, release: Int = 8) -> Announcement {
        Announcement(service: "engine", release: release, at: at(iso), actor: "alice", notes: "fixes the name rule")
    }

    /// Ticks every 10 minutes from `start` until `end`; the canary's first users and when.
    static func run(_ driver: inout RolloutDriver, until end: Date) -> Date? {
        while driver.now < end {
            driver.tick(advancing: 600)
            if driver.percent > 0 { return driver.now }
        }
        return nil
    }

    @Test("a release that was never announced holds through the window, says why once, and can still be rolled back")
    func notAnnounced() {
        var driver = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(-3600))
        #expect(Self.run(&driver, until: Self.firstWindow.addingTimeInterval(3 * 3600)) == nil)  // inside the window
        #expect(driver.rollout?.phase == .holding)
        #expect(driver.rollout?.holdReason?.contains("release 8 was not announced") == true)
        let said = driver.log.flatMap(\.notifications).filter { $0.contains("was not announced") }
        #expect(said.count == 1)
        driver.tick(commands: [HumanCommand(.rollback, actor: "oncall")])
        #expect(driver.rollout?.phase == .rolledBack)
    }

    @Test("announced 23 hours before the window: it waits for the next one, and starts there with a reminder")
    func announcedLate() throws {
        var driver = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(-1800))
        driver.announcement = Self.announced("2026-11-24T07:00:00Z")  // Tuesday 15:00 Shanghai
        #expect(Self.run(&driver, until: Self.firstWindow.addingTimeInterval(3 * 3600)) == nil)  // inside the window
        let reason = try #require(driver.rollout?.holdReason)
        #expect(reason.contains("less than 1d before this window opened"))
        #expect(reason.contains("Wed 2026-12-02 14:00 Asia/Shanghai"))
        let started = Self.run(&driver, until: Self.nextWindow.addingTimeInterval(3600))
        #expect(started.map { $0 >= Self.nextWindow && $0 < Self.nextWindow.addingTimeInterval(600) } == true)
        #expect(driver.log.last?.notifications.contains { $0.contains("reminder") && $0.contains("announced by alice") } == true)
    }

    @Test("announced 25 hours, or exactly 24 hours, before the window: it starts when the window opens", arguments: [
        "2026-11-24T05:00:00Z", "2026-11-24T06:00:00Z",
    ])
    func announcedInTime(_ when: String) {
        var driver = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(-3000))
        driver.announcement = Self.announced(when)
        let started = Self.run(&driver, until: Self.firstWindow.addingTimeInterval(3600))
        #expect(started.map { $0 >= Self.firstWindow && $0 < Self.firstWindow.addingTimeInterval(600) } == true)
        #expect(driver.log.last?.notifications.contains { $0.contains("reminder") } == true)
    }

    @Test("announced during a window: that window does not count; another release's announcement does not either")
    func announcedDuringTheWindowOrForAnother() {
        var during = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(600))
        during.announcement = Self.announced("2026-11-25T06:05:00Z")
        #expect(Self.run(&during, until: Self.firstWindow.addingTimeInterval(4 * 3600)) == nil)
        var other = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(-600))
        other.announcement = Self.announced("2026-11-20T06:00:00Z", release: 7)
        #expect(Self.run(&other, until: Self.firstWindow.addingTimeInterval(3600)) == nil)
        #expect(other.rollout?.holdReason?.contains("was not announced") == true)
    }

    @Test("an operator starts it anyway with a reason, audited; init without one is refused")
    func override() throws {
        var driver = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(600))
        driver.tick()
        #expect(driver.percent == 0)
        let refused = driver.tick(commands: [HumanCommand(.initialize, actor: "bob", text: "-c -m engine")])
        #expect(refused.refusal?.contains("was not announced") == true)
        #expect(refused.audit.contains { $0.refused && $0.action == "init" })
        #expect(driver.percent == 0)
        let wrong = driver.tick(commands: [HumanCommand(.overrideAnnouncement(release: 9, reason: "meant for 9"), actor: "bob")])
        #expect(wrong.refusal?.contains("the canary is release 8, not 9") == true)
        #expect(driver.rollout?.announceOverride == nil)
        #expect(driver.percent == 0)
        let overridden = driver.tick(commands: [HumanCommand(.overrideAnnouncement(release: 8, reason: "hotfix for incident 42"), actor: "bob")])
        let note = try #require(overridden.audit.first { $0.action == "announce-override" })
        #expect(note.actor == "bob")
        #expect(note.detail.contains("hotfix for incident 42"))
        #expect(driver.percent == 1)  // the same tick: nothing else holds it
        #expect(driver.rollout?.announceOverride == "hotfix for incident 42")
    }

    @Test("announced in time, -c starts it at once, with the reminder")
    func initAfterAnnouncement() {
        var driver = RolloutDriver(policy: Self.policy(), start: Self.firstWindow.addingTimeInterval(-7200))
        driver.announcement = Self.announced("2026-11-23T06:00:00Z")
        driver.tick()
        #expect(driver.percent == 0)  // outside the window: the controller waits
        let started = driver.tick(commands: [HumanCommand(.initialize, actor: "bob", text: "-c -m engine")])
        #expect(started.refusal == nil)
        #expect(driver.percent == 1)
        #expect(started.notifications.contains { $0.contains("reminder") && $0.contains("announced by alice") })
    }

    @Test("old stored rollouts, without the override field, still read")
    func oldRolloutDecodes() throws {
        let state = RolloutState(service: "engine", release: ReleaseRef(number: 8, label: "v2.1.1"), phase: .holding,
                                 evidence: CanaryEvidence(policy: .standard), splitRevision: 3, now: Self.firstWindow)
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(state)) as? [String: Any])
        #expect(object["announceOverride"] == nil)
        object.removeValue(forKey: "announceOverride")
        let decoded = try JSONDecoder().decode(RolloutState.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(decoded.announceOverride == nil)
        #expect(decoded.release.number == 8)
    }

    @Test("without announce in the policy nothing changes")
    func noGate() {
        var driver = RolloutDriver(policy: Self.policy(announce: nil), start: Self.firstWindow.addingTimeInterval(-1200))
        let started = Self.run(&driver, until: Self.firstWindow.addingTimeInterval(3600))
        #expect(started.map { $0 >= Self.firstWindow && $0 < Self.firstWindow.addingTimeInterval(600) } == true)
    }

    @Test("the window's opening and next opening, in its own time zone")
    func openings() throws {
        let window = RolloutPolicy.standard.window
        #expect(window.opening(of: Self.at("2026-11-25T07:30:00Z")) == Self.firstWindow)
        #expect(window.opening(of: Self.at("2026-11-25T10:00:00Z")) == nil)  // 18:00: closed
        #expect(window.nextOpening(atOrAfter: Self.firstWindow) == Self.firstWindow)
        #expect(window.nextOpening(atOrAfter: Self.firstWindow.addingTimeInterval(1)) == Self.nextWindow)
        #expect(window.nextOpening(atOrAfter: Self.at("2026-11-23T00:00:00Z")) == Self.firstWindow)
        #expect(PromotionWindow.format(Self.firstWindow, in: window.timeZone) == "Wed 2026-11-25 14:00 Asia/Shanghai")
    }

    @Test("announce in a policy file: a duration over zero, else file:line: announce: why")
    func yaml() throws {
        let policy = try RolloutPolicy.parse("steps: [1, 100]\nannounce: 24h\n", file: "p.yaml", defaultName: "p")
        #expect(policy.announce == 86_400)
        for (text, reason) in [("announce: 0s", "longer than 0"), ("announce: soon", "expected a duration")] {
            #expect {
                _ = try RolloutPolicy.parse("steps: [1, 100]\n\(text)\n", file: "p.yaml", defaultName: "p")
            } throws: { error in
                "\(error)".contains("p.yaml:2") && "\(error)".contains("announce") && "\(error)".contains(reason)
            }
        }
    }
}
