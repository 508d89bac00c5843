import Foundation
import Testing
@testable import GrayscaleCore

/// Runs CPU-heavy work on a thread of its own, off the cooperative pool, so that tests
/// serving sockets at the same time are not starved.
func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: work()) }.start()
    }
}

/// SplitMix64, so every Monte Carlo run replays from its seed.
struct SeededRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    mutating func normal() -> Double { (-2 * log(max(uniform(), 1e-300))).squareRoot() * cos(2 * .pi * uniform()) }
}

/// A world of units placed by a hash (here: a uniform bucket each), widening prefix
/// steps, and failures that never depend on the version (the null) unless `canaryHazard` says so.
struct UnitWorld {
    var units = 500
    /// σ of log-normal activity: 2 means the busiest 1% of units send about a third of the requests.
    var activitySigma = 2.0
    /// Share of units whose client fails every request on every version.
    var chronicShare = 0.01
    /// Chance that one request fails in the background, on every version.
    var background = 0.002
    var requestsPerWindow = 1.0
    var windowsPerStep = 12
    var steps = [100, 500, 2500, 5000, 8000]
    /// Extra chance per request of failing on the canary (0: a harmless release).
    var canaryHazard = 0.0
    /// The first window of each step still begins under the previous step's split (a
    /// split that changes inside a span, or proxies that take it late): chronic units fail
    /// under both, in that order.
    var splitChangesInsideSpans = false

    /// Whether the e-process ever rejected; and the failing canary units when it did.
    func run(seed: UInt64) -> (rejected: Bool, canaryUnitsFailed: Int) {
        var random = SeededRandom(state: seed)
        var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil)
        var clock = Date(timeIntervalSince1970: 0)
        let buckets = (0..<units).map { _ in Int(random.next() % UInt64(Bucket.count)) }
        let activity = (0..<units).map { _ in exp(activitySigma * random.normal() - activitySigma * activitySigma / 2) }
        let chronic = (0..<units).map { _ in random.uniform() < chronicShare }
        var canaryFailed = Set<Int>()
        for (index, width) in steps.enumerated() {
            evidence.startStep(last: index == steps.count - 1, at: clock)
            var seenInStep = Set<Int>()
            for windowIndex in 0..<windowsPerStep {
                clock += 600
                let previous = splitChangesInsideSpans && windowIndex == 0 && index > 0 ? steps[index - 1] : nil
                var canary = VersionEvidence(), stable = VersionEvidence()
                for unit in 0..<units {
                    let mean = requestsPerWindow * activity[unit]
                    // Requests this window (Poisson by inversion), each failing or not.
                    var requests = 0, product = random.uniform()
                    let limit = exp(-mean)
                    while product > limit { requests += 1; product *= random.uniform() }
                    guard requests > 0 else { continue }
                    let onCanary = buckets[unit] < width
                    var failed = chronic[unit], failedAt = 0
                    for request in 0..<requests where !failed {
                        failed = random.uniform() < background || (onCanary && random.uniform() < canaryHazard)
                        failedAt = request
                    }
                    // A failure of the unit's first request in this step is marked fresh, as the proxy marks it.
                    let fresh = seenInStep.insert(unit).inserted && failedAt == 0
                    guard failed else { continue }
                    if let previous, chronic[unit] {
                        let before = UnitEvent(unit: "u:\(unit)", canary: buckets[unit] < previous, lower: 0, upper: previous, at: clock.timeIntervalSince1970 - 599)
                        if before.canary { canary.failures.append(before) } else { stable.failures.append(before) }
                    }
                    // Failures at any moment of the window (the onset test bets by the time since the step began).
                    let at = clock.timeIntervalSince1970 - 1 - random.uniform() * 590
                    let event = UnitEvent(unit: "u:\(unit)", canary: onCanary, lower: 0, upper: width, at: at, fresh: fresh)
                    if onCanary { canary.failures.append(event); canaryFailed.insert(unit) } else { stable.failures.append(event) }
                }
                evidence.update(canary: canary, stable: stable, at: clock)
                if evidence.rejects { return (true, canaryFailed.count) }
            }
        }
        return (false, canaryFailed.count)
    }
}

