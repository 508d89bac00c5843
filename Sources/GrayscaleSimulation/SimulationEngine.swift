import Foundation
import GrayscaleCore

/// How a run decides who gets the new release.
public enum SimulationMode: String, Codable, Sendable, CaseIterable {
    /// Grayscale: the policy, the real reconciler and judges.
    case grayscale
    /// Everyone on the new release at once; a human rolls back `humanDelay` after the first error.
    case noGrayscale
    /// The policy's steps on a timer, no analysis; a human rolls back `humanDelay` after the first error.
    case fixedSteps
}

/// What happened in one run.
public struct SimulationRun: Codable, Sendable, Equatable {
    public var mode: SimulationMode
    /// The first new release's fate: rolledBack, promoted or inProgress.
    public var outcome: String
    /// Seconds from the first fault's start to the first failing verdict (grayscale only).
    public var detectedAfter: Int?
    /// Seconds from the first fault's start to the rollback.
    public var rolledBackAfter: Int?
    public var requests: Int
    /// Requests that failed on a bad release.
    public var requestsFailed: Int
    /// Distinct users that got at least one error from a bad release.
    public var usersHurt: Int
    /// Users routed to a bad release, times minutes.
    public var userMinutesExposed: Double
    /// A release without faults was rolled back.
    public var falseRollback: Bool
    /// Why the controller rolled back, in its own words (grayscale only).
    public var rollbackReason: String?
    /// Minute by minute, for the chart; not part of the JSON report.
    public var timeline: [TimelinePoint]

    enum CodingKeys: String, CodingKey {
        case mode, outcome, detectedAfter, rolledBackAfter, requests, requestsFailed, usersHurt, userMinutesExposed, falseRollback,
             rollbackReason
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mode = try container.decode(SimulationMode.self, forKey: .mode)
        outcome = try container.decode(String.self, forKey: .outcome)
        detectedAfter = try container.decodeIfPresent(Int.self, forKey: .detectedAfter)
        rolledBackAfter = try container.decodeIfPresent(Int.self, forKey: .rolledBackAfter)
        requests = try container.decode(Int.self, forKey: .requests)
        requestsFailed = try container.decode(Int.self, forKey: .requestsFailed)
        usersHurt = try container.decode(Int.self, forKey: .usersHurt)
        userMinutesExposed = try container.decode(Double.self, forKey: .userMinutesExposed)
        falseRollback = try container.decode(Bool.self, forKey: .falseRollback)
        rollbackReason = try container.decodeIfPresent(String.self, forKey: .rollbackReason)
        timeline = []
    }

    init(mode: SimulationMode, outcome: String, detectedAfter: Int?, rolledBackAfter: Int?, requests: Int, requestsFailed: Int,
         usersHurt: Int, userMinutesExposed: Double, falseRollback: Bool, rollbackReason: String?, timeline: [TimelinePoint]) {
        self.mode = mode
        self.outcome = outcome
        self.detectedAfter = detectedAfter
        self.rolledBackAfter = rolledBackAfter
        self.requests = requests
        self.requestsFailed = requestsFailed
        self.usersHurt = usersHurt
        self.userMinutesExposed = userMinutesExposed
        self.falseRollback = falseRollback
        self.rollbackReason = rollbackReason
        self.timeline = timeline
    }

    public struct TimelinePoint: Codable, Sendable, Equatable {
        public var at: Int
        public var canaryPercent: Double
        public var canaryErrorRate: Double
        public var stableErrorRate: Double
        public var verdict: String?
        public var event: String?
    }
}

/// A discrete-event simulation on a virtual clock: users request at random, the real
/// bucketing routes them, faults fail them, and (in grayscale mode) the real
/// reconciler and judges see the per-version metrics the proxy would report.
public struct SimulationEngine {
    let scenario: Scenario
    let mode: SimulationMode
    var random: SimulationRandom

    public static func run(_ scenario: Scenario, mode: SimulationMode, seed: UInt64? = nil) -> SimulationRun {
        var engine = SimulationEngine(scenario: scenario, mode: mode, random: SimulationRandom(seed: seed ?? scenario.seed))
        return engine.run()
    }

    // MARK: - The population

    struct User {
        var appId: String
        var traits: UInt64
        var noisy: Bool
    }

    mutating func makeUsers() -> (users: [User], traitBits: [String: UInt64]) {
        let traitNames = scenario.population.traits.keys.sorted()
        var bits: [String: UInt64] = [:]
        for (index, name) in traitNames.enumerated() { bits[name] = 1 << UInt64(index) }
        var users: [User] = []
        users.reserveCapacity(scenario.population.users)
        for index in 0..<scenario.population.users {
            var mask: UInt64 = 0
            for name in traitNames where random.uniform() < scenario.population.traits[name]! { mask |= bits[name]! }
            users.append(User(appId: "app-\(100_000 + index)", traits: mask, noisy: false))
        }
        for _ in 0..<scenario.noisyUsers {
            users[Int(random.next() % UInt64(users.count))].noisy = true
        }
        return (users, bits)
    }

