import Foundation
import Testing
@testable import GrayscaleCore

/// A world of users sending safe requests that stable answers and the canary answers
/// again (a mirror): users who differ (log-normal activity, some with clients that fail
/// every request, some flaky), latency that is noisy and heavy-tailed per request and
/// per user, and outages that hit both versions at once. Under the null the canary is
/// the same software: each copy fails and takes its time by the same law as stable's.
struct MirrorWorld {
    var users = 400
    var chronicShare = 0.02
    var flakyShare = 0.05
    var flakyRate = 0.3
    var background = 0.002
    /// Chance per batch that a shared dependency is down for it: every request of the batch fails on both.
    var outageChance = 0.01
    /// The canary's extra failure rate for users with the bad trait (the name rule), and that trait's share.
    var badTraitShare = 0.0
    var canaryExtraFailure = 0.0
    /// The canary's extra latency on every request, in ms.
    var canaryExtraMs = 0.0

    /// One batch (a tick's span) of `pairs` mirrored requests.
    func batch(_ pairs: Int, random: inout SeededRandom) -> MirrorPairs {
        var span = MirrorPairs()
        let outage = random.uniform() < outageChance
        for _ in 0..<pairs {
            // Busier users send more: pick a user with log-normal weight by rejection on a Pareto-ish draw.
            let user = Int(Double(users) * pow(random.uniform(), 3))
            var userRandom = SeededRandom(state: UInt64(user) &* 0x9e37_79b9_7f4a_7c15)
            let trait = userRandom.uniform()
            let chronic = trait < chronicShare
            let flaky = !chronic && trait < chronicShare + flakyShare
            let bad = userRandom.uniform() < badTraitShare
            let userScale = exp(0.8 * userRandom.normal())  // some users' requests are always slower
            func fails() -> Bool {
                if outage || chronic { return true }
                return random.uniform() < (flaky ? flakyRate : background)
            }
            func latency() -> Double { 40 * userScale * exp(0.6 * random.normal()) + (random.uniform() < 0.01 ? 2000 * random.uniform() : 0) }
            let stableFailed = fails()
            let canaryFailed = fails() || (bad && random.uniform() < canaryExtraFailure)
            span.record(stableFailed: stableFailed, canaryFailed: canaryFailed, stableMs: latency(), canaryMs: latency() + canaryExtraMs)
        }
        return span
    }
}