@Suite("Canary evidence")
struct CanaryEvidenceTests {
    /// World: 500 units, log-normal activity (σ 2), 1% chronic broken clients (whose
    /// first request under every split fails, on either version), 0.2% background
    /// errors, five widening steps; a harmless release. 1,000 seeded runs:
    /// false rejections stay under α = 1% plus three standard errors (1.94%).
    @Test("a harmless release is rejected at most α of the time, heavy users and broken clients included")
    func nullWorld() async {
        let world = UnitWorld()
        let rejected = await onOwnThread { (0..<1000).filter { world.run(seed: UInt64($0) &+ 1).rejected }.count }
        let bound: Double = 0.01 + 3 * (0.01 * 0.99 / 1000.0).squareRoot()
        let rate = Double(rejected) / 1000
        #expect(rate <= bound, "\(rejected) of 1000 false rejections")
    }

    /// The same world where each new split begins inside a span: a chronic client fails
    /// under the old split and then the new one. Taking the canary failure first (by
    /// version rather than by time) would roll back a third of these harmless releases.
    @Test("a split that changes inside a span: a unit counts by its earliest failure, whatever its version")
    func splitChangeInsideSpan() async {
        var world = UnitWorld()
        world.chronicShare = 0.1
        world.splitChangesInsideSpans = true
        let rejected = await onOwnThread { [world] in (0..<1000).filter { world.run(seed: UInt64($0) &+ 5).rejected }.count }
        let bound: Double = 0.01 + 3 * (0.01 * 0.99 / 1000.0).squareRoot()
        #expect(Double(rejected) / 1000 <= bound, "\(rejected) of 1000 false rejections")
    }

    /// The same world counting each failure (not each unit) would fail the bound: the
    /// chronic clients alone would do it. A release whose canary users fail 20% of
    /// requests is caught in nearly every run, after few failing canary units.
    @Test("a bad release is caught quickly")
    func badWorld() async {
        var world = UnitWorld()
        world.canaryHazard = 0.2
        let runs = await onOwnThread { [world] in (0..<300).map { world.run(seed: UInt64($0) &+ 7) } }
        let caught = runs.filter(\.rejected)
        #expect(caught.count >= 297, "caught \(caught.count) of 300")
        let meanFailed = Double(caught.map(\.canaryUnitsFailed).reduce(0, +)) / Double(max(1, caught.count))
        // Failing canary units include the chronic and background ones that landed there.
        #expect(meanFailed < 6, "mean failing canary units before the rejection: \(meanFailed)")
    }

