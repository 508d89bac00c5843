import Foundation
import GrayscaleCore
import GrayscaleEdges
import Yams

/// A platform release to replay (issue 16 point 5): several services' canaries published
/// together, the faults of each, and incompatibilities that only show when a user is on
/// two new services at once. A scenario file is one when it has `platformRelease:`.
public struct PlatformScenario: Sendable {
    public var name: String
    public var description: String
    public var seed: UInt64
    public var start: Date
    public var duration: Int
    public var users: Int
    public var traits: [String: Double]
    /// Requests per user per hour to each service.
    public var requestsPerUserPerHour: Double
    public var baseline: Scenario.Baseline
    public var policy: RolloutPolicy
    public var policySource: String
    public var window: Int
    public var label: String
    public var services: [Service]
    public var incompatibilities: [Incompatibility]
    public var expect: Scenario.Expectations

    public struct Service: Sendable {
        public var name: String
        /// The canary's release number; stable is the one before.
        public var number: Int
        public var faults: [Fault]
    }

    /// Requests to `fails` from a user on the canaries of both `between` services fail at `errorRate`.
    public struct Incompatibility: Sendable {
        public var between: [String]
        public var fails: String
        public var errorRate: Double
    }

    /// True when the file is a platform scenario (it has a top-level `platformRelease`).
    public static func isPlatform(path: String) -> Bool {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { $0.hasPrefix("platformRelease:") }
    }

    /// `policy:` paths are relative to `workingDirectory` (the process's working directory when nil).
    /// `policy:` paths are relative to `workingDirectory` (the process's working directory when nil).
    public static func load(path: String, policyOverride: String? = nil, workingDirectory: String? = nil) throws(GrayscaleError) -> PlatformScenario {
        try parse(try Scenario.readText(path), file: path, policyOverride: policyOverride, workingDirectory: workingDirectory)
    }