@Suite("Mirrored traffic")
struct MirrorTests {
    @Test("the policy's mirror and webSocketDrain fields, and clear errors where they are wrong")
    func policyFields() throws {
        let policy = try RolloutPolicy.parse("mirror: {share: 10, duration: 5m, minRequests: 40}\nwebSocketDrain: 30s\n", file: "p.yaml")
        #expect(policy.mirror == RolloutPolicy.Mirror(share: 1000, duration: 300, minRequests: 40))
        #expect(policy.webSocketDrain == 30)
        let defaults = try RolloutPolicy.parse("mirror: {share: 0.5}\n", file: "p.yaml")
        #expect(defaults.mirror == RolloutPolicy.Mirror(share: 50, duration: 600, minRequests: 100))
        #expect(try RolloutPolicy.parse("name: x\n", file: "p.yaml").mirror == nil)
        let routed = try RolloutPolicy.parse("mirror:\n  share: 5\n  routes: [POST /v1/query, PUT /cache/]\n", file: "p.yaml")
        #expect(routed.mirror?.routes == [MirrorRoute(method: "POST", pathPrefix: "/v1/query")!, MirrorRoute(method: "PUT", pathPrefix: "/cache/")!])
        let query = try #require(MirrorRoute(parsing: "POST /v1/query"))
        for target in ["/v1/query", "/v1/query?x=1", "/v1/query/apps"] { #expect(query.matches(method: "POST", target: target), "\(target)") }
        // Another method, another path that merely starts alike, and targets an upstream could read as another path: never.
        for (method, target) in [("GET", "/v1/query"), ("post", "/v1/query"), ("POST", "/v1/query-admin"), ("POST", "/v1/query/../admin"),
                                 ("POST", "/v1/query/%2e%2e/admin"), ("POST", "/v1/query%2F..%2Fadmin"), ("POST", "/v1/query//admin"),
                                 ("POST", "/v1/query\\..\\admin"), ("POST", "http://evil/v1/query")] {
            #expect(!query.matches(method: method, target: target), "\(method) \(target)")
        }
        // A route decoded from a split (the database, a controller) is checked like a parsed one.
        let decoder = JSONDecoder()
        #expect(try decoder.decode(MirrorRoute.self, from: Data(#"{"method":"POST","pathPrefix":"/v1/query"}"#.utf8)) == query)
        for hostile in [#"{"method":"POST","pathPrefix":""}"#, #"{"method":"GET","pathPrefix":"/"}"#, #"{"method":"POST","pathPrefix":"/a/../b"}"#,
                        #"{"method":"post","pathPrefix":"/a"}"#] {
            #expect(throws: DecodingError.self, "\(hostile)") { try decoder.decode(MirrorRoute.self, from: Data(hostile.utf8)) }
        }
        for (text, expected) in [
            ("mirror: {share: 0}\n", "p.yaml:1: mirror.share: must be more than 0 percent"),
            ("mirror: {duration: 5m}\n", "p.yaml:1: mirror.share: required"),
            ("mirror: {share: 10, every: 5m}\n", "mirror"),
            ("mirror: {share: 120}\n", "p.yaml:1: mirror.share: expected a percent"),
            ("\nwebSocketDrain: 2h\n", "p.yaml:2: webSocketDrain: must be between 1s and 1h"),
            ("mirror:\n  share: 5\n  routes: [post /q]\n", "p.yaml:3: mirror.routes[0]: expected an upper-case method and a plain path prefix such as 'POST /v1/query' (got 'post /q')"),
            ("mirror:\n  share: 5\n  routes: [POST /q/../admin]\n", "p.yaml:3: mirror.routes[0]: expected an upper-case method and a plain path prefix"),
            ("mirror:\n  share: 5\n  routes: [GET /q]\n", "p.yaml:3: mirror.routes[0]: GET and HEAD are always mirrored"),
            ("mirror: {share: 5, duration: 10m, maxDuration: 5m}\n", "p.yaml:1: mirror.maxDuration: must be at least mirror.duration"),
        ] {
            #expect(throws: GrayscaleError.self) { try RolloutPolicy.parse(text, file: "p.yaml") }
            do { _ = try RolloutPolicy.parse(text, file: "p.yaml") } catch {
                #expect(error.message.contains(expected), "\(text): \(error.message)")
            }
        }
    }

    @Test("pairs add up across spans and proxies; a hostile proxy's counts are clamped; latency counts only when wholly above δ")
    func pairsMerge() throws {
        var a = MirrorPairs()
        a.record(stableFailed: false, canaryFailed: true, stableMs: 10, canaryMs: 900)
        a.record(stableFailed: true, canaryFailed: false, stableMs: 10, canaryMs: 10)
        a.record(stableFailed: true, canaryFailed: true, stableMs: 10, canaryMs: 10)
        a.record(stableFailed: false, canaryFailed: false, stableMs: 10, canaryMs: 300)  // 290 ms slower
        a.record(stableFailed: false, canaryFailed: false, stableMs: 10, canaryMs: 55)   // 45 ms slower
        a.record(stableFailed: false, canaryFailed: false, stableMs: 50, canaryMs: 20)
        var evidence = VersionEvidence(mirror: a)
        var hostile = MirrorPairs()
        hostile.pairs = -5
        hostile.canaryOnlyFailures = .max
        hostile.canarySlowerBy = [Int](repeating: 1, count: 500)
        evidence.merge(VersionEvidence(mirror: hostile))
        let merged = try #require(evidence.mirror)
        #expect(merged.pairs == 6)
        #expect(merged.canaryOnlyFailures == VersionEvidence.countLimit)
        #expect(a.canarySlower(byMoreThan: 50) == 1, "45 ms is not more than 50; 290 is")
        #expect(a.canarySlower(byMoreThan: 0) == 2)
        let decoded = try JSONDecoder().decode(VersionEvidence.self, from: JSONEncoder().encode(VersionEvidence(mirror: a)))
        #expect(decoded.mirror == a)
        // A proxy older than mirroring sends no `mirror`: still decodes.
        #expect(try JSONDecoder().decode(VersionEvidence.self, from: Data(#"{"requests":1,"latency":[],"failures":[]}"#.utf8)).mirror == nil)
    }

    @Test("both sides are judged alike: by their answer's head, against one limit; a user who left cuts both off at the same moment")
    func sidesJudgedAlike() {
        let second: UInt64 = 1_000_000
        func pair(_ stable: MirrorSide, _ canary: MirrorSide, limit: UInt64 = 30 * second) -> MirrorPairs {
            var pairs = MirrorPairs()
            pairs.record(stable: stable, canary: canary, limitMicros: limit)
            return pairs
        }
        let fast = MirrorSide(status: 200, headMicros: 20_000), late = MirrorSide(status: 200, headMicros: 31 * second)
        #expect(pair(fast, MirrorSide(status: 503, headMicros: 5_000)).canaryOnlyFailures == 1)
        #expect(pair(MirrorSide(status: 500, headMicros: 5_000), fast).stableOnlyFailures == 1)
        #expect(pair(fast, .noAnswer).canaryOnlyFailures == 1)
        // A head past the limit is no answer, on either side: stable's user may have got it, the pair says "not in time" for both alike.
        #expect(pair(late, late).bothFailed == 1)
        #expect(pair(late, fast).stableOnlyFailures == 1)
        // The user left 2 s after stable's request went, before its head: the canary's copy counts as answered only within those 2 s.
        #expect(pair(.noAnswer, MirrorSide(status: 200, headMicros: 3 * second), limit: 2 * second).bothFailed == 1)
        #expect(pair(.noAnswer, MirrorSide(status: 200, headMicros: second), limit: 2 * second).stableOnlyFailures == 1)
        // A 4xx is an answer (the user's own mistake, on both versions alike), not a failure.
        #expect(pair(MirrorSide(status: 404, headMicros: 1000), MirrorSide(status: 404, headMicros: 90_000)).canarySlower(byMoreThan: 50) == 1)
    }

    // MARK: - The mirror phase in the reconciler

    static let wednesday = ISO8601DateFormatter().date(from: "2026-11-25T06:30:00Z")!  // 14:30 in Shanghai, inside the window

    func mirrorPolicy() -> RolloutPolicy {
        var policy = RolloutPolicy.standard
        policy.mirror = RolloutPolicy.Mirror(share: 2000, duration: 300, minRequests: 100)
        policy.webSocketDrain = 20
        return policy
    }

    func mirrored(_ driver: RolloutDriver, canaryOnly: Int, stableOnly: Int, fine: Int) -> ObservationResult {
        var pairs = MirrorPairs()
        for _ in 0..<canaryOnly { pairs.record(stableFailed: false, canaryFailed: true, stableMs: 40, canaryMs: 40) }
        for _ in 0..<stableOnly { pairs.record(stableFailed: true, canaryFailed: false, stableMs: 40, canaryMs: 40) }
        for index in 0..<fine { pairs.record(stableFailed: false, canaryFailed: false, stableMs: 40, canaryMs: 35 + Double(index % 10)) }
        var stable = VersionEvidence(requests: 1000)
        stable.latency[LatencyBuckets.index(ms: 40)] = 1000
        return .observed(IntervalObservation(
            from: driver.now, to: driver.now.addingTimeInterval(60),
            canary: VersionObservation(requests: 0, errors: 0, evidence: VersionEvidence(mirror: pairs)),
            stable: VersionObservation(requests: 1000, errors: 0, evidence: stable)))
    }

    @Test("a mirror phase before the first step: copies start with no user on the canary, a good canary passes on to its first step and the copies stop")
    func mirrorPhasePasses() throws {
        var driver = RolloutDriver(policy: mirrorPolicy(), start: Self.wednesday)
        let start = driver.tick()
        #expect(start.splitChanges.contains(.mirror(share: 2000, reason: "mirror phase")))
        #expect(start.splitChanges.first == .webSocketDrain(seconds: 20), "the policy's drain travels with the split")
        #expect(driver.service.split?.canary?.mirror == 2000)
        #expect(driver.service.split?.webSocketDrain == 20)
        #expect(driver.percent == 0)
        // Four minutes of good pairs: not yet (the phase lasts five).
        for _ in 0..<4 {
            driver.tick(mirrored(driver, canaryOnly: 0, stableOnly: 1, fine: 60))
            #expect(driver.percent == 0)
            #expect(driver.rollout?.holdReason?.hasPrefix("mirror phase") == true)
        }
        driver.tick(mirrored(driver, canaryOnly: 0, stableOnly: 0, fine: 60))
        #expect(driver.rollout?.mirrorPassedAt != nil)
        #expect(driver.percent == 1, "the first step")
        #expect(driver.service.split?.canary?.mirror == nil, "the first step's users end the copies")
        #expect(driver.log.flatMap(\.audit).contains { $0.action == "mirror" && $0.detail.contains("passed its mirror phase") })
    }

    @Test("too few mirrored requests hold the first step, however long the phase lasts; outside the window the copies run all the same")
    func mirrorPhaseNeedsRequests() throws {
        var driver = RolloutDriver(policy: mirrorPolicy(), start: Self.wednesday.addingTimeInterval(-86400))  // a Tuesday
        driver.tick()
        #expect(driver.service.split?.canary?.mirror == 2000, "no user is exposed: the window is not needed")
        for _ in 0..<10 { driver.tick(mirrored(driver, canaryOnly: 0, stableOnly: 0, fine: 5)) }
        #expect(driver.percent == 0)
        #expect(driver.rollout?.holdReason?.contains("50 of 100 mirrored requests") == true)
    }

    @Test("a phase that cannot compare enough requests ends after maxDuration, said in the channel; a rollout that began before the policy asked for a mirror has none")
    func mirrorPhaseEnds() throws {
        var driver = RolloutDriver(policy: mirrorPolicy(), start: Self.wednesday)
        driver.tick()
        // The metrics source carries no pairs (Prometheus): 15 minutes, three times the phase's duration.
        for _ in 0..<14 { driver.tick(driver.healthy(failingUnits: 0)) }
        #expect(driver.percent == 0)
        let end = driver.tick(driver.healthy(failingUnits: 0))
        #expect(end.notifications.contains { $0.contains("mirror phase ends after 15m with 0 of 100 mirrored requests compared") })
        #expect(driver.percent == 1, "the first step follows")

        var old = RolloutDriver(policy: .standard, start: Self.wednesday)
        old.tick()  // began under a policy without a mirror
        old.policy = mirrorPolicy()
        old.rollout?.step = -1
        old.tick(old.healthy(failingUnits: 0))
        #expect(old.log.flatMap(\.audit).contains { $0.detail.contains("no mirror phase (this rollout began before its policy asked for one)") })
        #expect(old.service.split?.canary?.mirror == nil)
    }

    @Test("the phase does not pass while its evidence leans against the canary (past √(1/α)); it passes once the evidence evens out; one stray failure does not hold it")
    func mirrorPhaseWaitsForEvidence() throws {
        var driver = RolloutDriver(policy: mirrorPolicy(), start: Self.wednesday)
        driver.tick()
        // Six canary-only failures early on: mirror e-value about 22, well under a rollback (0.8 + 0.2 × 22 < 100).
        driver.tick(mirrored(driver, canaryOnly: 6, stableOnly: 0, fine: 100))
        for _ in 0..<6 { driver.tick(mirrored(driver, canaryOnly: 0, stableOnly: 0, fine: 100)) }
        #expect(driver.rollout?.phase.isActive == true)
        #expect(driver.percent == 0, "past its duration and its requests, but the evidence leans against the canary")
        #expect(driver.rollout?.holdReason?.contains("mirroring on until the evidence settles") == true, "\(driver.rollout?.holdReason ?? "")")
        // Stable fails as often: the evidence evens out, and the phase passes.
        driver.tick(mirrored(driver, canaryOnly: 0, stableOnly: 6, fine: 100))
        #expect(driver.percent == 1)

        var stray = RolloutDriver(policy: mirrorPolicy(), start: Self.wednesday)
        stray.tick()
        stray.tick(mirrored(stray, canaryOnly: 1, stableOnly: 0, fine: 100))
        for _ in 0..<5 { stray.tick(mirrored(stray, canaryOnly: 0, stableOnly: 0, fine: 100)) }
        #expect(stray.percent == 1, "a single canary-only failure is no reason to keep mirroring")
    }

    @Test("a canary that fails the mirrored requests stable answers is rolled back before any user is routed to it")
    func mirrorPhaseRollsBack() throws {
        var driver = RolloutDriver(policy: mirrorPolicy(), start: Self.wednesday)
        driver.tick()
        var ticks = 0
        while driver.rollout?.phase.isActive == true, ticks < 10 {
            driver.tick(mirrored(driver, canaryOnly: 3, stableOnly: 0, fine: 40))
            ticks += 1
        }
        #expect(driver.rollout?.phase == .rolledBack)
        #expect(driver.rollout?.step == -1)
        #expect(driver.service.release(number: 8)?.status == .rolledBack)
        #expect(driver.log.allSatisfy { transition in
            !transition.splitChanges.contains { if case .canary = $0 { true } else { false } }
        }, "no split ever gave the canary a user")
        let reason = try #require(driver.log.last?.rollbackReason)
        #expect(reason.contains("mirrored"), "\(reason)")
        print("mirror phase: rolled back after \(ticks) minutes: \(reason)")
    }

    @Test("a canary whose WebSockets drop more often than stable's holds its step (never a rollback); bursts on stable, or a few drops, do not")
    func webSocketDropsHold() throws {
        #expect(abs(WebSocketTally.upperTail(successes: 8, trials: 10, probability: 0.5) - 56.0 / 1024) < 1e-12)
        #expect(WebSocketTally(canaryOpened: 100, canaryDropped: 30, stableOpened: 1000, stableDropped: 5).problem != nil)
        #expect(WebSocketTally(canaryOpened: 100, canaryDropped: 2, stableOpened: 1000, stableDropped: 0).problem == nil, "too few to say")
        #expect(WebSocketTally(canaryOpened: 100, canaryDropped: 3, stableOpened: 1000, stableDropped: 300).problem == nil, "a burst on stable")
        #expect(WebSocketTally(canaryOpened: 100, canaryDropped: 10, stableOpened: 1000, stableDropped: 100).problem == nil, "the same rate")

        var driver = RolloutDriver(start: Self.wednesday)
        driver.tick()
        #expect(driver.percent == 1)
        // Ten healthy minutes in which the canary's sockets keep dropping.
        for _ in 0..<11 {
            guard case .observed(var interval) = driver.healthy(failingUnits: 0) else { continue }
            interval.canary.webSocketsOpened = 20
            interval.canary.webSocketsDropped = 15
            interval.stable.webSocketsOpened = 500
            interval.stable.webSocketsDropped = 2
            driver.tick(.observed(interval))
        }
        #expect(driver.percent == 1, "held at the first step")
        #expect(driver.rollout?.phase == .holding)
        #expect(driver.rollout?.holdReason?.contains("WebSockets dropped without a close frame more often than stable's") == true)
        #expect(driver.service.release(number: 8)?.status == .canary, "held, not rolled back")
        #expect(driver.log.flatMap(\.notifications).filter { $0.contains("holds at") && $0.contains("WebSockets") }.count == 1, "told once")
        // The drops stop (a pod's restart was over): after the step's minimum time without one, the step passes.
        for _ in 0..<11 { driver.tick(driver.healthy(failingUnits: 0)) }
        #expect(driver.percent == 5, "the next step")
        // And a hold never stands in the way of a rollback.
        var failing = RolloutDriver(start: Self.wednesday)
        failing.tick()
        failing.rollout?.stepWebSockets = WebSocketTally(canaryOpened: 10, canaryDropped: 10, stableOpened: 100, stableDropped: 0,
                                                         lastCanaryDropAt: failing.now.timeIntervalSince1970)
        for minute in 0..<10 where failing.rollout?.phase.isActive == true {
            failing.tick(failing.observed(canaryRequests: 10, stableRequests: 990, canaryFailing: (0..<5).map { "bad-\(minute)-\($0)" }, stableFailing: []))
        }
        #expect(failing.rollout?.phase == .rolledBack)
        #expect(WebSocketTally.upperTail(successes: 7, trials: 200_000, probability: 1e-5) > 0.004, "exact in the far tail, no normal approximation")
    }

    @Test("the mirror's weight comes out of the others': the combined e-value stays an average with weights summing to 1")
    func weights() {
        var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: 50, mirror: true)
        // Every e-process at 1: the average is 1.
        #expect(abs(evidence.logE) < 1e-12)
        var pairs = MirrorPairs()
        for _ in 0..<20 { pairs.record(stableFailed: false, canaryFailed: true, stableMs: 1, canaryMs: 1) }
        evidence.updateMirror(pairs)
        let mirror = exp(evidence.mirror!.logE)
        #expect(abs(exp(evidence.logE) - (0.8 + 0.2 * mirror)) < 1e-6 * mirror)
    }
}