    @Test("a unit that fails again under the same split says nothing new; under a wider one it counts with the rest of its odds")
    func unitCountsOncePerSplit() {
        var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil)
        evidence.startStep(last: false, at: Date(timeIntervalSince1970: 0))
        let stable = UnitEvent(unit: "u:a", canary: false, lower: 0, upper: 100)
        for _ in 0..<1000 { evidence.update(canary: VersionEvidence(), stable: VersionEvidence(failures: [stable]), at: Date(timeIntervalSince1970: 1)) }
        #expect(evidence.stableFailures == 1)
        // Widened to 5%: the unit is now on the canary with probability 4/99.
        let before = evidence.errorLogLR
        evidence.update(canary: VersionEvidence(failures: [UnitEvent(unit: "u:a", canary: true, lower: 0, upper: 500)]), stable: VersionEvidence(), at: Date(timeIntervalSince1970: 2))
        #expect(evidence.canaryFailures == 1)
        let p = 400.0 / 9900
        for (index, ratio) in evidence.errorRatios.enumerated() {
            #expect(abs(evidence.errorLogLR[index] - before[index] - (log(ratio) - log1p(p * (ratio - 1)))) < 1e-12)
        }
        // Once known to be on the canary, a prefix that keeps it there reveals nothing.
        evidence.update(canary: VersionEvidence(failures: [UnitEvent(unit: "u:a", canary: true, lower: 0, upper: 2500)]), stable: VersionEvidence(), at: Date(timeIntervalSince1970: 3))
        #expect(evidence.canaryFailures == 1)
    }

    @Test("errors and latency share one α; fresh error processes start at steps and every half hour, with weights summing to at most 1")
    func combination() {
        let start = Date(timeIntervalSince1970: 0)
        var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: 50)
        #expect(evidence.errorWeight == 0.95)
        #expect(abs(evidence.eValue - 1) < 1e-12, "every process starts at 1")
        evidence.startStep(last: false, at: start)
        #expect(evidence.segmentWeights == [0.45])
        evidence.errorLogLR = evidence.errorLogLR.map { _ in log(100) }
        // The first step's process at 100 is worth 0.45 × 100 + 0.55 (not started yet) = 45.55 of the segments,
        // and the errors are 0.8 × the onset test (still 1) + 0.2 × the segments.
        #expect(abs(evidence.segmentsLogE - log(45.55)) < 1e-9)
        #expect(abs(evidence.errorLogE - log(0.8 + 0.2 * 45.55)) < 1e-9)
        func segments(errors: Double) -> Double { log(((errors - 0.8) / 0.2 - 0.55) / 0.45) }
        evidence.errorLogLR = evidence.errorLogLR.map { _ in segments(errors: 100) }
        // Errors alone at 100 give 95.05: below 1/α, because latency holds a twentieth of the budget.
        #expect(abs(evidence.eValue - (0.95 * 100 + 0.05 * 1)) < 1e-9)
        #expect(!evidence.rejects)
        evidence.errorLogLR = evidence.errorLogLR.map { _ in segments(errors: 106) }
        #expect(evidence.rejects)
        // The onset test counts with its own weight: at 1/(0.8 × 0.95) = 131.6 it rejects alone.
        var onsetOnly = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: 50)
        onsetOnly.startStep(last: false, at: start)
        onsetOnly.onset?.logCarried = log(125)
        #expect(!onsetOnly.rejects)
        onsetOnly.onset?.logCarried = log(132)
        #expect(onsetOnly.rejects)
        // A later step's fresh process starts at 1, whatever came before, and counts with its own weight.
        evidence.errorLogLR = evidence.errorLogLR.map { _ in -20 }
        evidence.startStep(last: false, at: start + 600)
        let second = 0.25 * 6 / (Double.pi * Double.pi)
        #expect(evidence.segmentWeights == [0.45, second])
        evidence.errorLogLR = evidence.errorLogLR.map { $0 + log(1000) }
        #expect(abs(evidence.segmentsLogE - log(0.45 * exp(-20 + log(1000)) + second * 1000 + (0.55 - second))) < 1e-9)
        // Half an hour of data later, another; the last step has its own weight.
        evidence.update(canary: VersionEvidence(), stable: VersionEvidence(), at: start + 600 + 1800)
        evidence.startStep(last: true, at: start + 2500)
        #expect(evidence.segmentWeights == [0.45, second, 0.15 * 6 / (Double.pi * Double.pi), 0.15])
        // However many restarts, the weights never sum past 1.
        for halfHour in 1...300 {
            evidence.update(canary: VersionEvidence(), stable: VersionEvidence(), at: start + 2500 + Double(halfHour) * 1800)
        }
        #expect(evidence.segmentWeights.count > 300)
        #expect(evidence.segmentWeights.reduce(0, +) + evidence.droppedWeight <= 1)
        var latencyOnly = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: 50)
        latencyOnly.latencyLogLR = latencyOnly.latencyLogLR.map { _ in log(1982) }
        #expect(latencyOnly.rejects)
        #expect(CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil).errorWeight == 1)
    }

    @Test("the onset test: every bet is fair under the null, at any moment of a step; its wealth carries from step to step")
    func onsetBetsAreFair() {
        for p in [0.001, 0.01, 0.05, 0.25, 0.5, 0.8] {
            for elapsed in [0.0, 10, 300, 1200, 7200] {
                var canary = OnsetTest(), stable = OnsetTest()
                canary.startStep(at: 1000)
                stable.startStep(at: 1000)
                canary.add(p: p, canary: 1, stable: 0, at: 1000 + elapsed, fresh: true)
                stable.add(p: p, canary: 0, stable: 1, at: 1000 + elapsed, fresh: true)
                let canaryComponents = canary.logLR + canary.fresh!, stableComponents = stable.logLR + stable.fresh!
                #expect(canaryComponents.count == 8)
                for index in canaryComponents.indices {
                    // E[factor] under the null: the failure is the canary's with probability p.
                    let mean = p * exp(canaryComponents[index]) + (1 - p) * exp(stableComponents[index])
                    #expect(abs(mean - 1) < 1e-12, "p \(p), \(elapsed) s into the step, component \(index)")
                }
            }
        }
        var test = OnsetTest()
        test.startStep(at: 0)
        test.add(p: 0.01, canary: 1, stable: 0, at: 30)
        test.add(p: 0.01, canary: 0, stable: 1, at: 40)
        let afterFirstStep = test.logE
        #expect(afterFirstStep > log(10))
        test.startStep(at: 600)
        #expect(abs(test.logE - afterFirstStep) < 1e-12, "the wealth is carried")
        #expect(test.logLR.allSatisfy { $0 == 0 } && test.fresh!.allSatisfy { $0 == 0 }, "a fresh mixture starts")
        // A failure that was not its unit's first request leaves the first-request components alone.
        test.add(p: 0.05, canary: 1, stable: 0, at: 700)
        #expect(test.fresh!.allSatisfy { $0 == 0 } && test.logLR.allSatisfy { $0 > 0 })
    }

    /// At 1% with a stable failure every 30 s (a unit's failure now and then, not on its
    /// first request), two canary users whose first requests fail 35 and 40 minutes into
    /// the step are caught; the same failures on later requests are not (the time-faded
    /// bets have faded and stable's failures drained them).
    @Test("the onset test: first-request failures are judged apart from stable's steady failures, at any time in the step")
    func onsetFirstRequests() {
        func evidence(fresh: Bool) -> CanaryEvidence {
            var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil)
            let start = Date(timeIntervalSince1970: 0)
            evidence.startStep(last: false, at: start)
            var canary = VersionEvidence(), stable = VersionEvidence()
            for index in 0..<80 {
                stable.failures.append(UnitEvent(unit: "u:s\(index)", canary: false, lower: 0, upper: 100, at: 30 * Double(index) + 1))
            }
            for (index, at) in [2100.0, 2400].enumerated() {
                canary.failures.append(UnitEvent(unit: "u:c\(index)", canary: true, lower: 0, upper: 100, at: at, fresh: fresh))
            }
            evidence.update(canary: canary, stable: stable, at: start + 2460)
            return evidence
        }
        #expect(evidence(fresh: true).rejects)
        #expect(!evidence(fresh: false).rejects)
        #expect(evidence(fresh: false).eValue < 10)
    }

    @Test("a rollout stored before the first-request components keeps its onset formula until it ends")
    func storedBeforeFirstRequests() throws {
        var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil)
        evidence.startStep(last: false, at: Date(timeIntervalSince1970: 0))
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(evidence)) as! [String: Any]
        var onset = json["onset"] as! [String: Any]
        #expect(onset["fresh"] != nil)
        onset["fresh"] = nil
        json["onset"] = onset
        var stored = try JSONDecoder().decode(CanaryEvidence.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(stored.onset?.fresh == nil)
        let event = UnitEvent(unit: "u:a", canary: true, lower: 0, upper: 100, at: 10, fresh: true)
        stored.update(canary: VersionEvidence(failures: [event]), stable: VersionEvidence(), at: Date(timeIntervalSince1970: 20))
        let old = try #require(stored.onset)
        #expect(abs(old.logE - (old.logCarried + logMeanExp(old.logLR))) < 1e-12, "the old mixture: time-faded components only")
        stored.startStep(last: false, at: Date(timeIntervalSince1970: 600))
        #expect(stored.onset?.fresh == nil, "the formula does not change in the middle of a rollout")
    }

    @Test("first requests: one per unit and split; a new salt, range or weight starts again; past the limit, or by an older table, none is first")
    func firstRequests() throws {
        let release = ReleaseRef(number: 8, label: "v8")
        func split(_ percent: String, salt: String = "s", weight: Int = 0) throws -> TrafficSplit {
            TrafficSplit(service: "engine", revision: 1, stable: ReleaseRef(number: 7, label: "v7"),
                         canary: .init(release: release, salt: salt, range: try .parse(percent: percent)), nonAuthWeight: weight)
        }
        var first = FirstRequests(limit: 3)
        let five = FirstRequests.Split(try split("5"))
        let answers = ["u:a", "u:a", "u:b"].map { first.isFirst($0, under: five) }
        #expect(answers == [true, false, true])
        for other in [try split("25"), try split("5", salt: "t"), try split("5", weight: 500)] {
            let twice = [first.isFirst("u:a", under: .init(other)), first.isFirst("u:a", under: .init(other))]
            #expect(twice == [true, false])
        }
        let again = ["u:b", "u:c", "u:d", "u:e"].map { first.isFirst($0, under: five) }
        #expect(again == [true, true, true, false], "past the limit none is first")
        // A request routed by an older revision than one already seen is not first, and changes nothing.
        var ordered = FirstRequests()
        let quarter = FirstRequests.Split(try split("25"))
        let newer = ordered.isFirst("u:a", under: quarter, revision: 3)
        let older = ordered.isFirst("u:b", under: five, revision: 2)
        let after = ["u:a", "u:b"].map { ordered.isFirst($0, under: quarter, revision: 3) }
        #expect(newer && !older && after == [false, true])
    }

    @Test("the onset test: two canary users failing in a widening's first two minutes at 1% are caught; hours into the step it has stopped betting")
    func onsetBurst() {
        func evidence(offset: Double) -> CanaryEvidence {
            var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil)
            let start = Date(timeIntervalSince1970: 0)
            evidence.startStep(last: false, at: start)
            var canary = VersionEvidence(), stable = VersionEvidence()
            for (index, (onCanary, at)) in [(false, 20.0), (true, 30), (false, 50), (true, 90), (false, 110)].enumerated() {
                let event = UnitEvent(unit: "u:\(index)", canary: onCanary, lower: 0, upper: 100, at: offset + at)
                if onCanary { canary.failures.append(event) } else { stable.failures.append(event) }
            }
            evidence.update(canary: canary, stable: stable, at: start + offset + 120)
            return evidence
        }
        #expect(evidence(offset: 0).rejects)
        let late = evidence(offset: 7200)
        #expect(late.onset.map { abs($0.logE) < log(1.5) } == true, "two hours in, the onset test's bets are near even")
        #expect(late.errorLogE < evidence(offset: 0).errorLogE - log(3))
    }

    @Test("a rollout stored before the onset test keeps judging by the segments alone until it ends")
    func storedBeforeTheOnsetTest() throws {
        var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil)
        evidence.startStep(last: false, at: Date(timeIntervalSince1970: 0))
        evidence.errorLogLR = evidence.errorLogLR.map { _ in log(50) }
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(evidence)) as! [String: Any]
        #expect(json["onset"] != nil)
        json["onset"] = nil
        var stored = try JSONDecoder().decode(CanaryEvidence.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(stored.onset == nil)
        #expect(stored.errorLogE == stored.segmentsLogE)
        stored.startStep(last: false, at: Date(timeIntervalSince1970: 600))
        #expect(stored.onset == nil, "the formula does not change in the middle of a rollout")
        #expect(evidence.errorLogE != evidence.segmentsLogE)
    }

    @Test("latency: a canary slower only by less than the minimum effect is never evidence; +600 ms on half its requests is")
    func latency() {
        func histogram(_ ms: [Double]) -> VersionEvidence {
            var evidence = VersionEvidence()
            for value in ms { evidence.record(latencyMs: value, failure: nil) }
            return evidence
        }
        var random = SeededRandom(state: 3)
        func sample(_ count: Int, shift: Double = 0, slowShare: Double = 0, slow: Double = 0) -> [Double] {
            (0..<count).map { _ in 40 * exp(0.7 * random.normal()) + shift + (random.uniform() < slowShare ? slow : 0) }
        }
        var small = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: 50)
        var large = small
        for _ in 0..<200 {
            let stable = histogram(sample(900))
            small.update(canary: histogram(sample(100, shift: 20)), stable: stable, at: Date(timeIntervalSince1970: 0))
            large.update(canary: histogram(sample(100, slowShare: 0.5, slow: 600)), stable: stable, at: Date(timeIntervalSince1970: 0))
        }
        #expect(!small.rejects, "20 ms slower is under the 50 ms minimum effect (e \(small.eValue))")
        #expect(large.rejects)
    }

    @Test("100,000 failing canary units in one interval at 50% roll back on that tick, with numbers that encode")
    func hugeInterval() throws {
        var driver = RolloutDriver(policy: .standard, start: ISO8601DateFormatter().date(from: "2026-11-25T06:00:00Z")!)
        driver.tick()
        try driver.service.setCanaryTraffic(range: .parse(percent: "50"))
        driver.tick(commands: [HumanCommand(.setRange(try .parse(percent: "50"), nonAuthWeight: 5000), actor: "test")])
        #expect(driver.percent == 50)
        var canary = VersionEvidence(requests: 100_000)
        canary.failures = (0..<100_000).map { UnitEvent(unit: "a:\($0)", canary: true, lower: 0, upper: 5000) }
        driver.tick(.observed(IntervalObservation(from: driver.now, to: driver.now.addingTimeInterval(60),
                                                  canary: VersionObservation(requests: 100_000, errors: 100_000, evidence: canary),
                                                  stable: VersionObservation(requests: 100_000, errors: 0, evidence: VersionEvidence(requests: 100_000)))))
        #expect(driver.rollout?.phase == .rolledBack)
        let verdict = try #require(driver.rollout?.lastVerdict)
        let finite = verdict.numbers.values.allSatisfy { $0.isFinite }
        #expect(finite)
        _ = try JSONEncoder().encode(driver.rollout)
    }

    @Test("status wording: what a step waits for, and why it passed")
    func wording() {
        var driver = RolloutDriver(policy: .standard, start: ISO8601DateFormatter().date(from: "2026-11-25T06:00:00Z")!)
        driver.tick()
        driver.tick(driver.healthy(failingUnits: 30), advancing: 700)
        #expect(driver.rollout?.lastVerdict?.reason
                == "waiting for evidence: 30 of 118 failing units needed to rule out a canary 5× worse than stable (e-value 0.54 of 100)")
        #expect(driver.rollout?.holdReason
                == "step 1 of 5: waiting for evidence: 30 of 118 failing units needed to rule out a canary 5× worse than stable (e-value 0.54 of 100)")
        for _ in 0..<5 where driver.rollout?.step == 0 { driver.tick(driver.healthy(failingUnits: 100)) }
        #expect(driver.rollout?.step == 1, "the step advanced once its evidence and 50 canary requests were in")
        #expect(driver.log.flatMap(\.audit).contains(.init(action: "step", actor: Reconciler.actor,
                                                           detail: "canary Version 8(v 2.1.1) now at 5% of users (step 2 of 5; step 1 passed)",
                                                           refused: false, command: nil, movesTraffic: true)))
    }
}

