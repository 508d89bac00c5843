import Foundation
import GrayscaleCore

/// How a platform scenario's services are released.
public enum PlatformMode: String, Codable, Sendable, CaseIterable {
    /// One platform release: one salt, the services advance together, the policy's `rollback`.
    case platform
    /// Each service on its own: its own salt and cohort, its own steps, rolled back alone.
    case separate
}

/// One service's fate in a platform run.
public struct PlatformServiceRun: Codable, Sendable, Equatable {
    public var service: String
    public var release: Int
    /// rolledBack, promoted or inProgress.
    public var outcome: String
    public var requests: Int
    /// Requests that failed because of a fault of the release or an incompatibility.
    public var requestsFailed: Int
    public var usersHurt: Int
    public var rollbackReason: String?
}

/// A platform scenario run in one mode: each service, and the platform as a whole.
public struct PlatformRun: Codable, Sendable, Equatable {
    public var mode: PlatformMode
    /// rolledBack when any service was rolled back, promoted when all were, else inProgress.
    public var outcome: String
    /// Distinct users hurt by any service.
    public var usersHurt: Int
    public var requestsFailed: Int
    /// Seconds from the first request a fault or an incompatibility failed to the first rollback.
    public var rolledBackAfter: Int?
    public var services: [PlatformServiceRun]
}

/// A platform release on a virtual clock, window by window: every service's users send
/// requests, the real `TrafficSplit` routes each by the real hash under its service's
/// split, a release's faults and the incompatibilities (a user on two new services at
/// once) fail them, and each service's randomized traffic becomes its evidence. The real
/// reconciler decides for each service, with the others as its `PlatformContext` in
/// platform mode, and the services are decided again in the same window when one moved,
/// as the controller does.
public struct PlatformSimulation {
    let scenario: PlatformScenario
    let mode: PlatformMode
    var random: SimulationRandom

    public static func run(_ scenario: PlatformScenario, mode: PlatformMode, seed: UInt64? = nil) -> PlatformRun {
        var simulation = PlatformSimulation(scenario: scenario, mode: mode, random: SimulationRandom(seed: seed ?? scenario.seed))
        return simulation.run()
    }