/// The Monte Carlo runs: CPU-heavy, so run apart from the socket tests (`make test` runs Heavy suites on their own).
@Suite("Heavy: mirrored traffic, seeded Monte Carlo")
struct HeavyMirrorTests {
    /// Runs the mirror test over `batches` spans of `perBatch` pairs; true when its e-value ever reaches `threshold`.
    static func rejects(_ world: MirrorWorld, seed: UInt64, batches: Int, perBatch: Int, threshold: Double, latencyMs: Double? = 50) -> (Bool, Int) {
        var random = SeededRandom(state: seed)
        var test = MirrorTest(weight: 1, latencyEffectMs: latencyMs)
        for batch in 0..<batches {
            test.update(world.batch(perBatch, random: &random))
            if test.logE >= log(threshold) { return (true, (batch + 1) * perBatch) }
        }
        return (false, batches * perBatch)
    }

    @Test("a canary that is the same software is rejected at most α of the time, in worlds of differing users, broken clients, outages and noisy latency", arguments: [
        ("users who differ, chronic and flaky clients, outages", MirrorWorld()),
        ("half the users flaky at 50%, no outages", MirrorWorld(flakyShare: 0.5, flakyRate: 0.5, outageChance: 0)),
        ("one outage in five batches", MirrorWorld(outageChance: 0.2)),
    ])
    func nullKeepsAlpha(_ name: String, _ world: MirrorWorld) async {
        let alpha = 0.05, runs = 1000
        let rejected = await onOwnThread {
            (0..<runs).filter { Self.rejects(world, seed: 20_261_207 &+ UInt64($0), batches: 60, perBatch: 20, threshold: 1 / alpha).0 }.count
        }
        let rate = Double(rejected) / Double(runs)
        print("mirror null (\(name)): \(rejected) of \(runs) runs rejected at α = \(alpha), checked after each of 60 spans of 20 pairs")
        // Ville's bound is α; 3 standard errors of slack for the Monte Carlo itself.
        #expect(rate <= alpha + 3 * (alpha * (1 - alpha) / Double(runs)).squareRoot())
    }