    // MARK: - The run

    mutating func run() -> SimulationRun {
        let (users, traitBits) = makeUsers()
        let policy = scenario.policy
        let tick = max(1, policy.analysis.interval)
        let first = scenario.releases[0]
        let releasesByNumber = Dictionary(uniqueKeysWithValues: scenario.releases.map { ($0.number, $0) })

        var service = ServiceState(service: first.service)
        try! service.publish(ReleaseDraft(service: first.service, number: first.number - 1, label: "stable",
                                          upstream: "http://stable.simulated"), salt: random.salt(), at: scenario.start)
        var rollout: RolloutState?
        var publishedAt: [Int: Int] = [:]
        var nextRelease = 0, nextCommand = 0
        var observation: ObservationResult?
        var pendingSmoke: SmokeOutcome?

        // Baselines keep their own routing: everyone on one version, or a timer-driven prefix.
        var baselineCanary: (number: Int, salt: String, since: Int)?
        var humanRollbackAt: Int?

        var hurt = Set<Int>()
        var requestsTotal = 0, requestsFailed = 0
        var exposure = 0.0
        var firstFaultStart: Int?
        var detectedAt: Int?, rolledBackAt: Int?
        var firstOutcome = "inProgress"
        var falseRollback = false
        var rollbackReason: String?
        var timeline: [SimulationRun.TimelinePoint] = []

        var cachedSalt = ""
        var buckets = [Int](repeating: 0, count: users.count)

        var time = 0
        while time < scenario.duration {
            let now = scenario.start.addingTimeInterval(TimeInterval(time))
            var event: String?

            // Releases published now.
            while nextRelease < scenario.releases.count, scenario.releases[nextRelease].at <= time {
                let release = scenario.releases[nextRelease]
                try! service.publish(ReleaseDraft(service: release.service, number: release.number, label: release.label,
                                                  upstream: "http://\(release.number).simulated"), salt: random.salt(), at: now)
                publishedAt[release.number] = time
                if release.isBad, firstFaultStart == nil {
                    firstFaultStart = time + (release.faults.map(\.from).min() ?? 0)
                }
                if mode != .grayscale {
                    baselineCanary = (release.number, service.canary!.salt, time)
                }
                event = "published \(release.number)"
                nextRelease += 1
            }

            // Who decides.
            switch mode {
            case .grayscale:
                var commands: [HumanCommand] = []
                while nextCommand < scenario.commands.count, scenario.commands[nextCommand].at <= time {
                    let command = scenario.commands[nextCommand]
                    if let parsed = try? BotCommand.parse(command.text), let kind = parsed.action.humanCommand {
                        commands.append(HumanCommand(kind, actor: command.actor, text: command.text))
                    }
                    nextCommand += 1
                }
                let result = Reconciler.reconcile(ReconcileInput(policy: policy, service: service, rollout: rollout, observation: observation,
                                                                 smoke: pendingSmoke, commands: commands, now: now))
                try? service.apply(result.actions, at: now)
                rollout = result.rollout
                if let split = service.split { rollout?.knownSplitRevision = split.revision }
                pendingSmoke = nil
                for action in result.actions {
                    switch action {
                    case .runSmokeChecks(let release, _, let checks):
                        // Smoke checks pass unless the release fails for everyone from the start.
                        let broken = releasesByNumber[release.number]?.faults.contains { $0.target == .everyone && $0.from == 0 && $0.errorRate >= 0.5 } ?? false
                        pendingSmoke = SmokeOutcome(release: release.number, checks: checks.map {
                            .init(name: $0.name, passed: !broken, detail: broken ? "HTTP 500" : "HTTP 200")
                        })
                    case .recordVerdict(let verdict) where verdict.outcome == .fail:
                        if detectedAt == nil, let start = firstFaultStart, time >= start { detectedAt = time }
                    case .rollBack(let reason):
                        event = "rollback"
                        if rollbackReason == nil { rollbackReason = reason }
                        if rolledBackAt == nil, let start = firstFaultStart, time >= start { rolledBackAt = time }
                        if let number = rollout?.release.number, releasesByNumber[number]?.isBad == false { falseRollback = true }
                        if rollout?.release.number == first.number { firstOutcome = "rolledBack" }
                    case .promote:
                        event = "promote"
                        if rollout?.release.number == first.number { firstOutcome = "promoted" }
                    default:
                        break
                    }
                }
            case .noGrayscale, .fixedSteps:
                if let at = humanRollbackAt, time >= at, let canary = baselineCanary {
                    baselineCanary = nil
                    humanRollbackAt = nil
                    event = "rollback"
                    if rolledBackAt == nil, let start = firstFaultStart, time >= start { rolledBackAt = time }
                    if canary.number == first.number { firstOutcome = "rolledBack" }
                    _ = try? service.rollBack(at: now)
                } else if let canary = baselineCanary {
                    let width = baselineWidth(since: canary.since, at: time)
                    if width >= Bucket.count, mode == .fixedSteps, time - canary.since >= policy.steps.count * policy.stepMinimum {
                        baselineCanary = nil
                        event = "promote"
                        if canary.number == first.number { firstOutcome = "promoted" }
                        _ = try? service.finish(at: now)
                    }
                }
            }

            // The traffic of [time, time + tick) on the split now in force.
            let canaryNumber: Int?
            let canaryRange: CanaryRange
            let nonAuthWeight: Int
            let salt: String
            switch mode {
            case .grayscale:
                canaryNumber = service.split?.canary?.release.number
                canaryRange = service.split?.range ?? .empty
                nonAuthWeight = service.split?.nonAuthWeight ?? 0
                salt = service.split?.canary?.salt ?? ""
            case .noGrayscale, .fixedSteps:
                canaryNumber = baselineCanary?.number
                let width = baselineCanary.map { baselineWidth(since: $0.since, at: time) } ?? 0
                canaryRange = (try? CanaryRange.prefix(hundredths: width)) ?? .empty
                nonAuthWeight = width
                salt = baselineCanary?.salt ?? ""
            }
            let stableNumber = service.stable?.number ?? (first.number - 1)
            if salt != cachedSalt, !salt.isEmpty {
                for index in users.indices { buckets[index] = Bucket.of(appId: users[index].appId, salt: salt).value }
                cachedSalt = salt
            }

            let mean = scenario.traffic.requestsPerUserPerHour * Double(tick) / 3600 * shapeFactor(time)
            let limit = exp(-mean)
            var versions = [VersionTally(), VersionTally()]  // 0 stable, 1 canary
            let faultsByVersion = [activeFaults(stableNumber, publishedAt: publishedAt, time: time, releases: releasesByNumber),
                                   canaryNumber.map { activeFaults($0, publishedAt: publishedAt, time: time, releases: releasesByNumber) } ?? []]
            let bad = [releasesByNumber[stableNumber]?.isBad ?? false, canaryNumber.flatMap { releasesByNumber[$0]?.isBad } ?? false]
            let tickMinutes = Double(tick) / 60

            for index in users.indices {
                let onCanary = canaryNumber != nil && canaryRange.contains(Bucket(buckets[index]))
                let slot = onCanary ? 1 : 0
                if bad[slot] { exposure += tickMinutes }
                let requests = random.poisson(mean: mean, limit: limit)
                guard requests > 0 else { continue }
                let user = users[index]
                // Errors the release's faults cause (what "hurt" counts), and the background ones.
                let faultFailure = faultProbability(faultsByVersion[slot], traits: user.traits, traitBits: traitBits, anonymous: false)
                var faultErrors = 0, errors = 0
                for _ in 0..<requests {
                    if faultFailure >= 1 || (faultFailure > 0 && random.uniform() < faultFailure) {
                        faultErrors += 1
                    } else if user.noisy || random.uniform() < scenario.baseline.errorRate {
                        errors += 1
                    }
                }
                errors += faultErrors
                versions[slot].requests += requests
                if errors > 0 {
                    versions[slot].errors += errors
                    versions[slot].affected.append(user.appId)
                }
                if faultErrors > 0 {
                    hurt.insert(index)
                    requestsFailed += faultErrors
                }
            }
            // Requests without a token, drawn with the non-auth weight.
            let share = scenario.population.anonymousShare
            if share > 0 {
                let anonymous = random.poisson(mean * Double(users.count) * share / (1 - share))
                for _ in 0..<anonymous {
                    let slot = canaryNumber != nil && Int(random.next() % UInt64(Bucket.count)) < nonAuthWeight ? 1 : 0
                    versions[slot].requests += 1
                    let faultFailure = faultProbability(faultsByVersion[slot], traits: 0, traitBits: traitBits, anonymous: true)
                    let byFault = faultFailure > 0 && random.uniform() < faultFailure
                    if byFault || random.uniform() < scenario.baseline.errorRate {
                        versions[slot].errors += 1
                        versions[slot].anonymousErrors += 1
                        if byFault { requestsFailed += 1 }
                    }
                }
            }
            requestsTotal += versions[0].requests + versions[1].requests

            // A human notices the first error of a bad release (baselines only).
            if mode != .grayscale, humanRollbackAt == nil, baselineCanary != nil, !faultsByVersion[1].isEmpty, versions[1].errors > 0 {
                humanRollbackAt = time + tick + scenario.humanDelay
            }

            let latency = faultsByVersion.map { latencyModel($0) }
            observation = .observed(IntervalObservation(
                from: now, to: now.addingTimeInterval(TimeInterval(tick)),
                canary: versions[1].observation(p50: latency[1].p50, p99: latency[1].p99),
                stable: versions[0].observation(p50: latency[0].p50, p99: latency[0].p99)))

            timeline.append(.init(at: time, canaryPercent: Double(canaryNumber == nil ? 0 : canaryRange.widthHundredths) / 100,
                                  canaryErrorRate: versions[1].rate, stableErrorRate: versions[0].rate,
                                  verdict: mode == .grayscale && rollout?.lastVerdictAt == now ? rollout?.lastVerdict?.outcome.rawValue : nil,
                                  event: event))
            time += tick
        }

        return SimulationRun(
            mode: mode, outcome: firstOutcome,
            detectedAfter: zip(detectedAt, firstFaultStart).map { $0 - $1 },
            rolledBackAfter: zip(rolledBackAt, firstFaultStart).map { $0 - $1 },
            requests: requestsTotal, requestsFailed: requestsFailed, usersHurt: hurt.count,
            userMinutesExposed: (exposure * 10).rounded() / 10, falseRollback: falseRollback, rollbackReason: rollbackReason,
            timeline: timeline)
    }

