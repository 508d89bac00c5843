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
    /// Seconds from the start to the first fault of a bad release; nil when none began.
    public var faultStartedAt: Int?
    /// Why the controller rolled back, in its own words (grayscale only).
    public var rollbackReason: String?
    /// Minute by minute, for the chart; not part of the JSON report.
    public var timeline: [TimelinePoint]

    enum CodingKeys: String, CodingKey {
        case mode, outcome, detectedAfter, rolledBackAfter, requests, requestsFailed, usersHurt, userMinutesExposed, falseRollback, faultStartedAt,
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
        faultStartedAt = try container.decodeIfPresent(Int.self, forKey: .faultStartedAt)
        rollbackReason = try container.decodeIfPresent(String.self, forKey: .rollbackReason)
        timeline = []
    }

    init(mode: SimulationMode, outcome: String, detectedAfter: Int?, rolledBackAfter: Int?, requests: Int, requestsFailed: Int,
         usersHurt: Int, userMinutesExposed: Double, falseRollback: Bool, faultStartedAt: Int?, rollbackReason: String?, timeline: [TimelinePoint]) {
        self.faultStartedAt = faultStartedAt
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

/// A simulation on a virtual clock, request by request: clients of every kind send
/// requests at their own rate, the real `TrafficSplit` routes them by the real hash,
/// faults and background errors fail them, latency is drawn with noise and heavy tails,
/// and each window's randomized traffic becomes the same `VersionEvidence` the proxy
/// hands the controller. In grayscale mode the real reconciler and judge decide; the
/// platform takes a committed split after its apply lag (a rollback after its delay).
public struct SimulationEngine {
    let scenario: Scenario
    let mode: SimulationMode
    var random: SimulationRandom

    public static func run(_ scenario: Scenario, mode: SimulationMode, seed: UInt64? = nil) -> SimulationRun {
        var engine = SimulationEngine(scenario: scenario, mode: mode, random: SimulationRandom(seed: seed ?? scenario.seed))
        return engine.run()
    }

    // MARK: - The population

    struct Client {
        enum Kind { case user, anonymous, allowListed }
        var id: String
        var kind: Kind
        var traits: UInt64
        /// Fails every request on every version (a broken client).
        var broken: Bool
        var errorRate: Double
    }

    /// Everyone who sends requests, and the cumulative rates (per second) to draw a sender from.
    mutating func makeClients() -> (clients: [Client], cumulative: [Double], traitBits: [String: UInt64]) {
        let population = scenario.population
        let traitNames = population.traits.keys.sorted()
        var bits: [String: UInt64] = [:]
        for (index, name) in traitNames.enumerated() { bits[name] = 1 << UInt64(index) }
        var clients: [Client] = [], rates: [Double] = []
        let perUser = scenario.traffic.requestsPerUserPerHour / 3600
        let sigma = population.activitySigma
        // Log-normal activity with mean 1: exp(σZ − σ²/2).
        func activity() -> Double { sigma == 0 ? 1 : exp(sigma * random.normal() - sigma * sigma / 2) }
        for index in 0..<population.users {
            var mask: UInt64 = 0
            for name in traitNames where random.uniform() < population.traits[name]! { mask |= bits[name]! }
            clients.append(Client(id: "app-\(100_000 + index)", kind: .user, traits: mask, broken: false, errorRate: 0))
            rates.append(perUser * activity())
        }
        for _ in 0..<scenario.noisyUsers { clients[Int(random.next() % UInt64(population.users))].broken = true }
        if population.anonymousShare > 0 {
            let total = perUser * Double(population.users) * population.anonymousShare / (1 - population.anonymousShare)
            let each = total / Double(population.anonymousClients)
            for index in 0..<population.anonymousClients {
                clients.append(Client(id: String(format: "%016llx", random.next()), kind: .anonymous, traits: 0,
                                      broken: index < population.brokenAnonymousClients, errorRate: 0))
                rates.append(each * activity())
            }
        }
        if population.allowListedRequestsPerHour > 0 {
            for appId in scenario.policy.allowList {
                clients.append(Client(id: appId, kind: .allowListed, traits: 0, broken: false, errorRate: population.allowListedErrorRate))
                rates.append(population.allowListedRequestsPerHour / 3600)
            }
        }
        var cumulative: [Double] = [], sum = 0.0
        for rate in rates {
            sum += rate
            cumulative.append(sum)
        }
        return (clients, cumulative, bits)
    }

    // MARK: - The run

    mutating func run() -> SimulationRun {
        let (clients, cumulative, traitBits) = makeClients()
        let totalRate = cumulative.last ?? 0
        let policy = scenario.policy
        let window = scenario.window
        let first = scenario.releases[0]
        let releasesByNumber = Dictionary(uniqueKeysWithValues: scenario.releases.map { ($0.number, $0) })
        let latencySigma = scenario.baseline.p99Ms > scenario.baseline.p50Ms && scenario.baseline.p50Ms > 0
            ? log(scenario.baseline.p99Ms / scenario.baseline.p50Ms) / 2.326 : 0

        var service = ServiceState(service: first.service)
        try! service.publish(ReleaseDraft(service: first.service, number: first.number - 1, label: "stable",
                                          upstream: "http://stable.simulated"), salt: random.salt(), at: scenario.start)
        var rollout: RolloutState?
        var publishedAt: [Int: Int] = [:]
        /// When a version first served traffic (its instances were cold then).
        var firstServed: [Int: Int] = [first.number - 1: -1_000_000]
        /// When each fault started (faults that wait for a width start later).
        var faultStarted: [Int: [Int?]] = [:]
        var nextRelease = 0, nextCommand = 0
        var observation: ObservationResult?

        // What the platform routes by: committed splits take effect after the apply lag.
        var effective = service.split
        var pendingSplits: [(at: Int, split: TrafficSplit?)] = []
        // Baselines keep their own routing: everyone on one version, or a timer-driven prefix.
        var baselineCanary: (number: Int, salt: String, since: Int)?
        var humanRollbackAt: Int?

        var hurt = Set<Int>()
        // Each client's first request under a split is "fresh" (`UnitEvent.fresh`), as the proxy marks it.
        var seenUnder = [Int](repeating: -1, count: clients.count)
        var splitGeneration = 0, generationSplit: FirstRequests.Split?
        var requestsTotal = 0, requestsFailed = 0
        var exposure = 0.0
        var firstFaultStart: Int?
        var detectedAt: Int?, rolledBackAt: Int?
        var firstOutcome = "inProgress"
        var falseRollback = false
        var rollbackReason: String?
        var timeline: [SimulationRun.TimelinePoint] = []
        var pendingEvent: String?

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
                faultStarted[release.number] = release.faults.map { $0.fromWidth == 0 ? time + $0.from : nil }
                if mode != .grayscale { baselineCanary = (release.number, service.canary!.salt, time) }
                event = "published \(release.number)"
                nextRelease += 1
                pendingSplits.append((time, service.split))
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
                // Smoke checks run while the rollout verifies; they pass unless the release fails for everyone from the start.
                var smoke: SmokeOutcome?
                if rollout?.phase == .verifying, let number = rollout?.release.number {
                    let broken = releasesByNumber[number]?.faults.contains { $0.target == .everyone && $0.from == 0 && $0.fromWidth == 0 && $0.errorRate >= 0.5 } ?? false
                    smoke = SmokeOutcome(release: number, checks: policy.smokeChecks.map {
                        .init(name: $0.name, passed: !broken, detail: broken ? "HTTP 500" : "HTTP 200")
                    })
                }
                // A scenario replays what happened once a release started: under a policy with `announce`, each was announced in time.
                let announcement = policy.announce.flatMap { lead in
                    service.canary.map { Announcement(service: service.service, release: $0.number,
                                                      at: scenario.start.addingTimeInterval(-Double(lead)), actor: "scenario", notes: "") }
                }
                var transition = Reconciler.reconcile(ReconcileInput(policy: policy, service: service, rollout: rollout, observation: observation,
                                                                     smoke: smoke, commands: commands, announcement: announcement, now: now))
                let before = service.split
                try? transition.apply(to: &service, at: now)
                rollout = transition.rollout
                var delay = scenario.platform.applyLag
                if transition.verdict?.outcome == .fail, detectedAt == nil, let start = firstFaultStart, time >= start { detectedAt = time }
                for change in transition.splitChanges {
                    switch change {
                    case .rollBack(let reason):
                        event = "rollback"
                        delay = scenario.platform.rollbackDelay
                        if rollbackReason == nil { rollbackReason = reason }
                        if rolledBackAt == nil, let start = firstFaultStart, time >= start { rolledBackAt = time }
                        if let number = rollout?.release.number, releasesByNumber[number]?.isBad == false { falseRollback = true }
                        if rollout?.release.number == first.number { firstOutcome = "rolledBack" }
                    case .promote:
                        event = "promote"
                        if rollout?.release.number == first.number { firstOutcome = "promoted" }
                    case .canary, .rules, .mirror, .webSocketDrain:
                        break
                    }
                }
                if service.split != before { pendingSplits.append((time + delay, service.split)) }
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
                effective = service.split
                if let canary = baselineCanary, effective?.canary != nil {
                    let width = baselineWidth(since: canary.since, at: time)
                    effective?.canary?.range = (try? CanaryRange.prefix(hundredths: width)) ?? .empty
                    effective?.nonAuthWeight = width
                }
                pendingSplits.removeAll()
            }
            while let next = pendingSplits.first, next.at <= time {
                effective = next.split
                pendingSplits.removeFirst()
            }

            // The traffic of [time, time + window) on the split the platform shows.
            let split = effective
            let canaryNumber = split?.canary?.release.number
            let stableNumber = split?.stable.number ?? (first.number - 1)
            let width = canaryNumber == nil ? 0 : split?.range.widthHundredths ?? 0
            for number in [stableNumber] + (canaryNumber.map { [$0] } ?? []) where firstServed[number] == nil { firstServed[number] = time }
            for (number, starts) in faultStarted {
                let release = releasesByNumber[number]!
                for (index, fault) in release.faults.enumerated() where starts[index] == nil && fault.fromWidth > 0 {
                    if canaryNumber == number, width >= fault.fromWidth { faultStarted[number]![index] = time }
                }
            }
            if firstFaultStart == nil {
                firstFaultStart = faultStarted.filter { releasesByNumber[$0.key]!.isBad }.values.flatMap { $0.compactMap { $0 } }.min()
            }
            func faults(_ number: Int) -> [Fault] {
                guard let release = releasesByNumber[number], let starts = faultStarted[number] else { return [] }
                return release.faults.enumerated().filter { starts[$0.offset].map { time >= $0 } ?? false }.map(\.element)
            }
            let faultsByVersion = [faults(stableNumber), canaryNumber.map(faults) ?? []]
            let numbers = [stableNumber, canaryNumber ?? stableNumber]

            var evidence = [VersionEvidence(), VersionEvidence()]
            var failedUnits: [Set<String>] = [[], []]
            var tally = [VersionTally(), VersionTally()]
            var mirrored = MirrorPairs()
            let requests = random.poisson(totalRate * Double(window) * shapeFactor(time))
            let salt = split?.canary?.salt ?? ""
            let splitKey = split.map(FirstRequests.Split.init)
            if splitKey != generationSplit {
                generationSplit = splitKey
                splitGeneration += 1
            }
            for request in 0..<requests {
                let index = pick(cumulative)
                let client = clients[index]
                let appId: String? = client.kind == .anonymous ? nil : client.id
                let draw = client.kind == .anonymous ? Bucket.of(appId: "a:\(client.id)", salt: salt) : Bucket(0)
                let route = split?.route(appId: appId, requestedChannel: nil, anonymousDraw: draw)
                    ?? Route(target: .stable, reason: .noCanary, bucket: nil)
                let slot = route.target == .canary && canaryNumber != nil ? 1 : 0
                /// How version `slot` answers this client's request (a routed one, or a mirrored copy).
                func answer(_ slot: Int) -> (byFault: Bool, failed: Bool, latency: Double) {
                    let faultFailure = faultProbability(faultsByVersion[slot], traits: client.traits, traitBits: traitBits,
                                                        anonymous: client.kind == .anonymous)
                    let byFault = faultFailure > 0 && random.uniform() < faultFailure
                    let failed = byFault || client.broken || random.uniform() < max(client.errorRate, scenario.baseline.errorRate)
                    return (byFault, failed, latencyMs(faultsByVersion[slot], sigma: latencySigma,
                                                       sinceFirstServed: time - (firstServed[numbers[slot]] ?? time)))
                }
                let (byFault, failed, latency) = answer(slot)
                tally[slot].requests += 1
                if failed { tally[slot].errors += 1 }
                if byFault {
                    requestsFailed += 1
                    if client.kind == .user { hurt.insert(index) }
                }
                var unit: UnitEvent?
                switch route.reason {
                case .inRange, .outOfRange:
                    unit = UnitEvent(unit: "u:\(client.id)", canary: slot == 1, lower: split!.range.lower, upper: split!.range.upper,
                                     at: now.timeIntervalSince1970 + Double(window) * Double(request) / Double(requests))
                case .anonymousWeight:
                    unit = UnitEvent(unit: "a:\(client.id)", canary: slot == 1, lower: 0, upper: split!.nonAuthWeight,
                                     at: now.timeIntervalSince1970 + Double(window) * Double(request) / Double(requests))
                default:
                    unit = nil
                }
                if var unit {
                    unit.fresh = seenUnder[index] != splitGeneration
                    seenUnder[index] = splitGeneration
                    evidence[slot].record(latencyMs: latency, failure: failed && failedUnits[slot].insert(unit.unit).inserted ? unit : nil)
                }
                // A mirror phase: a safe request stable answered is sent again to the canary, whose answer nobody gets.
                if slot == 0, canaryNumber != nil, let share = split?.canary?.mirror, random.uniform() < scenario.traffic.safeShare,
                   random.uniform() * Double(Bucket.count) < Double(share) {
                    let copy = answer(1)
                    mirrored.record(stableFailed: failed, canaryFailed: copy.failed, stableMs: latency, canaryMs: copy.latency)
                }
            }
            if !mirrored.isEmpty { evidence[1].mirror = mirrored }
            requestsTotal += requests
            if canaryNumber != nil, releasesByNumber[canaryNumber!]?.isBad == true {
                exposure += Double(clients.count) * Double(width) / Double(Bucket.count) * Double(window) / 60
            }

            // A human notices the first error of a bad release (baselines only).
            if mode != .grayscale, humanRollbackAt == nil, baselineCanary != nil, !faultsByVersion[1].isEmpty, tally[1].errors > 0 {
                humanRollbackAt = time + window + scenario.humanDelay
            }

            observation = .observed(IntervalObservation(
                from: now, to: now.addingTimeInterval(TimeInterval(window)),
                canary: VersionObservation(requests: tally[1].requests, errors: tally[1].errors, evidence: evidence[1],
                                           p50Ms: evidence[1].percentileMs(0.5), p99Ms: evidence[1].percentileMs(0.99)),
                stable: VersionObservation(requests: tally[0].requests, errors: tally[0].errors, evidence: evidence[0],
                                           p50Ms: evidence[0].percentileMs(0.5), p99Ms: evidence[0].percentileMs(0.99))))

            // The chart: one point a minute (or a window, when windows are longer).
            pendingEvent = event ?? pendingEvent
            if time % max(60, window) == 0 || time + window >= scenario.duration {
                timeline.append(.init(at: time, canaryPercent: Double(width) / 100,
                                      canaryErrorRate: tally[1].rate, stableErrorRate: tally[0].rate,
                                      verdict: mode == .grayscale ? rollout?.lastVerdict?.outcome.rawValue : nil, event: pendingEvent))
                pendingEvent = nil
            }
            time += window
        }

        return SimulationRun(
            mode: mode, outcome: firstOutcome,
            detectedAfter: zip(detectedAt, firstFaultStart).map { $0 - $1 },
            rolledBackAfter: zip(rolledBackAt, firstFaultStart).map { $0 - $1 },
            requests: requestsTotal, requestsFailed: requestsFailed, usersHurt: hurt.count,
            userMinutesExposed: (exposure * 10).rounded() / 10, falseRollback: falseRollback, faultStartedAt: firstFaultStart,
            rollbackReason: rollbackReason,
            timeline: timeline)
    }

    /// A sender, in proportion to its rate.
    mutating func pick(_ cumulative: [Double]) -> Int {
        let target = random.uniform() * cumulative.last!
        var low = 0, high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] > target { high = mid } else { low = mid + 1 }
        }
        return low
    }

    struct VersionTally {
        var requests = 0
        var errors = 0

        var rate: Double { requests == 0 ? 0 : (Double(errors) / Double(requests) * 1_000_000).rounded() / 1_000_000 }
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

    /// One request's latency: log-normal noise through the baseline's p50 and p99, a cold
    /// start that fades, and the faults' slowdowns (a `requests` fault slows that share).
    mutating func latencyMs(_ faults: [Fault], sigma: Double, sinceFirstServed: Int) -> Double {
        var ms = scenario.baseline.p50Ms * exp(sigma * random.normal())
        let cold = scenario.baseline.coldStartSeconds
        if cold > 0, sinceFirstServed < cold {
            ms += scenario.baseline.coldStartMs * Double(cold - sinceFirstServed) / Double(cold)
        }
        for fault in faults where fault.latencyMs > 0 {
            switch fault.target {
            case .requests(let share): if random.uniform() < share { ms += fault.latencyMs }
            default: ms += fault.latencyMs
            }
        }
        return ms
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