@Suite("Custom metrics")
struct CustomMetricTests {
    static let coldStarts = RolloutPolicy.CustomMetric(name: "cold-starts", query: #"sum(rate(cold_starts_total{version="{{version}}"}[{{window}}]))"#,
                                                        direction: .lower, minEffect: 0.5)

    /// World: each interval both versions' values are drawn from one distribution (a
    /// heavy-tailed one: a normal whose scale is itself random), 200 intervals a
    /// rollout, 1,000 seeded rollouts. False rejections stay under α + 3σ.
    @Test("a metric on which the canary is no worse is rejected at most α of the time")
    func nullWorld() async {
        let rejected = await onOwnThread {
            (0..<1000).filter { seed in
                var random = SeededRandom(state: UInt64(seed) &+ 11)
                var evidence = CanaryEvidence(alpha: 0.01, beta: 0.01, detectRatio: 5, latencyEffectMs: nil, customMetrics: [Self.coldStarts])
                for interval in 0..<200 {
                    let scale = exp(random.normal())
                    let sample = CustomMetricSample(canary: 3 + scale * random.normal(), stable: 3 + scale * random.normal())
                    evidence.updateCustom([Self.coldStarts.name: sample], at: Date(timeIntervalSince1970: Double(interval) * 60))
                    if evidence.rejects { return true }
                }
                return false
            }.count
        }
        let bound: Double = 0.01 + 3 * (0.01 * 0.99 / 1000.0).squareRoot()
        #expect(Double(rejected) / 1000 <= bound, "\(rejected) of 1000 false rejections")
    }