    struct VersionTally {
        var requests = 0
        var errors = 0
        var anonymousErrors = 0
        var affected: [String] = []

        var rate: Double { requests == 0 ? 0 : (Double(errors) / Double(requests) * 1_000_000).rounded() / 1_000_000 }

        func observation(p50: Double, p99: Double) -> VersionObservation {
            VersionObservation(requests: requests, errors: errors, affectedUsers: affected, anonymousErrors: anonymousErrors,
                               p50Ms: requests > 0 ? p50 : nil, p99Ms: requests > 0 ? p99 : nil)
        }
    }

    /// The canary's width at `time` in the baselines: everything at once, or the policy's steps on a timer.
    func baselineWidth(since: Int, at time: Int) -> Int {
        switch mode {
        case .noGrayscale, .grayscale: return Bucket.count
        case .fixedSteps:
            let step = min(scenario.policy.steps.count - 1, (time - since) / max(1, scenario.policy.stepMinimum))
            return scenario.policy.steps[step]
        }
    }

    func activeFaults(_ number: Int, publishedAt: [Int: Int], time: Int, releases: [Int: ScenarioRelease]) -> [Fault] {
        guard let release = releases[number], let published = publishedAt[number] else { return [] }
        return release.faults.filter { time >= published + $0.from }
    }

