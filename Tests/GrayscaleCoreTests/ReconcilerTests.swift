import Foundation
import Testing
@testable import GrayscaleCore

/// Drives the reconciler the way the runtime does, with a manual clock: apply the
/// actions to the service state, remember the split revision, feed the next tick.
struct RolloutDriver {
    var policy: RolloutPolicy
    var service = ServiceState(service: "engine")
    var rollout: RolloutState?
    var now: Date
    var log: [Transition] = []
    var smokeRequested = false
    var announcement: Announcement?

    init(policy: RolloutPolicy = .standard, start: Date) {
        self.policy = policy
        self.now = start
        try! service.publish(ReleaseDraft(service: "engine", number: 7, label: "v2.1.0", upstream: "http://127.0.0.1:9007"), salt: "s7", at: start)
        try! service.publish(ReleaseDraft(service: "engine", number: 8, label: "v2.1.1", upstream: "http://127.0.0.1:9008"), salt: "s8", at: start)
    }

    @discardableResult
    mutating func tick(_ observation: ObservationResult? = nil, smoke: SmokeOutcome? = nil, commands: [HumanCommand] = [],
                       platformLag: String? = nil, policyProblem: String? = nil, advancing seconds: Double = 60) -> Transition {
        now = now.addingTimeInterval(seconds)
        var transition = Reconciler.reconcile(ReconcileInput(policy: policy, service: service, rollout: rollout, observation: observation,
                                                             smoke: smoke, commands: commands, platformLag: platformLag,
                                                             policyProblem: policyProblem, announcement: announcement, now: now))
        try! transition.apply(to: &service, at: now)
        rollout = transition.rollout
        if transition.awaitsSmokeChecks { smokeRequested = true }
        log.append(transition)
        return transition
    }

    var percent: Double { Double(service.split?.range.widthHundredths ?? 0) / 100 }

    /// One healthy minute at the current split: 1,000 requests per minute in all, and
    /// `failingUnits` new users with an error, all on stable.
    func healthy(failingUnits: Int = 20) -> ObservationResult {
        let canaryRequests = Int(10 * max(percent, 0))
        let minute = Int(now.timeIntervalSince1970) / 60
        return observed(canaryRequests: canaryRequests, stableRequests: 1000 - canaryRequests, canaryFailing: [],
                        stableFailing: (0..<failingUnits).map { "s-\(minute)-\($0)" })
    }

    /// A minute in which these users failed, each on the version the current split gave it.
    func observed(canaryRequests: Int, stableRequests: Int, canaryFailing: [String], stableFailing: [String]) -> ObservationResult {
        let range = service.split?.range ?? .empty
        func evidence(_ requests: Int, _ failing: [String], canary: Bool) -> VersionEvidence {
            var evidence = VersionEvidence()
            evidence.requests = requests
            evidence.latency[LatencyBuckets.index(ms: 40)] = requests
            evidence.failures = failing.map { UnitEvent(unit: "u:\($0)", canary: canary, lower: range.lower, upper: range.upper) }
            return evidence
        }
        return .observed(IntervalObservation(
            from: now, to: now.addingTimeInterval(60),
            canary: VersionObservation(requests: canaryRequests, errors: canaryFailing.count, evidence: evidence(canaryRequests, canaryFailing, canary: true)),
            stable: VersionObservation(requests: stableRequests, errors: stableFailing.count, evidence: evidence(stableRequests, stableFailing, canary: false))))
    }
}

@Suite("Reconciler")
struct ReconcilerTests {
    /// Wednesday 2026-11-25 14:00 in Shanghai (the default window opens).
    static let wednesday = ISO8601DateFormatter().date(from: "2026-11-25T06:00:00Z")!
    /// Tuesday 2026-11-24 10:00 in Shanghai.
    static let tuesday = ISO8601DateFormatter().date(from: "2026-11-24T02:00:00Z")!

    func policy(minRequests: Int = 50, smoke: [RolloutPolicy.SmokeCheck] = []) -> RolloutPolicy {
        var policy = RolloutPolicy.standard
        policy.analysis.minRequests = minRequests
        policy.smokeChecks = smoke
        return policy
    }

