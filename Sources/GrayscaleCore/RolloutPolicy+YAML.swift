import Foundation
import Yams

extension RolloutPolicy {
    /// The policy's name when the file names none: the file's name without its extension.
    public static func defaultName(forPath path: String) -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        return file.split(separator: ".").first.map(String.init) ?? file
    }

    public static func parse(_ text: String, file: String, defaultName: String = "policy") throws(GrayscaleError) -> RolloutPolicy {
        let reader = YAMLReader(file: file)
        let root = try reader.root(of: text)
        let top = try reader.fields(root, "", known: [
            "name", "service", "steps", "stepMinimum", "nonAuthWeight", "analysis", "window",
            "smokeChecks", "slack", "allowList", "denyList", "optIn", "holdback", "announce",
            "rollback", "mirror", "webSocketDrain",
        ])
        var policy = RolloutPolicy.standard
        policy.name = defaultName

        if let node = top["name"] { policy.name = try reader.string(node, "name") }
        if let node = top["service"] {
            let service = try reader.string(node, "service")
            do { try ServiceName.validate(service) } catch { throw reader.error(node, "service", error.message) }
            policy.service = service
        }
        if let node = top["steps"] { policy.steps = try readSteps(node, reader) }
        if let node = top["stepMinimum"] {
            policy.stepMinimum = try reader.duration(node, "stepMinimum")
        }
        if let node = top["nonAuthWeight"] {
            policy.nonAuthWeight = node.scalar?.string == "follow"
                ? .followsStep
                : .fixed(try reader.percent(node, "nonAuthWeight"))
        }
        if let node = top["analysis"] { policy.analysis = try readAnalysis(node, reader, base: policy.analysis) }
        if let node = top["window"] { policy.window = try readWindow(node, reader, base: policy.window) }
        if let node = top["announce"] {
            let lead = try reader.duration(node, "announce")
            guard lead > 0 else { throw reader.error(node, "announce", "must be longer than 0 (leave it out to need no announcement)") }
            policy.announce = lead
        }
        if let node = top["rollback"] {
            let text = try reader.string(node, "rollback")
            guard let mode = PlatformRollback(rawValue: text) else {
                throw reader.error(node, "rollback", "must be together or alone (got '\(text)')")
            }
            policy.rollback = mode
        }
        if let node = top["mirror"] {
            let fields = try reader.fields(node, "mirror", known: ["share", "duration", "minRequests", "maxDuration", "routes"])
            guard let shareNode = fields["share"] else { throw reader.error(node, "mirror.share", "required when mirror is given") }
            let share = try reader.percent(shareNode, "mirror.share")
            guard share > 0 else { throw reader.error(shareNode, "mirror.share", "must be more than 0 percent (leave mirror out for no mirror phase)") }
            let duration = try fields["duration"].map { node throws(GrayscaleError) in try reader.duration(node, "mirror.duration") } ?? 600
            guard duration > 0 else { throw reader.error(fields["duration"], "mirror.duration", "must be longer than 0") }
            let minRequests = try fields["minRequests"].map { node throws(GrayscaleError) in
                try reader.int(node, "mirror.minRequests", in: 0...1_000_000_000)
            } ?? 100
            let most = try fields["maxDuration"].map { node throws(GrayscaleError) in try reader.duration(node, "mirror.maxDuration") } ?? 3 * duration
            guard most >= duration else {
                throw reader.error(fields["maxDuration"], "mirror.maxDuration", "must be at least mirror.duration (\(formatDuration(duration)); got \(formatDuration(most)))")
            }
            var routes: [MirrorRoute] = []
            if let node = fields["routes"] {
                for (index, item) in try reader.list(node, "mirror.routes").enumerated() {
                    let text = try reader.string(item, "mirror.routes[\(index)]")
                    if ["GET", "HEAD"].contains(text.split(separator: " ").first.map(String.init) ?? "") {
                        throw reader.error(item, "mirror.routes[\(index)]", "GET and HEAD are always mirrored; list only other methods the service handles safely")
                    }
                    guard let route = MirrorRoute(parsing: text) else {
                        throw reader.error(item, "mirror.routes[\(index)]",
                                           "expected an upper-case method and a plain path prefix such as 'POST /v1/query' (got '\(text)')")
                    }
                    routes.append(route)
                }
            }
            policy.mirror = Mirror(share: share, duration: duration, minRequests: minRequests, maxDuration: most, routes: routes)
        }
        if let node = top["webSocketDrain"] {
            let grace = try reader.duration(node, "webSocketDrain")
            guard (1...3600).contains(grace) else { throw reader.error(node, "webSocketDrain", "must be between 1s and 1h (got \(grace)s)") }
            policy.webSocketDrain = grace
        }
        if let node = top["smokeChecks"] {
            policy.smokeChecks = []
            for (index, item) in try reader.list(node, "smokeChecks").enumerated() {
                policy.smokeChecks.append(try readSmokeCheck(item, reader, path: "smokeChecks[\(index)]"))
            }
        }
        if let node = top["slack"] {
            let fields = try reader.fields(node, "slack", known: ["channel", "operators"])
            guard let channel = fields["channel"] else { throw reader.error(node, "slack.channel", "required when slack is given") }
            policy.slack = Slack(
                channel: try reader.string(channel, "slack.channel"),
                operators: try fields["operators"].map { node throws(GrayscaleError) in try reader.strings(node, "slack.operators") } ?? []
            )
        }
        if let node = top["allowList"] { policy.allowList = try reader.strings(node, "allowList") }
        if let node = top["denyList"] {
            policy.denyList = try reader.strings(node, "denyList")
            if let index = policy.denyList.firstIndex(where: policy.allowList.contains) {
                let item = try reader.list(node, "denyList")[index]
                throw reader.error(item, "denyList", "appId '\(policy.denyList[index])' is also on the allow list")
            }
        }
        if let node = top["optIn"] { policy.optIn = try reader.bool(node, "optIn") }
        if let node = top["holdback"] {
            policy.holdback = try reader.percent(node, "holdback")
            guard policy.holdback < Bucket.count else { throw reader.error(node, "holdback", "must be less than 100 percent") }
        }
        if let step = policy.steps.dropLast().first(where: { $0 >= Bucket.count - policy.holdback }) {
            throw reader.error(top["holdback"] ?? top["steps"] ?? root, "holdback",
                               "step \(formatHundredths(step))% is not below 100% minus the holdback (\(formatHundredths(Bucket.count - policy.holdback))%)")
        }
        return policy
    }

    private static func readSteps(_ node: Node, _ reader: YAMLReader) throws(GrayscaleError) -> [Int] {
        let items = try reader.list(node, "steps")
        guard !items.isEmpty else { throw reader.error(node, "steps", "needs at least one step") }
        var steps: [Int] = []
        for (index, item) in items.enumerated() {
            let step = try reader.percent(item, "steps[\(index)]")
            guard step > 0 else { throw reader.error(item, "steps", "each step must be more than 0 percent (got 0)") }
            if let previous = steps.last, step <= previous {
                throw reader.error(item, "steps", "must increase (got \(formatHundredths(step)) after \(formatHundredths(previous)))")
            }
            steps.append(step)
        }
        return steps
    }

    private static func readAnalysis(_ node: Node, _ reader: YAMLReader, base: Analysis) throws(GrayscaleError) -> Analysis {
        try reader.refuseRemoved(node, "analysis", [
            "failureLimit": "every check spends the rollout's one α, so a failing check rolls back at once",
        ])
        let fields = try reader.fields(node, "analysis", known: ["interval", "minRequests", "errorRate", "latency", "metrics"])
        var analysis = base
        if let node = fields["interval"] {
            analysis.interval = try reader.duration(node, "analysis.interval")
            guard analysis.interval > 0 else { throw reader.error(node, "analysis.interval", "must be at least 1s") }
        }
        if let node = fields["minRequests"] {
            analysis.minRequests = try reader.int(node, "analysis.minRequests", in: 1...1_000_000_000)
        }
        if let node = fields["errorRate"] {
            try reader.refuseRemoved(node, "analysis.errorRate", [
                "maxRate": "a fixed bound judged every interval rolled good releases back on noise; the canary is judged against stable",
            ])
            let rate = try reader.fields(node, "analysis.errorRate", known: ["alpha", "beta", "detectRatio"])
            if let node = rate["alpha"] {
                analysis.errorRate.alpha = try reader.double(node, "analysis.errorRate.alpha", in: 0...0.5, exclusiveLower: true)
            }
            if let node = rate["beta"] {
                analysis.errorRate.beta = try reader.double(node, "analysis.errorRate.beta", in: 0...0.5, exclusiveLower: true)
            }
            if let node = rate["detectRatio"] {
                analysis.errorRate.detectRatio = try reader.double(node, "analysis.errorRate.detectRatio", in: 1...1000, exclusiveLower: true)
            }
        }
        if let node = fields["metrics"] {
            analysis.metrics = []
            for (index, item) in try reader.list(node, "analysis.metrics").enumerated() {
                let path = "analysis.metrics[\(index)]"
                let metric = try reader.fields(item, path, known: ["name", "query", "direction", "minEffect"])
                guard let name = metric["name"], let query = metric["query"] else { throw reader.error(item, path, "needs name and query") }
                let directionText = try metric["direction"].map { node throws(GrayscaleError) in try reader.string(node, "\(path).direction") } ?? "lower"
                guard let direction = CustomMetric.Direction(rawValue: directionText) else {
                    throw reader.error(metric["direction"], "\(path).direction", "expected lower or higher (which is better; got '\(directionText)')")
                }
                let parsed = CustomMetric(
                    name: try reader.string(name, "\(path).name"), query: try reader.string(query, "\(path).query"), direction: direction,
                    minEffect: try metric["minEffect"].map { node throws(GrayscaleError) in
                        try reader.double(node, "\(path).minEffect", in: 0...1e15)
                    } ?? 0)
                guard parsed.query.contains("{{version}}") || parsed.query.contains("{{label}}") else {
                    throw reader.error(query, "\(path).query", "must name the version with {{version}} or {{label}}, or canary and stable read the same series")
                }
                guard !analysis.metrics.contains(where: { $0.name == parsed.name }) else {
                    throw reader.error(name, "\(path).name", "'\(parsed.name)' appears twice")
                }
                analysis.metrics.append(parsed)
            }
        }
        if let node = fields["latency"] {
            let why = "percentiles of one interval are noise and were judged outside α; latency is now one anytime-valid test of the whole distribution with minDifferenceMs as its minimum effect"
            try reader.refuseRemoved(node, "analysis.latency", ["p50MaxRatio": why, "p99MaxRatio": why, "p99MaxMs": why])
            let latency = try reader.fields(node, "analysis.latency", known: ["minDifferenceMs"])
            if latency.values["minDifferenceMs"] != nil {
                analysis.latency.minDifferenceMs = try latency["minDifferenceMs"].map { node throws(GrayscaleError) in
                    try reader.double(node, "analysis.latency.minDifferenceMs", in: 0...3_600_000)
                }
            }
        }
        return analysis
    }

    private static func readWindow(_ node: Node, _ reader: YAMLReader, base: PromotionWindow) throws(GrayscaleError) -> PromotionWindow {
        let fields = try reader.fields(node, "window", known: ["days", "start", "end", "timeZone"])
        var days = base.days, start = base.start, end = base.end, zone = base.timeZone
        if let node = fields["days"] {
            days = []
            for (index, item) in try reader.list(node, "window.days").enumerated() {
                let name = try reader.string(item, "window.days[\(index)]")
                guard let day = Weekday(name: name) else {
                    throw reader.error(item, "window.days", "'\(name)' is not a day of the week (monday … sunday)")
                }
                days.insert(day)
            }
        }
        func time(_ name: String) throws(GrayscaleError) -> TimeOfDay? {
            guard let node = fields[name] else { return nil }
            let text = try reader.string(node, "window.\(name)")
            guard let time = TimeOfDay(parsing: text) else {
                throw reader.error(node, "window.\(name)", "expected a time HH:MM such as 14:00 (got '\(text)')")
            }
            return time
        }
        start = try time("start") ?? start
        end = try time("end") ?? end
        if let node = fields["timeZone"] { zone = try reader.string(node, "window.timeZone") }
        do {
            return try PromotionWindow(days: days, start: start, end: end, timeZone: zone)
        } catch {
            let culprit = error.message.hasPrefix("unknown time zone") ? "timeZone"
                : error.message.hasPrefix("end") ? "end" : "days"
            throw reader.error(fields[culprit] ?? node, "window.\(culprit)", error.message)
        }
    }

    private static func readSmokeCheck(_ node: Node, _ reader: YAMLReader, path: String) throws(GrayscaleError) -> SmokeCheck {
        let fields = try reader.fields(node, path, known: ["name", "method", "path", "expectStatus", "timeout"])
        guard let pathNode = fields["path"] else { throw reader.error(node, "\(path).path", "required") }
        let urlPath = try reader.string(pathNode, "\(path).path")
        guard urlPath.hasPrefix("/") else {
            throw reader.error(pathNode, "\(path).path", "must start with / (got '\(urlPath)')")
        }
        let method = try fields["method"].map { node throws(GrayscaleError) in try reader.string(node, "\(path).method") } ?? "GET"
        guard ["GET", "HEAD", "POST"].contains(method) else {
            throw reader.error(fields["method"], "\(path).method", "must be GET, HEAD or POST (got '\(method)')")
        }
        return SmokeCheck(
            name: try fields["name"].map { node throws(GrayscaleError) in try reader.string(node, "\(path).name") } ?? urlPath,
            method: method,
            path: urlPath,
            expectStatus: try fields["expectStatus"].map { node throws(GrayscaleError) in
                try reader.int(node, "\(path).expectStatus", in: 100...599)
            } ?? 200,
            timeout: try fields["timeout"].map { node throws(GrayscaleError) in try reader.duration(node, "\(path).timeout") } ?? 5
        )
    }
}