    @Test("a canary worse beyond the minimum effect is rolled back, and the reason names the metric")
    func worseCanary() {
        var policy = RolloutPolicy.standard
        policy.analysis.metrics = [Self.coldStarts]
        var driver = RolloutDriver(policy: policy, start: ISO8601DateFormatter().date(from: "2026-11-25T06:00:00Z")!)
        driver.tick()
        var intervals = 0
        while driver.rollout?.phase.isActive == true, intervals < 80 {
            intervals += 1
            guard case .observed(var interval) = driver.observed(canaryRequests: 10, stableRequests: 990, canaryFailing: [], stableFailing: [])
            else { return }
            // Slightly worse than the minimum effect is not enough; 2 more cold starts a second is.
            interval.custom = [Self.coldStarts.name: CustomMetricSample(canary: intervals <= 5 ? 3.4 : 5, stable: 3)]
            driver.tick(.observed(interval))
        }
        #expect(driver.rollout?.phase == .rolledBack)
        #expect(intervals > 5 && intervals <= 45, "rolled back after \(intervals) intervals")
        #expect(driver.rollout?.lastVerdict?.reason.hasPrefix("canary worse than stable on cold-starts (higher by more than 0.50 in ") == true,
                "\(driver.rollout?.lastVerdict?.reason ?? "")")
        #expect(driver.rollout?.lastVerdict?.numbers["metric.cold-starts.canary"] == 5)
    }

    @Test("metrics in a policy file, and their mistakes")
    func policyFile() throws {
        let policy = try RolloutPolicy.parse("""
            analysis:
              metrics:
                - {name: cold-starts, query: 'sum(rate(cold_starts_total{version="{{version}}"}[{{window}}]))', minEffect: 0.5}
                - {name: cache-hits, query: 'cache_hit_ratio{version="{{version}}"}', direction: higher, minEffect: 0.02}
            """, file: "metrics.yaml")
        #expect(policy.analysis.metrics.map(\.name) == ["cold-starts", "cache-hits"])
        #expect(policy.analysis.metrics.map(\.direction) == [.lower, .higher])
        #expect(CanaryEvidence(policy: policy).customWeight == 0.025)
        let cases: [(String, String)] = [
            ("analysis:\n  metrics:\n    - {name: a, query: 'up'}\n", "m.yaml:3: analysis.metrics[0].query: must name the version with {{version}} or {{label}}, or canary and stable read the same series"),
            ("analysis:\n  metrics:\n    - {name: a, query: 'x{v=\"{{version}}\"}', direction: up}\n", "m.yaml:3: analysis.metrics[0].direction: expected lower or higher (which is better; got 'up')"),
            ("analysis:\n  metrics:\n    - {query: 'x{v=\"{{version}}\"}'}\n", "m.yaml:3: analysis.metrics[0]: needs name and query"),
        ]
        for (text, message) in cases {
            #expect(throws: GrayscaleError(message)) { try RolloutPolicy.parse(text, file: "m.yaml") }
        }
    }
}
