import Foundation
import Testing
@testable import GrayscaleCore

/// A small seeded generator so every Monte Carlo run is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }

    mutating func poisson(_ mean: Double) -> Int {
        guard mean > 0 else { return 0 }
        if mean > 30 { return max(0, Int((mean + sqrt(mean) * normal()).rounded())) }
        let limit = exp(-mean)
        var product = uniform(), count = 0
        while product > limit {
            count += 1
            product *= uniform()
        }
        return count
    }

    mutating func normal() -> Double {
        sqrt(-2 * log(max(uniform(), 1e-300))) * cos(2 * .pi * uniform())
    }
}

/// Whole rollouts through the real reconciler, one tick a minute, users requesting at
/// random; `canaryFails(user, requests)` says how many of a canary user's requests fail.
struct SimulatedRollout: Sendable {
    var users: Int
    var requestsPerUserPerMinute: Double
    var baseErrorRate: Double
    var policy: RolloutPolicy = .standard
    /// Extra failures of a canary user, given the user index and their requests this minute.
    var canaryFailures: @Sendable (Int, Int, inout SplitMix64) -> Int = { _, _, _ in 0 }

    struct Result {
        var rolledBack: Bool
        /// Distinct canary users that received at least one error before the rollout ended.
        var hurtUsers: Int
        /// The canary's share of users (percent) when the rollout ended.
        var percentAtEnd: Double
    }

    func run(seed: UInt64) -> Result {
        var random = SplitMix64(state: seed)
        var driver = RolloutDriver(policy: policy, start: ISO8601DateFormatter().date(from: "2026-11-25T06:00:00Z")!)
        driver.tick()
        var hurt = Set<Int>()
        var percentAtEnd = driver.percent
        for _ in 0..<400 {
            guard driver.rollout?.phase.isActive == true else { break }
            percentAtEnd = driver.percent
            // Users 0..<cohort are on the canary: the range grows from bucket 0.
            let cohort = Int((Double(users) * driver.percent / 100).rounded())
            var canaryRequests = 0, canaryErrors = 0, affected: [String] = []
            for user in 0..<cohort {
                let requests = random.poisson(requestsPerUserPerMinute)
                guard requests > 0 else { continue }
                var errors = canaryFailures(user, requests, &random)
                for _ in errors..<requests where random.uniform() < baseErrorRate { errors += 1 }
                canaryRequests += requests
                canaryErrors += errors
                if errors > 0 {
                    affected.append("u\(user)")
                    hurt.insert(user)
                }
            }
            let stableUsers = users - cohort
            let stableRequests = random.poisson(requestsPerUserPerMinute * Double(stableUsers))
            let stableErrors = random.poisson(Double(stableRequests) * baseErrorRate)
            let stableAffected = Set((0..<stableErrors).map { _ in "u\(cohort + Int(random.next() % UInt64(max(stableUsers, 1))))" })
            driver.tick(.observed(IntervalObservation(
                from: driver.now, to: driver.now.addingTimeInterval(60),
                canary: VersionObservation(requests: canaryRequests, errors: canaryErrors, affectedUsers: affected),
                stable: VersionObservation(requests: stableRequests, errors: stableErrors, affectedUsers: Array(stableAffected)))))
        }
        return Result(rolledBack: driver.rollout?.phase == .rolledBack, hurtUsers: hurt.count, percentAtEnd: percentAtEnd)
    }
}


/// Runs CPU-heavy work on a thread of its own, so it does not hold the cooperative
/// pool (2 threads on 2 cores) that tests with sockets and async code need meanwhile.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: work()) }.start()
    }
}

@Suite("Sequential test, Monte Carlo")
struct SequentialTestMonteCarloTests {
    @Test("under the null, false rollbacks over 2,000 whole rollouts stay within α")
    func nullFalseRollbackRate() async {
        // A busy service: 10,000 users, 0.5% errors on both versions, judged every minute.
        let simulation = SimulatedRollout(users: 10_000, requestsPerUserPerMinute: 0.2, baseErrorRate: 0.005)
        let runs = 2000
        let rollbacks = await offThePool { (0..<runs).filter { simulation.run(seed: UInt64($0) &* 7919 &+ 1).rolledBack }.count }
        let rate = Double(rollbacks) / Double(runs)
        let alpha = RolloutPolicy.standard.analysis.errorRate.alpha
        // Monte Carlo slack: three standard errors of a rate α over 2,000 runs.
        let slack = 3 * sqrt(alpha * (1 - alpha) / Double(runs))
        print("null: \(rollbacks) false rollbacks in \(runs) rollouts (rate \(rate), bound \(alpha + slack))")
        #expect(rate <= alpha + slack)
    }

    @Test("the design document's incident: rolled back before more than 3 users, on average, got an error from the canary")
    func incident() async {
        // 2,590 users, 12 requests an hour each, 0.1% base errors; 7.5% of users (a name
        // like xx.xx) fail every request on the canary. The canary starts at 1%.
        var simulation = SimulatedRollout(users: 2590, requestsPerUserPerMinute: 0.2, baseErrorRate: 0.001)
        simulation.canaryFailures = { user, requests, _ in
            // Three users in every forty have the trait: 7.5%, spread over the bucket order.
            [0, 13, 26].contains(user % 40) ? requests : 0
        }
        let runs = 400
        let results = await offThePool { [simulation] in (0..<runs).map { simulation.run(seed: UInt64($0) &+ 99) } }
        let rolledBack = results.filter(\.rolledBack).count
        let meanHurt = Double(results.map(\.hurtUsers).reduce(0, +)) / Double(runs)
        print("incident: rolled back in \(rolledBack) of \(runs) runs; mean canary users hurt \(meanHurt); without grayscale 194")
        #expect(rolledBack == runs)
        #expect(meanHurt <= 3)
    }

    @Test("a milder regression (canary errors 3× stable's) is rolled back before the rollout passes 25%")
    func milderRegression() async {
        var simulation = SimulatedRollout(users: 10_000, requestsPerUserPerMinute: 0.2, baseErrorRate: 0.005)
        simulation.canaryFailures = { _, requests, random in
            // Twice the base rate again on top of it: 3× in all.
            (0..<requests).filter { _ in random.uniform() < 0.01 }.count
        }
        let runs = 200
        let results = await offThePool { [simulation] in (0..<runs).map { simulation.run(seed: UInt64($0) &+ 5000) } }
        let early = results.filter { $0.rolledBack && $0.percentAtEnd <= 25 }.count
        print("3× regression: rolled back at or before 25% in \(early) of \(runs) runs")
        #expect(early == runs)
    }
}