    /// The chance a request fails because of the release's faults (the background error rate aside).
    func faultProbability(_ faults: [Fault], traits: UInt64, traitBits: [String: UInt64], anonymous: Bool) -> Double {
        var success = 1.0
        for fault in faults where fault.errorRate > 0 {
            switch fault.target {
            case .everyone: success *= 1 - fault.errorRate
            case .trait(let name): if traits & (traitBits[name] ?? 0) != 0 { success *= 1 - fault.errorRate }
            case .anonymous: if anonymous { success *= 1 - fault.errorRate }
            case .requests(let share): success *= 1 - fault.errorRate * share
            }
        }
        return 1 - success
    }

    /// p50 and p99 of a version: the baseline, shifted by the faults that slow enough of its requests.
    func latencyModel(_ faults: [Fault]) -> (p50: Double, p99: Double) {
        var p50 = scenario.baseline.p50Ms, p99 = scenario.baseline.p99Ms
        for fault in faults where fault.latencyMs > 0 {
            let share: Double
            switch fault.target {
            case .everyone: share = 1
            case .requests(let value): share = value
            case .trait(let name): share = scenario.population.traits[name] ?? 0
            case .anonymous: share = scenario.population.anonymousShare
            }
            if share >= 0.5 { p50 += fault.latencyMs }
            if share >= 0.01 { p99 += fault.latencyMs }
        }
        return (p50, p99)
    }

    /// Traffic through the day: flat, or busier during local business hours.
    func shapeFactor(_ time: Int) -> Double {
        guard scenario.traffic.shape == .businessHours else { return 1 }
        let local = Int(scenario.start.timeIntervalSince1970) + time + scenario.utcOffsetSeconds
        let hour = ((local % 86_400) + 86_400) % 86_400 / 3600
        return (9..<18).contains(hour) ? 1.6 : 0.4
    }
}

private func zip(_ a: Int?, _ b: Int?) -> (Int, Int)? {
    guard let a, let b else { return nil }
    return (a, b)
}