    mutating func run() -> PlatformRun {
        let services = scenario.services
        let names = services.map(\.name)
        let policy = scenario.policy
        let window = scenario.window
        let traitNames = scenario.traits.keys.sorted()
        var traitBits: [String: UInt64] = [:]
        for (index, name) in traitNames.enumerated() { traitBits[name] = 1 << UInt64(index) }
        let users = (0..<scenario.users).map { index -> (id: String, traits: UInt64) in
            var mask: UInt64 = 0
            for name in traitNames where random.uniform() < scenario.traits[name]! { mask |= traitBits[name]! }
            return ("app-\(100_000 + index)", mask)
        }
        let latencySigma = scenario.baseline.p99Ms > scenario.baseline.p50Ms && scenario.baseline.p50Ms > 0
            ? log(scenario.baseline.p99Ms / scenario.baseline.p50Ms) / 2.326 : 0

        // Every service's stable, then its canary: one salt for the platform, or one each.
        var states: [String: ServiceState] = [:]
        let platformSalt = random.salt()
        for service in services {
            var state = ServiceState(service: service.name)
            try! state.publish(ReleaseDraft(service: service.name, number: service.number - 1, label: "stable",
                                            upstream: "http://stable.simulated"), salt: random.salt(), at: scenario.start)
            let salt = mode == .platform ? platformSalt : random.salt()
            try! state.publish(ReleaseDraft(service: service.name, number: service.number, label: "\(scenario.label)-\(service.name)",
                                            upstream: "http://canary.simulated", platform: mode == .platform ? scenario.label : nil),
                               salt: salt, at: scenario.start)
            states[service.name] = state
        }
        var rollouts: [String: RolloutState] = [:]
        var observations: [String: ObservationResult] = [:]
        var faultStarted: [String: [Int?]] = Dictionary(uniqueKeysWithValues: services.map { ($0.name, $0.faults.map { $0.fromWidth == 0 ? $0.from : nil }) })
        var hurt: [String: Set<Int>] = [:], failed: [String: Int] = [:], requests: [String: Int] = [:]
        var reasons: [String: String] = [:]
        var firstFault: Int?, firstRollback: Int?
        var seen: [String: [Int]] = Dictionary(uniqueKeysWithValues: names.map { ($0, [Int](repeating: -1, count: users.count)) })
        let perUserPerSecond = scenario.requestsPerUserPerHour / 3600

        var time = 0
        while time < scenario.duration {
            let now = scenario.start.addingTimeInterval(TimeInterval(time))
            // Decide: each service once with its new evidence, then again (without) when one moved.
            var decided = Set<String>()
            for round in 0..<2 {
                var moved = false
                for service in services {
                    let name = service.name
                    guard let state = states[name] else { continue }
                    let announcement = policy.announce.flatMap { lead in
                        state.canary.map { Announcement(service: name, release: $0.number, at: scenario.start.addingTimeInterval(-Double(lead)),
                                                        actor: "scenario", notes: "") }
                    }
                    var transition = Reconciler.reconcile(ReconcileInput(
                        policy: policy, service: state, rollout: rollouts[name], observation: round == 0 ? observations[name] : nil,
                        announcement: announcement, platform: context(for: name, states: states, rollouts: rollouts), now: now))
                    var after = state
                    try? transition.apply(to: &after, at: now)
                    states[name] = after
                    rollouts[name] = transition.rollout
                    for change in transition.splitChanges {
                        switch change {
                        case .rollBack(let reason):
                            moved = true
                            if reasons[name] == nil { reasons[name] = reason }
                            if firstRollback == nil { firstRollback = time }
                        case .promote, .canary:
                            moved = true
                        case .rules, .mirror, .webSocketDrain:
                            break
                        }
                    }
                    decided.insert(name)
                }
                if round == 0 { observations = [:] }
                guard moved, mode == .platform else { break }
            }

            // Faults that wait for a width start when the canary reaches it.
            for service in services {
                let width = states[service.name]?.canary == nil ? 0 : states[service.name]?.split?.range.widthHundredths ?? 0
                for (index, fault) in service.faults.enumerated() where faultStarted[service.name]![index] == nil && fault.fromWidth > 0 {
                    if width >= fault.fromWidth { faultStarted[service.name]![index] = time }
                }
            }

            // The traffic of [time, time + window) to every service.
            let splits = states.mapValues(\.split)
            for service in services {
                let name = service.name
                guard let split = splits[name] ?? nil else { continue }
                let hasCanary = split.canary != nil
                let active = service.faults.enumerated().filter { faultStarted[name]![$0.offset].map { time >= $0 } ?? false }.map(\.element)
                var evidence = [VersionEvidence(), VersionEvidence()]
                var failedUnits: [Set<String>] = [[], []]
                var tally = [(requests: 0, errors: 0), (requests: 0, errors: 0)]
                let count = random.poisson(perUserPerSecond * Double(users.count * window))
                for request in 0..<count {
                    let index = Int(random.next() % UInt64(users.count))
                    let user = users[index]
                    let route = split.route(appId: user.id, requestedChannel: nil, anonymousDraw: Bucket(0))
                    let onCanary = route.target == .canary && hasCanary
                    var failure = onCanary ? faultProbability(active, traits: user.traits, traitBits: traitBits) : 0
                    // An incompatibility: this user is on the canaries of both services at once.
                    for incompatibility in scenario.incompatibilities where incompatibility.fails == name && onCanary {
                        let other = incompatibility.between.first { $0 != name }!
                        guard let otherSplit = splits[other] ?? nil, otherSplit.canary != nil,
                              otherSplit.route(appId: user.id, requestedChannel: nil, anonymousDraw: Bucket(0)).target == .canary else { continue }
                        failure = 1 - (1 - failure) * (1 - incompatibility.errorRate)
                    }
                    let byFault = failure > 0 && random.uniform() < failure
                    let failedRequest = byFault || random.uniform() < scenario.baseline.errorRate
                    let slot = onCanary ? 1 : 0
                    tally[slot].requests += 1
                    if failedRequest { tally[slot].errors += 1 }
                    if byFault {
                        if firstFault == nil { firstFault = time }
                        failed[name, default: 0] += 1
                        hurt[name, default: []].insert(index)
                    }
                    var unit = UnitEvent(unit: "u:\(user.id)", canary: onCanary, lower: split.range.lower, upper: split.range.upper,
                                         at: now.timeIntervalSince1970 + Double(window) * Double(request) / Double(max(count, 1)))
                    unit.fresh = seen[name]![index] != split.revision
                    seen[name]![index] = split.revision
                    let latency = scenario.baseline.p50Ms * exp(latencySigma * random.normal())
                    evidence[slot].record(latencyMs: latency, failure: failedRequest && failedUnits[slot].insert(unit.unit).inserted ? unit : nil)
                }
                requests[name, default: 0] += count
                observations[name] = .observed(IntervalObservation(
                    from: now, to: now.addingTimeInterval(TimeInterval(window)),
                    canary: VersionObservation(requests: tally[1].requests, errors: tally[1].errors, evidence: evidence[1]),
                    stable: VersionObservation(requests: tally[0].requests, errors: tally[0].errors, evidence: evidence[0])))
            }
            time += window
        }

        let results = services.map { service -> PlatformServiceRun in
            let status = states[service.name]?.release(number: service.number)?.status
            let outcome = status == .rolledBack ? "rolledBack" : status == .stable || status == .retired ? "promoted" : "inProgress"
            return PlatformServiceRun(service: service.name, release: service.number, outcome: outcome, requests: requests[service.name] ?? 0,
                                      requestsFailed: failed[service.name] ?? 0, usersHurt: hurt[service.name]?.count ?? 0,
                                      rollbackReason: reasons[service.name])
        }
        let outcome = results.contains { $0.outcome == "rolledBack" } ? "rolledBack"
            : results.allSatisfy { $0.outcome == "promoted" } ? "promoted" : "inProgress"
        return PlatformRun(mode: mode, outcome: outcome, usersHurt: hurt.values.reduce(into: Set<Int>()) { $0.formUnion($1) }.count,
                           requestsFailed: failed.values.reduce(0, +),
                           rolledBackAfter: zip(firstRollback, firstFault).map { max(0, $0 - $1) }, services: results)
    }