    @Test("a healthy release walks every step and is promoted")
    func healthyPromotes() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        #expect(driver.percent == 1)
        var seen: [Double] = [1]
        for _ in 0..<2000 {
            driver.tick(driver.healthy())
            if seen.last != driver.percent, driver.service.canary != nil { seen.append(driver.percent) }
            if driver.rollout?.phase == .promoted { break }
        }
        #expect(seen == [1, 5, 25, 50, 80], "the last step holds 20% back on stable until the final verdict")
        #expect(driver.rollout?.phase == .promoted)
        #expect(driver.service.stable?.number == 8)
        #expect(driver.service.canary == nil)
        // Each step lasted at least its minimum.
        #expect(driver.now.timeIntervalSince(Self.wednesday) >= Double(5 * RolloutPolicy.standard.stepMinimum))
    }

    @Test("the wall clock moved an hour back or forward: no step repeated or skipped, judging goes on, the window respected")
    func clockJumps() {
        let widths: [Double] = [1, 5, 25, 50, 80]
        func stepsMoved(_ before: Double, _ after: Double) -> Int { widths.firstIndex(of: after)! - widths.firstIndex(of: before)! }
        // 15:00 in Shanghai: an hour back is still inside the window.
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday.addingTimeInterval(3600))
        driver.tick()
        while driver.percent < 5 { driver.tick(driver.healthy()) }
        // An hour back: the step neither repeats nor waits an hour of ticks.
        let back = driver.tick(driver.healthy(), advancing: -3600)
        #expect(driver.percent == 5)
        #expect(back.notifications.contains { $0.contains("the clock moved back 3") }, "\(back.notifications)")
        // The onset test's step start moves back with the clock: its ratio fades from now, not from an hour ahead.
        #expect(driver.rollout?.evidence.onset?.stepStartedAt == driver.now.timeIntervalSince1970)
        var ticks = 0
        var last = driver.percent
        while driver.percent < 25, ticks < 40 {
            driver.tick(driver.healthy())
            #expect((0...1).contains(stepsMoved(last, driver.percent)))
            last = driver.percent
            ticks += 1
        }
        #expect(driver.percent == 25, "the rollout went on within minutes of the move, not an hour: \(driver.rollout?.holdReason ?? "") \(driver.rollout?.lastVerdict?.reason ?? "")")
        #expect(ticks >= 10, "the step still lasted its minimum (10 minutes) after the move")
        // An hour forward: at most one step on that tick.
        let before = driver.percent
        driver.tick(driver.healthy(), advancing: 3600)
        #expect((0...1).contains(stepsMoved(before, driver.percent)))
        // Five hours forward (after 20:00 in Shanghai): outside the window, the rollout holds.
        driver.tick(driver.healthy(), advancing: 5 * 3600)
        #expect(driver.rollout?.phase == .holding)
        #expect(driver.rollout?.holdReason?.hasPrefix("outside the promotion window") == true)

        // Back below what was counted: the span read again adds no requests (they would count twice).
        let requests = driver.rollout!.stepRequests
        let counted = driver.rollout!.evidenceUntil!
        driver.now = counted.addingTimeInterval(-90)  // (the driver's observations span the minute after its clock)
        driver.tick(driver.observed(canaryRequests: 500, stableRequests: 500, canaryFailing: [], stableFailing: []),
                    platformLag: "held so the step stays", advancing: 0)
        #expect(driver.rollout!.stepRequests == requests, "a span read again below the high-water mark counted its requests")
        #expect(driver.rollout!.evidenceUntil == counted)

        // Judging goes on right after a move back: a failing canary is rolled back.
        var failing = RolloutDriver(policy: policy(), start: Self.wednesday.addingTimeInterval(3600))
        failing.tick()
        failing.tick(failing.healthy())
        failing.tick(failing.healthy(), advancing: -3600)
        for minute in 0..<10 where failing.rollout?.phase.isActive == true {
            failing.tick(failing.observed(canaryRequests: 10, stableRequests: 990, canaryFailing: ["u-\(minute)-a", "u-\(minute)-b"],
                                          stableFailing: ["s-\(minute)"]))
        }
        #expect(failing.rollout?.phase == .rolledBack)
    }

    @Test("a release failing for 7.5% of users is rolled back at the first step")
    func failingRollsBackAtFirstStep() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        var minute = 0
        while driver.rollout?.phase.isActive == true, minute < 30 {
            minute += 1
            // 26 users on the canary at 1%; two of them (7.5%) fail on every request.
            let failing = minute % 2 == 0 ? ["u-1"] : ["u-2"]
            driver.tick(driver.observed(canaryRequests: 10, stableRequests: 990, canaryFailing: failing, stableFailing: ["s-\(minute)"]))
        }
        #expect(driver.rollout?.phase == .rolledBack)
        #expect(driver.rollout?.step == 0)
        #expect(driver.service.release(number: 8)?.status == .rolledBack)
        #expect(driver.service.split?.canary == nil)
        let verdict = try? #require(driver.rollout?.lastVerdict)
        #expect(verdict?.outcome == .fail)
        #expect(verdict?.critical == true)
        #expect((verdict?.numbers["eValue"] ?? 0) >= 100)
    }

    @Test("one user failing on every version cannot roll back a good release alone")
    func noisyUserAlone() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        for _ in 0..<40 where driver.rollout?.phase.isActive == true {
            let canaryRequests = Int(10 * driver.percent)
            driver.tick(driver.observed(canaryRequests: canaryRequests, stableRequests: 1000 - canaryRequests, canaryFailing: ["noisy"],
                                        stableFailing: ["s"]))
        }
        #expect(driver.rollout?.phase != .rolledBack)
        #expect(driver.service.release(number: 8)?.status != .rolledBack)
    }

    @Test("an idle canary (no traffic) stays inconclusive and holds its step")
    func idleHolds() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        for _ in 0..<60 {
            driver.tick(driver.observed(canaryRequests: 0, stableRequests: 1000, canaryFailing: [], stableFailing: ["s"]))
        }
        #expect(driver.percent == 1)
        #expect(driver.rollout?.step == 0)
        #expect(driver.rollout?.lastVerdict?.outcome == .inconclusive)
        #expect(driver.rollout?.holdReason?.hasPrefix("step 1 of 5: waiting for evidence: 0 of ") == true)
    }

    @Test("metrics that fail give inconclusive, are notified after three failures, and never promote")
    func metricsFailures() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        var notified = 0
        for _ in 0..<30 {
            let transition = driver.tick(.unavailable("GET /stats: connection refused"))
            notified += transition.notifications.filter { $0.contains("failed 3 times") }.count
        }
        #expect(driver.percent == 1)
        #expect(notified == 1)
        #expect(driver.rollout?.lastVerdict?.reason.hasPrefix("metrics unavailable") == true)
    }

    @Test("a release published outside the window holds until Wednesday 14:00, then proceeds")
    func windowHolds() {
        var driver = RolloutDriver(policy: policy(), start: Self.tuesday)
        driver.tick()
        #expect(driver.percent == 0)
        #expect(driver.rollout?.phase == .holding)
        #expect(driver.rollout?.holdReason?.contains("outside the promotion window") == true)
        // Tick every 10 minutes until Wednesday 14:00 Shanghai (06:00Z).
        while driver.now < Self.wednesday.addingTimeInterval(-600) {
            driver.tick(advancing: 600)
            #expect(driver.percent == 0)
        }
        driver.tick(advancing: 600)
        #expect(driver.now >= Self.wednesday)
        #expect(driver.percent == 1)
        #expect(driver.rollout?.phase == .progressing)
    }

    @Test("rollback is allowed outside the window")
    func rollbackOutsideWindow() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        driver.tick(driver.healthy(), advancing: 24 * 3600)  // Thursday: window closed
        #expect(driver.rollout?.phase == .holding)
        driver.tick(commands: [HumanCommand(.rollback, actor: "oncall")])
        #expect(driver.rollout?.phase == .rolledBack)
        #expect(driver.service.split?.canary == nil)
    }

    @Test("a human -g -p 30 pins manual mode; automatic rollback stays armed; resume releases it")
    func manualMode() throws {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        driver.tick(commands: [HumanCommand(.setRange(try .parse(percent: "30"), nonAuthWeight: nil), actor: "kaiyuzeng", text: "-g -m engine -p 30")])
        #expect(driver.percent == 30)
        #expect(driver.rollout?.manual == true)
        // The channel hears of the split the command set, not the one before it.
        let said = driver.log.last?.notifications.filter { $0.contains("holds at") } ?? []
        #expect(said == ["engine: canary Version 8(v 2.1.1) holds at [0 - 29], 30%: manual mode: a human set the split; resume to continue"])
        for _ in 0..<30 { driver.tick(driver.healthy()) }
        #expect(driver.percent == 30, "manual mode must not advance")
        #expect(driver.rollout?.phase == .holding)
        driver.tick(driver.healthy(), commands: [HumanCommand(.resume, actor: "kaiyuzeng")])
        #expect(driver.rollout?.manual == false)
        for _ in 0..<15 { driver.tick(driver.healthy()) }
        #expect(driver.percent == 50, "after resume the rollout continues from the step the human left")

        // A split written by someone else (the CLI) pins manual mode too.
        try driver.service.setCanaryTraffic(range: .parse(percent: "20:55"))
        driver.tick(driver.healthy())
        #expect(driver.rollout?.manual == true)
        // And rollback still fires in manual mode.
        driver.tick(driver.observed(canaryRequests: 360, stableRequests: 640, canaryFailing: (0..<100).map { "u\($0)" }, stableFailing: ["s"]))
        #expect(driver.rollout?.phase == .rolledBack)
    }

    @Test("while the platform lags the rollout does not advance, but still rolls back a bad canary")
    func platformLag() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        #expect(driver.percent == 1)
        for _ in 0..<20 { driver.tick(driver.healthy(failingUnits: 1), platformLag: "scf:engine/grayscale throttled") }
        #expect(driver.percent == 1, "no advance while the platform lags")
        #expect(driver.rollout?.holdReason?.contains("the platform does not show the split yet") == true)
        driver.tick(.observed(IntervalObservation(from: driver.now, to: driver.now,
                                                  canary: VersionObservation(requests: 10, errors: 8),
                                                  stable: VersionObservation(requests: 990, errors: 0))),
                    platformLag: "scf:engine/grayscale throttled")
        #expect(driver.rollout?.phase == .rolledBack, "\(String(describing: driver.rollout?.lastVerdict))")
    }

    @Test("a policy that is gone or broken holds the rollout, says so once, and a bad canary is still rolled back")
    func policyProblemHolds() {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        var notices = 0
        for _ in 0..<30 {
            let transition = driver.tick(driver.healthy(failingUnits: 1), policyProblem: "policies/engine.yaml was deleted")
            notices += transition.notifications.filter { $0.contains("policy is unavailable") }.count
        }
        #expect(driver.percent == 1, "no advance without its policy")
        #expect(driver.rollout?.holdReason == "the policy is unavailable (policies/engine.yaml was deleted); fix or restore it to continue")
        #expect(notices == 1)
        driver.tick(driver.observed(canaryRequests: 10, stableRequests: 990, canaryFailing: ["a", "b", "c", "d"], stableFailing: []),
                    policyProblem: "policies/engine.yaml was deleted")
        #expect(driver.rollout?.phase == .rolledBack)
    }

    @Test("a smoke check failure rolls back before any user sees the release")
    func smokeFailure() {
        let check = RolloutPolicy.SmokeCheck(name: "health", method: "GET", path: "/healthz", expectStatus: 200, timeout: 5)
        var driver = RolloutDriver(policy: policy(smoke: [check]), start: Self.wednesday)
        driver.tick()
        #expect(driver.smokeRequested)
        #expect(driver.rollout?.phase == .verifying)
        driver.tick()
        #expect(driver.percent == 0, "no user before the smoke checks pass")
        driver.tick(smoke: SmokeOutcome(release: 8, checks: [.init(name: "health", passed: false, detail: "HTTP 500")]))
        #expect(driver.rollout?.phase == .rolledBack)
        #expect(driver.service.release(number: 8)?.status == .rolledBack)
        #expect(driver.log.allSatisfy { transition in !transition.splitChanges.contains { if case .canary = $0 { true } else { false } } })
    }

    @Test("passing smoke checks let the rollout start")
    func smokePass() {
        let check = RolloutPolicy.SmokeCheck(name: "health", method: "GET", path: "/healthz", expectStatus: 200, timeout: 5)
        var driver = RolloutDriver(policy: policy(smoke: [check]), start: Self.wednesday)
        driver.tick()
        driver.tick(smoke: SmokeOutcome(release: 8, checks: [.init(name: "health", passed: true, detail: "HTTP 200")]))
        #expect(driver.percent == 1)
    }

    @Test("publishing a new release supersedes the rollout; the new canary starts from the first step")
    func supersede() throws {
        var driver = RolloutDriver(policy: policy(), start: Self.wednesday)
        driver.tick()
        for _ in 0..<12 { driver.tick(driver.healthy()) }
        #expect(driver.percent == 5)
        try driver.service.publish(ReleaseDraft(service: "engine", number: 9, label: "v2.1.2", upstream: "http://127.0.0.1:9009"), salt: "s9", at: driver.now)
        driver.tick()
        #expect(driver.rollout?.release.number == 9)
        #expect(driver.rollout?.step == 0)
        #expect(driver.percent == 1)
        #expect(driver.service.release(number: 8)?.status == .superseded)
    }
}
