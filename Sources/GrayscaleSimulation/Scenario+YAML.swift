import Foundation
import GrayscaleCore
import GrayscaleEdges
import Yams

extension Scenario {
    /// Reads a scenario file; `policy:` paths are relative to `workingDirectory` (the
    /// process's working directory when nil).
    public static func load(path: String, policyOverride: String? = nil, workingDirectory: String? = nil) throws(GrayscaleError) -> Scenario {
        try parse(try readText(path), file: path, policyOverride: policyOverride, workingDirectory: workingDirectory)
    }

    static func readText(_ path: String) throws(GrayscaleError) -> String {
        do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw GrayscaleError("\(path): cannot read the scenario (\(error.localizedDescription))")
        }
    }

    public static func parse(_ text: String, file: String, policyOverride: String? = nil,
                             workingDirectory: String? = nil) throws(GrayscaleError) -> Scenario {
        func resolve(_ path: String) -> String {
            guard let workingDirectory, !path.hasPrefix("/") else { return path }
            return (workingDirectory as NSString).appendingPathComponent(path)
        }
        let reader = YAMLReader(file: file)
        let root = try reader.root(of: text)
        let top = try reader.fields(root, "", known: [
            "name", "description", "seed", "start", "duration", "population", "traffic", "baseline", "releases", "policy",
            "commands", "expect", "noisyUsers", "humanDelay", "window", "platform",
        ])
        func required(_ name: String) throws(GrayscaleError) -> Node {
            guard let node = top[name] else { throw reader.error(root, name, "required") }
            return node
        }
        let name = try reader.string(try required("name"), "name")
        let (start, startText, duration) = try readClock(top, reader, root: root)

        let populationNode = try required("population")
        let populationFields = try reader.fields(populationNode, "population", known: [
            "users", "anonymousShare", "traits", "activitySigma", "anonymousClients", "brokenAnonymousClients", "allowListed",
        ])
        guard let usersNode = populationFields["users"] else { throw reader.error(populationNode, "population.users", "required") }
        let traits = try readTraits(populationFields["traits"], reader)
        var population = Population(
            users: try reader.int(usersNode, "population.users", in: 1...10_000_000),
            anonymousShare: try populationFields["anonymousShare"].map { node throws(GrayscaleError) in
                try reader.double(node, "population.anonymousShare", in: 0...0.99)
            } ?? 0,
            traits: traits)
        if let node = populationFields["activitySigma"] { population.activitySigma = try reader.double(node, "population.activitySigma", in: 0...4) }
        if let node = populationFields["anonymousClients"] {
            population.anonymousClients = try reader.int(node, "population.anonymousClients", in: 1...10_000_000)
        }
        if let node = populationFields["brokenAnonymousClients"] {
            population.brokenAnonymousClients = try reader.int(node, "population.brokenAnonymousClients", in: 0...population.anonymousClients)
        }
        if let node = populationFields["allowListed"] {
            let fields = try reader.fields(node, "population.allowListed", known: ["requestsPerHour", "errorRate"])
            population.allowListedRequestsPerHour = try fields["requestsPerHour"].map { node throws(GrayscaleError) in
                try reader.double(node, "population.allowListed.requestsPerHour", in: 0...1_000_000)
            } ?? 60
            population.allowListedErrorRate = try fields["errorRate"].map { node throws(GrayscaleError) in
                try reader.double(node, "population.allowListed.errorRate", in: 0...1)
            } ?? 0
        }

        var traffic = Traffic(requestsPerUserPerHour: 12, shape: .flat)
        if let node = top["traffic"] {
            let fields = try reader.fields(node, "traffic", known: ["requestsPerUserPerHour", "shape", "safeShare"])
            if let share = fields["safeShare"] { traffic.safeShare = try reader.double(share, "traffic.safeShare", in: 0...1) }
            if let rate = fields["requestsPerUserPerHour"] {
                traffic.requestsPerUserPerHour = try reader.double(rate, "traffic.requestsPerUserPerHour", in: 0...100_000, exclusiveLower: true)
            }
            if let shapeNode = fields["shape"] {
                let shape = try reader.string(shapeNode, "traffic.shape")
                guard let parsed = Traffic.Shape(rawValue: shape) else {
                    throw reader.error(shapeNode, "traffic.shape", "expected flat or business-hours (got '\(shape)')")
                }
                traffic.shape = parsed
            }
        }

        var baseline = Baseline(errorRate: 0.001, p50Ms: 40, p99Ms: 220)
        if let node = top["baseline"] {
            let fields = try reader.fields(node, "baseline", known: ["errorRate", "latencyMs", "coldStart"])
            if let cold = fields["coldStart"] {
                let coldFields = try reader.fields(cold, "baseline.coldStart", known: ["latencyMs", "for"])
                if let ms = coldFields["latencyMs"] { baseline.coldStartMs = try reader.double(ms, "baseline.coldStart.latencyMs", in: 0...600_000) }
                if let span = coldFields["for"] { baseline.coldStartSeconds = try reader.duration(span, "baseline.coldStart.for") }
            }
            if let rate = fields["errorRate"] { baseline.errorRate = try reader.double(rate, "baseline.errorRate", in: 0...1) }
            if let latency = fields["latencyMs"] {
                let latencyFields = try reader.fields(latency, "baseline.latencyMs", known: ["p50", "p99"])
                if let p50 = latencyFields["p50"] { baseline.p50Ms = try reader.double(p50, "baseline.latencyMs.p50", in: 0...600_000) }
                if let p99 = latencyFields["p99"] { baseline.p99Ms = try reader.double(p99, "baseline.latencyMs.p99", in: 0...600_000) }
                guard baseline.p99Ms >= baseline.p50Ms else {
                    throw reader.error(latency, "baseline.latencyMs.p99", "must be at least p50 (\(baseline.p50Ms))")
                }
            }
        }

        let releasesNode = try required("releases")
        var releases: [ScenarioRelease] = []
        for (index, item) in try reader.list(releasesNode, "releases").enumerated() {
            let path = "releases[\(index)]"
            let fields = try reader.fields(item, path, known: ["at", "service", "number", "label", "faults"])
            for field in ["at", "service", "number", "label"] where fields[field] == nil {
                throw reader.error(item, "\(path).\(field)", "required")
            }
            var faults: [Fault] = []
            if let node = fields["faults"] {
                for (faultIndex, faultNode) in try reader.list(node, "\(path).faults").enumerated() {
                    faults.append(try readFault(faultNode, reader, path: "\(path).faults[\(faultIndex)]", traits: traits))
                }
            }
            let release = ScenarioRelease(
                at: try reader.duration(fields["at"]!, "\(path).at"), service: try reader.string(fields["service"]!, "\(path).service"),
                number: try reader.int(fields["number"]!, "\(path).number", in: 1...Int(Int32.max)),
                label: try reader.string(fields["label"]!, "\(path).label"), faults: faults)
            if let previous = releases.last {
                guard release.number > previous.number else {
                    throw reader.error(fields["number"], "\(path).number", "release numbers must increase (got \(release.number) after \(previous.number))")
                }
                guard release.at >= previous.at else {
                    throw reader.error(fields["at"], "\(path).at", "releases must be in time order")
                }
                guard release.service == previous.service else {
                    throw reader.error(fields["service"], "\(path).service", "one service per scenario (got '\(release.service)' after '\(previous.service)')")
                }
            }
            releases.append(release)
        }
        guard !releases.isEmpty else { throw reader.error(releasesNode, "releases", "needs at least one release") }

        let (policy, policySource) = try readPolicy(top["policy"], reader, file: file, override: policyOverride, resolve: resolve)

        var commands: [ScenarioCommand] = []
        if let node = top["commands"] {
            for (index, item) in try reader.list(node, "commands").enumerated() {
                let path = "commands[\(index)]"
                let fields = try reader.fields(item, path, known: ["at", "as", "text"])
                guard let at = fields["at"], let actor = fields["as"], let textNode = fields["text"] else {
                    throw reader.error(item, path, "needs at, as and text")
                }
                let commandText = try reader.string(textNode, "\(path).text")
                do { _ = try BotCommand.parse(commandText) } catch { throw reader.error(textNode, "\(path).text", error.problem) }
                commands.append(ScenarioCommand(at: try reader.duration(at, "\(path).at"), actor: try reader.string(actor, "\(path).as"),
                                                text: commandText))
            }
        }

        let expect = try readExpect(top["expect"], reader)

        var platform = Platform(applyLag: 0, rollbackDelay: 0)
        if let node = top["platform"] {
            let fields = try reader.fields(node, "platform", known: ["applyLag", "rollbackDelay"])
            if let lag = fields["applyLag"] { platform.applyLag = try reader.duration(lag, "platform.applyLag") }
            if let delay = fields["rollbackDelay"] { platform.rollbackDelay = try reader.duration(delay, "platform.rollbackDelay") }
        }
        let window = try top["window"].map { node throws(GrayscaleError) in try reader.duration(node, "window") } ?? 10
        guard window > 0 else { throw reader.error(top["window"], "window", "must be at least 1s") }
        let offset = TimeZone(iso8601Offset: startText)?.secondsFromGMT() ?? 0
        return Scenario(
            name: name, description: try top["description"].map { node throws(GrayscaleError) in try reader.string(node, "description") } ?? "",
            seed: UInt64(try top["seed"].map { node throws(GrayscaleError) in try reader.int(node, "seed", in: 0...Int.max) } ?? 1),
            start: start, utcOffsetSeconds: offset, duration: duration, population: population, traffic: traffic, baseline: baseline,
            releases: releases, policy: policy, policySource: policySource, commands: commands,
            noisyUsers: try top["noisyUsers"].map { node throws(GrayscaleError) in try reader.int(node, "noisyUsers", in: 0...population.users) } ?? 0,
            humanDelay: try top["humanDelay"].map { node throws(GrayscaleError) in try reader.duration(node, "humanDelay") } ?? 1800,
            window: window, platform: platform, expect: expect)
    }

    /// `start` (ISO 8601 with an offset, also returned as written) and `duration` (more than 0 s).
    static func readClock(_ top: YAMLReader.Fields, _ reader: YAMLReader, root: Node) throws(GrayscaleError) -> (Date, String, Int) {
        guard let startNode = top["start"] else { throw reader.error(root, "start", "required") }
        let startText = try reader.string(startNode, "start")
        guard let start = ISO8601DateFormatter().date(from: startText) else {
            throw reader.error(startNode, "start", "expected an ISO 8601 time with an offset, e.g. 2026-11-25T14:00:00+08:00 (got '\(startText)')")
        }
        guard let durationNode = top["duration"] else { throw reader.error(root, "duration", "required") }
        let duration = try reader.duration(durationNode, "duration")
        guard duration > 0 else { throw reader.error(durationNode, "duration", "must be more than 0s") }
        return (start, startText, duration)
    }

    /// `population.traits`: trait → share of users.
    static func readTraits(_ node: Node?, _ reader: YAMLReader) throws(GrayscaleError) -> [String: Double] {
        guard let node else { return [:] }
        guard let mapping = node.mapping else { throw reader.error(node, "population.traits", "expected a mapping of trait: share") }
        var traits: [String: Double] = [:]
        for (key, value) in mapping {
            let trait = try reader.string(key, "population.traits")
            traits[trait] = try reader.double(value, "population.traits.\(trait)", in: 0...1)
        }
        return traits
    }

    /// `policy:` (a path, resolved by `resolve`, or inline), unless the path `override` replaces it; and where it came from.
    static func readPolicy(_ node: Node?, _ reader: YAMLReader, file: String, override: String?,
                           resolve: (String) -> String) throws(GrayscaleError) -> (RolloutPolicy, String) {
        var policy = RolloutPolicy.standard
        var policySource = "built-in default"
        if let override {
            policy = try RolloutPolicy.load(path: resolve(override))
            policySource = override
        } else if let node {
            if let path = node.scalar?.string {
                do { policy = try RolloutPolicy.load(path: resolve(path)) } catch {
                    throw reader.error(node, "policy", error.message)
                }
                policySource = path
            } else {
                let inline: String
                do { inline = try Yams.serialize(node: node) } catch {
                    throw reader.error(node, "policy", "cannot read the inline policy (\(error))")
                }
                do { policy = try RolloutPolicy.parse(inline, file: "\(file) (inline policy)", defaultName: "inline") } catch {
                    throw reader.error(node, "policy", error.message)
                }
                policySource = "inline"
            }
        }
        return (policy, policySource)
    }

    /// `expect: {outcome, affectedUsersAtMost, rollbackWithin}`.
    static func readExpect(_ node: Node?, _ reader: YAMLReader) throws(GrayscaleError) -> Expectations {
        var expect = Expectations()
        guard let node else { return expect }
        let fields = try reader.fields(node, "expect", known: ["outcome", "affectedUsersAtMost", "rollbackWithin"])
        if let outcome = fields["outcome"] {
            let value = try reader.string(outcome, "expect.outcome")
            guard ["rolledBack", "promoted", "inProgress"].contains(value) else {
                throw reader.error(outcome, "expect.outcome", "expected rolledBack, promoted or inProgress (got '\(value)')")
            }
            expect.outcome = value
        }
        if let most = fields["affectedUsersAtMost"] { expect.affectedUsersAtMost = try reader.int(most, "expect.affectedUsersAtMost", in: 0...10_000_000) }
        if let within = fields["rollbackWithin"] { expect.rollbackWithin = try reader.duration(within, "expect.rollbackWithin") }
        return expect
    }

    static func readFault(_ node: Node, _ reader: YAMLReader, path: String, traits: [String: Double]) throws(GrayscaleError) -> Fault {
        let fields = try reader.fields(node, path, known: ["users", "anonymous", "requests", "errorRate", "latencyMs", "from", "fromPercent"])
        var target = Fault.Target.everyone
        var targets = 0
        if let users = fields["users"] {
            let userFields = try reader.fields(users, "\(path).users", known: ["trait"])
            guard let traitNode = userFields["trait"] else { throw reader.error(users, "\(path).users.trait", "required") }
            let trait = try reader.string(traitNode, "\(path).users.trait")
            guard traits[trait] != nil else {
                throw reader.error(traitNode, "\(path).users.trait", "unknown trait '\(trait)' (population.traits has: \(traits.keys.sorted().joined(separator: ", ")))")
            }
            target = .trait(trait)
            targets += 1
        }
        if let anonymous = fields["anonymous"] {
            guard try reader.bool(anonymous, "\(path).anonymous") else { throw reader.error(anonymous, "\(path).anonymous", "only true is meaningful") }
            target = .anonymous
            targets += 1
        }
        if let share = fields["requests"] {
            target = .requests(try reader.double(share, "\(path).requests", in: 0...1, exclusiveLower: true))
            targets += 1
        }
        guard targets <= 1 else { throw reader.error(node, path, "give at most one of users, anonymous, requests") }
        let errorRate = try fields["errorRate"].map { node throws(GrayscaleError) in try reader.double(node, "\(path).errorRate", in: 0...1) } ?? 0
        let latency = try fields["latencyMs"].map { node throws(GrayscaleError) in try reader.double(node, "\(path).latencyMs", in: 0...600_000) } ?? 0
        guard errorRate > 0 || latency > 0 else { throw reader.error(node, path, "a fault needs errorRate or latencyMs") }
        return Fault(target: target, errorRate: errorRate, latencyMs: latency,
                     from: try fields["from"].map { node throws(GrayscaleError) in try reader.duration(node, "\(path).from") } ?? 0,
                     fromWidth: try fields["fromPercent"].map { node throws(GrayscaleError) in try reader.percent(node, "\(path).fromPercent") } ?? 0)
    }
}

extension TimeZone {
    /// The fixed offset at the end of an ISO 8601 time: `+08:00`, `-05:00`, `Z`.
    init?(iso8601Offset text: String) {
        if text.hasSuffix("Z") { self.init(secondsFromGMT: 0); return }
        let tail = text.suffix(6)
        guard tail.count == 6, let sign = tail.first, sign == "+" || sign == "-",
              let hours = Int(tail.dropFirst().prefix(2)), let minutes = Int(tail.suffix(2)) else { return nil }
        self.init(secondsFromGMT: (sign == "-" ? -1 : 1) * (hours * 3600 + minutes * 60))
    }
}