    /// The other services of the platform release as `name`'s tick sees them; nil when released separately.
    func context(for name: String, states: [String: ServiceState], rollouts: [String: RolloutState]) -> PlatformContext? {
        guard mode == .platform else { return nil }
        let peers = scenario.services.filter { $0.name != name }.compactMap { service -> PlatformPeer? in
            guard let release = states[service.name]?.release(number: service.number) else { return nil }
            let rollout = rollouts[service.name]
            return PlatformPeer(service: service.name, release: release.ref, status: release.status,
                                rollout: rollout?.release.number == service.number ? rollout : nil)
        }
        return PlatformContext(label: scenario.label, peers: peers)
    }

    func faultProbability(_ faults: [Fault], traits: UInt64, traitBits: [String: UInt64]) -> Double {
        var success = 1.0
        for fault in faults where fault.errorRate > 0 {
            switch fault.target {
            case .everyone: success *= 1 - fault.errorRate
            case .trait(let name): if traits & (traitBits[name] ?? 0) != 0 { success *= 1 - fault.errorRate }
            case .anonymous: break
            case .requests(let share): success *= 1 - fault.errorRate * share
            }
        }
        return 1 - success
    }
}

/// A platform scenario under both modes, with its expectations checked on the platform run.
public struct PlatformReport: Codable, Sendable, Equatable, StableJSON {
    public var scenario: String
    public var description: String
    public var seed: UInt64
    public var policy: String
    public var label: String
    public var platform: PlatformRun
    public var separate: PlatformRun
    public var expectations: [SimulationReport.ExpectationResult]
    public var passed: Bool

    public static func make(_ scenario: PlatformScenario, seed: UInt64? = nil) -> PlatformReport {
        let seed = seed ?? scenario.seed
        let platform = PlatformSimulation.run(scenario, mode: .platform, seed: seed)
        let results = scenario.expect.check(outcome: platform.outcome, usersHurt: platform.usersHurt, rolledBackAfter: platform.rolledBackAfter)
        return PlatformReport(scenario: scenario.name, description: scenario.description, seed: seed, policy: scenario.policySource,
                              label: scenario.label, platform: platform,
                              separate: PlatformSimulation.run(scenario, mode: .separate, seed: seed),
                              expectations: results, passed: results.allSatisfy(\.ok))
    }


    /// Per service and for the platform, one salt together beside each service on its own.
    public var text: String {
        func cell(_ value: String, _ width: Int = 34) -> String { value.padding(toLength: width, withPad: " ", startingAt: 0) }
        func describe(_ run: PlatformRun) -> String {
            "\(run.outcome), \(run.usersHurt) users hurt" + (run.rolledBackAfter.map { ", rollback \(formatDuration($0)) after the first" } ?? "")
        }
        var lines = ["\(scenario): platform release \(label) under policy \(policy)"]
        if !description.isEmpty { lines.append("  \(description)") }
        lines.append("  " + cell("", 14) + cell("one salt, together", 62) + "each on its own")
        lines.append("  " + cell("platform", 14) + cell(describe(platform), 62) + describe(separate))
        for (together, alone) in zip(platform.services, separate.services) {
            lines.append("  " + cell("\(together.service) \(together.release)", 14)
                + cell("\(together.outcome), \(together.usersHurt) hurt (\(together.requestsFailed) requests failed)", 62)
                + "\(alone.outcome), \(alone.usersHurt) hurt (\(alone.requestsFailed) requests failed)")
        }
        if let reason = platform.services.compactMap(\.rollbackReason).first { lines.append("  first rollback (one salt): \(reason)") }
        for result in expectations {
            lines.append("  expect \(result.name) \(result.expected): \(result.actual) \(result.ok ? "ok" : "FAILED")")
        }
        return lines.joined(separator: "\n")
    }
}

private func zip(_ a: Int?, _ b: Int?) -> (Int, Int)? {
    guard let a, let b else { return nil }
    return (a, b)
}
