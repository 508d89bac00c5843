// The store's latency on each engine, and how fast a split change reaches every replica.
//
//   grayscale-store-bench store SQLITE_FILE POSTGRES_URL [ITERATIONS]
//     A controller tick (read the snapshot, reconcile, commit under the lease token) and a
//     human command (the same, with a command id recorded for exactly-once), p50/p99.
//   grayscale-store-bench propagation POSTGRES_URL ADMIN_URL... [--rounds N]
//     Writes a split change and times until every replica's routing long poll answers
//     with it (each replica's proxy swaps its table in the same step). Run through
//     Benchmarks/replicas.sh, which starts PostgreSQL and three `serve` replicas.
import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleStore

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.down)))]
}

func milliseconds(_ start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
}

func report(_ name: String, _ values: [Double]) {
    let label = name.padding(toLength: 8, withPad: " ", startingAt: 0)
    print("  \(label)" + String(format: " p50 %7.3f ms  p99 %7.3f ms  (n=%d)", percentile(values, 0.5), percentile(values, 0.99), values.count))
}

func storeBenchmark(_ location: String, iterations: Int) throws {
    let database = try GrayscaleDatabase.open(path: location)
    let who = Attribution(actor: "bench")
    let start = Date()
    try database.publish(ReleaseDraft(service: "engine", number: 7, label: "v7", upstream: "http://127.0.0.1:9007"), salt: "s7", by: who, at: start)
    try database.publish(ReleaseDraft(service: "engine", number: 8, label: "v8", upstream: "http://127.0.0.1:9008"), salt: "s8", by: who, at: start)
    guard case .leading(let lease) = try database.claimLease(holder: "bench", period: 3600, at: start) else { throw GrayscaleError("no lease") }
    var ticks: [Double] = [], commands: [Double] = []
    for index in 0..<(iterations + 20) {
        let now = start.addingTimeInterval(Double(index))
        let tickStart = ContinuousClock.now
        let snapshot = try database.controllerSnapshot("engine")
        let transition = Reconciler.reconcile(ReconcileInput(policy: .standard, service: snapshot.service, rollout: snapshot.rollout, commands: [], now: now))
        try database.commitTick(snapshot, transition, fence: lease.token, notifyChannel: "#bench", at: now)
        let tick = milliseconds(tickStart)

        let commandStart = ContinuousClock.now
        let command = HumanCommand(index % 2 == 0 ? .pause : .resume, actor: "bench", id: "bench-\(index)")
        let before = try database.controllerSnapshot("engine")
        let decided = Reconciler.reconcile(ReconcileInput(policy: .standard, service: before.service, rollout: before.rollout, commands: [command], now: now))
        try database.commitTick(before, decided, command: command, fence: lease.token, notifyChannel: "#bench", at: now)
        if index >= 20 {  // the first rounds warm the connections up
            ticks.append(tick)
            commands.append(milliseconds(commandStart))
        }
    }
    print("\(database.path):")
    report("tick", ticks)
    report("command", commands)
    database.close()
}

func routingVersion(_ client: CurlHTTPClient, _ admin: String, after: String?) async throws -> String {
    let url = admin + "/api/v1/routing" + (after.map { "?after=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" } ?? "")
    let response = try await client.send(OutboundRequest(url: url, timeout: 30))
    guard response.status == 200, let object = try JSONSerialization.jsonObject(with: response.body) as? [String: Any],
          let version = object["version"] as? String else { throw GrayscaleError("GET \(url): HTTP \(response.status)") }
    return version
}

func propagationBenchmark(_ location: String, admins: [String], rounds: Int) async throws {
    let database = try GrayscaleDatabase.open(path: location)
    let who = Attribution(actor: "bench")
    // A service with a stable release only: no controller changes it but this benchmark.
    if (try? database.serviceState("fleet")) == nil {
        try database.publish(ReleaseDraft(service: "fleet", number: 1, label: "v1", upstream: "http://127.0.0.1:9001"), salt: "s1", by: who, at: Date())
    }
    let client = CurlHTTPClient()
    var slowest: [Double] = [], each: [Double] = []
    for round in 0..<rounds {
        let versions = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (index, admin) in admins.enumerated() { group.addTask { (index, try await routingVersion(client, admin, after: nil)) } }
            return try await group.reduce(into: [Int: String]()) { $0[$1.0] = $1.1 }
        }
        let written = ContinuousClock.now
        let times = try await withThrowingTaskGroup(of: Double.self) { group in
            for (index, admin) in admins.enumerated() {
                group.addTask {
                    _ = try await routingVersion(client, admin, after: versions[index]!)
                    return milliseconds(written)
                }
            }
            // The long polls are waiting; change the split.
            try await Task.sleep(for: .milliseconds(150))
            let changeStart = ContinuousClock.now
            try database.setRules("fleet", allowList: ["bench-user-\(round)"], by: who, at: Date())
            let offset = milliseconds(written) - milliseconds(changeStart)
            return try await group.reduce(into: [Double]()) { $0.append($1 - offset) }
        }
        slowest.append(times.max()!)
        each += times
    }
    print("split change to every one of \(admins.count) replicas (\(database.path)):")
    report("slowest", slowest)
    report("each", each)
    database.close()
}

let arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case "store" where arguments.count >= 3:
    let iterations = arguments.count > 3 ? Int(arguments[3]) ?? 500 : 500
    try storeBenchmark(arguments[1], iterations: iterations)
    try storeBenchmark(arguments[2], iterations: iterations)
case "propagation" where arguments.count >= 3:
    var admins = Array(arguments.dropFirst(2))
    var rounds = 50
    if let flag = admins.firstIndex(of: "--rounds"), flag + 1 < admins.count {
        rounds = Int(admins[flag + 1]) ?? 50
        admins.removeSubrange(flag...(flag + 1))
    }
    try await propagationBenchmark(arguments[1], admins: admins, rounds: rounds)
default:
    print("usage: grayscale-store-bench store SQLITE_FILE POSTGRES_URL [ITERATIONS] | propagation POSTGRES_URL ADMIN_URL... [--rounds N]")
    exit(2)
}