    @Test("the name rule over GETs (7.5% of users fail every request on the canary) is caught within a few hundred mirrored requests; a 200 ms slowdown too")
    func catchesBadCanaries() async {
        let alpha = 0.01
        // The rollout's threshold for the mirror part alone: its weight is 0.2 and the rest is worth 0.8 before any step.
        let threshold = (1 / alpha - (1 - CanaryEvidence.mirrorWeight)) / CanaryEvidence.mirrorWeight
        let (nameRuleCaught, pairs) = await onOwnThread {
            var caught = 0, pairs: [Int] = []
            for run in 0..<200 {
                let (rejected, at) = Self.rejects(MirrorWorld(badTraitShare: 0.075, canaryExtraFailure: 1), seed: 7 &+ UInt64(run),
                                                  batches: 100, perBatch: 20, threshold: threshold)
                if rejected { caught += 1; pairs.append(at) }
            }
            return (caught, pairs.sorted())
        }
        print("name rule over GETs: caught in \(nameRuleCaught) of 200 runs; median \(pairs.isEmpty ? 0 : pairs[pairs.count / 2]) mirrored requests")
        #expect(nameRuleCaught == 200)
        #expect(pairs[pairs.count / 2] <= 400)
        let slowCaught = await onOwnThread {
            (0..<200).filter { Self.rejects(MirrorWorld(canaryExtraMs: 200), seed: 99 &+ UInt64($0), batches: 100, perBatch: 20, threshold: threshold).0 }.count
        }
        #expect(slowCaught == 200)
        // And without latency judged, the slowdown alone is no evidence.
        let slowWithoutLatency = Self.rejects(MirrorWorld(outageChance: 0, canaryExtraMs: 200), seed: 5, batches: 50, perBatch: 20,
                                              threshold: threshold, latencyMs: nil).0
        #expect(!slowWithoutLatency)
    }
}