    public static func parse(_ text: String, file: String, policyOverride: String? = nil,
                             workingDirectory: String? = nil) throws(GrayscaleError) -> PlatformScenario {
        func resolve(_ path: String) -> String {
            guard let workingDirectory, !path.hasPrefix("/") else { return path }
            return (workingDirectory as NSString).appendingPathComponent(path)
        }
        let reader = YAMLReader(file: file)
        let root = try reader.root(of: text)
        let top = try reader.fields(root, "", known: [
            "name", "description", "seed", "start", "duration", "population", "traffic", "baseline", "policy", "window",
            "platformRelease", "expect",
        ])
        func required(_ name: String) throws(GrayscaleError) -> Node {
            guard let node = top[name] else { throw reader.error(root, name, "required") }
            return node
        }
        let (start, _, duration) = try Scenario.readClock(top, reader, root: root)

        let populationNode = try required("population")
        let population = try reader.fields(populationNode, "population", known: ["users", "traits"])
        guard let usersNode = population["users"] else { throw reader.error(populationNode, "population.users", "required") }
        let traits = try Scenario.readTraits(population["traits"], reader)
        var rate = 12.0
        if let node = top["traffic"] {
            let fields = try reader.fields(node, "traffic", known: ["requestsPerUserPerHour"])
            if let value = fields["requestsPerUserPerHour"] {
                rate = try reader.double(value, "traffic.requestsPerUserPerHour", in: 0...100_000, exclusiveLower: true)
            }
        }
        var baseline = Scenario.Baseline(errorRate: 0.001, p50Ms: 40, p99Ms: 220)
        if let node = top["baseline"] {
            let fields = try reader.fields(node, "baseline", known: ["errorRate", "latencyMs"])
            if let value = fields["errorRate"] { baseline.errorRate = try reader.double(value, "baseline.errorRate", in: 0...1) }
            if let latency = fields["latencyMs"] {
                let latencyFields = try reader.fields(latency, "baseline.latencyMs", known: ["p50", "p99"])
                if let p50 = latencyFields["p50"] { baseline.p50Ms = try reader.double(p50, "baseline.latencyMs.p50", in: 0...600_000) }
                if let p99 = latencyFields["p99"] { baseline.p99Ms = try reader.double(p99, "baseline.latencyMs.p99", in: 0...600_000) }
                guard baseline.p99Ms >= baseline.p50Ms else {
                    throw reader.error(latency, "baseline.latencyMs.p99", "must be at least p50 (\(baseline.p50Ms))")
                }
            }
        }

        let (policy, policySource) = try Scenario.readPolicy(top["policy"], reader, file: file, override: policyOverride, resolve: resolve)

        let releaseNode = try required("platformRelease")
        let release = try reader.fields(releaseNode, "platformRelease", known: ["label", "services", "incompatibilities"])
        guard let labelNode = release["label"] else { throw reader.error(releaseNode, "platformRelease.label", "required") }
        let label = try reader.string(labelNode, "platformRelease.label")
        guard let servicesNode = release["services"], let mapping = servicesNode.mapping else {
            throw reader.error(release["services"] ?? releaseNode, "platformRelease.services", "required: a mapping of service names to releases")
        }
        var services: [Service] = []
        for (key, value) in mapping {
            let name = try reader.string(key, "platformRelease.services")
            let path = "platformRelease.services.\(name)"
            do { try ServiceName.validate(name) } catch { throw reader.error(key, path, error.message) }
            guard !services.contains(where: { $0.name == name }) else { throw reader.error(key, path, "service appears twice") }
            let fields = try reader.fields(value, path, known: ["number", "faults"])
            guard let number = fields["number"] else { throw reader.error(value, "\(path).number", "required") }
            var faults: [Fault] = []
            if let node = fields["faults"] {
                for (index, faultNode) in try reader.list(node, "\(path).faults").enumerated() {
                    faults.append(try Scenario.readFault(faultNode, reader, path: "\(path).faults[\(index)]", traits: traits))
                }
            }
            services.append(Service(name: name, number: try reader.int(number, "\(path).number", in: 2...Int(Int32.max)), faults: faults))
        }
        guard services.count >= 2 else { throw reader.error(servicesNode, "platformRelease.services", "needs at least two services") }
        var incompatibilities: [Incompatibility] = []
        if let node = release["incompatibilities"] {
            for (index, item) in try reader.list(node, "platformRelease.incompatibilities").enumerated() {
                let path = "platformRelease.incompatibilities[\(index)]"
                let fields = try reader.fields(item, path, known: ["between", "fails", "errorRate"])
                guard let betweenNode = fields["between"], let failsNode = fields["fails"], let rateNode = fields["errorRate"] else {
                    throw reader.error(item, path, "needs between, fails and errorRate")
                }
                let between = try reader.strings(betweenNode, "\(path).between")
                guard between.count == 2, Set(between).count == 2 else {
                    throw reader.error(betweenNode, "\(path).between", "names two different services")
                }
                for name in between where !services.contains(where: { $0.name == name }) {
                    throw reader.error(betweenNode, "\(path).between", "'\(name)' is not a service of the platform release")
                }
                let fails = try reader.string(failsNode, "\(path).fails")
                guard between.contains(fails) else { throw reader.error(failsNode, "\(path).fails", "must be one of \(between.joined(separator: ", "))") }
                incompatibilities.append(Incompatibility(between: between, fails: fails,
                                                         errorRate: try reader.double(rateNode, "\(path).errorRate", in: 0...1, exclusiveLower: true)))
            }
        }

        let expect = try Scenario.readExpect(top["expect"], reader)
        let window = try top["window"].map { node throws(GrayscaleError) in try reader.duration(node, "window") } ?? 10
        guard window > 0 else { throw reader.error(top["window"], "window", "must be at least 1s") }
        return PlatformScenario(
            name: try reader.string(try required("name"), "name"),
            description: try top["description"].map { node throws(GrayscaleError) in try reader.string(node, "description") } ?? "",
            seed: UInt64(try top["seed"].map { node throws(GrayscaleError) in try reader.int(node, "seed", in: 0...Int.max) } ?? 1),
            start: start, duration: duration, users: try reader.int(usersNode, "population.users", in: 1...10_000_000), traits: traits,
            requestsPerUserPerHour: rate, baseline: baseline, policy: policy, policySource: policySource, window: window, label: label,
            services: services, incompatibilities: incompatibilities, expect: expect)
    }
}
