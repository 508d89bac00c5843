import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleStore
import Logging
import ServiceLifecycle

struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the reconcile loop: judge each canary against stable, widen it step by step, or roll it back.",
        discussion: "Metrics come from running proxies (--stats, repeatable) or Prometheus (--prometheus). Stop with SIGINT or SIGTERM.")

    @OptionGroup var database: DatabaseOptions
    @Option(help: "The rollout policies folder.") var policies = "policies"
    @Option(help: "Base URL of a proxy's admin endpoint (its GET /stats); repeatable.") var stats: [String] = []
    @Option(help: "Base URL of a Prometheus server, e.g. http://127.0.0.1:9090.") var prometheus: String?
    @Option(name: .customLong("prometheus-requests"), help: "Query template for requests ({{service}}, {{version}}, {{window}}).")
    var prometheusRequests = PrometheusMetrics.Queries.standard.requests
    @Option(name: .customLong("prometheus-errors"), help: "Query template for server errors.")
    var prometheusErrors = PrometheusMetrics.Queries.standard.errors
    @Option(help: "How often the loop wakes.") var tick = "5s"
    @Option(help: "The controller's lease: another controller on the database takes over within two of them after this one dies.")
    var lease = "15s"
    @Option(name: .customLong("analysis-interval"), help: "Override every policy's analysis interval (demos, tests).")
    var analysisInterval: String?

    func validate() throws {
        guard !stats.isEmpty || prometheus != nil else {
            throw ValidationError("give the metrics source: --stats URL (repeatable) or --prometheus URL (with --stats, Prometheus answers the policies' own metrics)")
        }
        guard Self.tickDuration(tick) != nil else {
            throw ValidationError("--tick: expected a duration such as 5s or 200ms (got '\(tick)')")
        }
        guard Self.tickDuration(lease) != nil else {
            throw ValidationError("--lease: expected a duration such as 15s or 1500ms (got '\(lease)')")
        }
        if let analysisInterval, parseDuration(analysisInterval) == nil {
            throw ValidationError("--analysis-interval: expected a duration such as 1m (got '\(analysisInterval)')")
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `5s`, `1m`, or milliseconds as `200ms`.
    static func tickDuration(_ text: String) -> Duration? {
        if text.hasSuffix("ms"), let millis = Int(text.dropLast(2)), millis > 0 { return .milliseconds(millis) }
        return parseDuration(text).flatMap { $0 > 0 ? .seconds($0) : nil }
    }

    func run() async throws {
        var logger = Logger(label: "grayscale.controller")
        logger.logLevel = .info
        let db = try database.open()
        let prometheusSource = prometheus.map {
            PrometheusMetrics(baseURL: $0, queries: .init(requests: prometheusRequests, errors: prometheusErrors))
        }
        let source: any MetricsSource = stats.isEmpty ? prometheusSource! : HTTPStatsMetrics(endpoints: stats, windowSeconds: 10)
        let controller = ControllerService(
            database: db, policiesFolder: policies, metrics: source, customMetrics: prometheusSource,
            configuration: .init(tick: Self.tickDuration(tick)!, analysisInterval: analysisInterval.flatMap(parseDuration).map(Double.init),
                                 leasePeriod: Self.seconds(Self.tickDuration(lease)!)),
            logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: controller)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

struct RolloutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "See and steer the controller's rollouts.",
        subcommands: [Status.self, Order.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The rollout of a service: phase, step, last verdict and why.",
            discussion: "--watch follows the service's canary (or, when there is none, the next one published) and redraws "
                + "its rollout whenever it changes (step, cohort, what the judge waits for, last verdict, recent events); it "
                + "exits when the rollout ends: 0 promoted, 3 rolled back, 4 superseded by a newer release.")

        @OptionGroup var database: DatabaseOptions
        @Option(help: "The service.") var service: String
        @OptionGroup var format: FormatOptions
        @Flag(help: "Redraw as the rollout changes until it ends; the exit status says how it ended.") var watch = false
        @Option(help: "With --watch: seconds between reads of the database.") var interval: Double = 1

        func validate() throws {
            guard interval >= 0.05, interval <= 3600 else { throw ValidationError("--interval: expected seconds from 0.05 to 3600 (got \(interval))") }
            guard !watch || format.format == .table else { throw ValidationError("--watch: draws tables only (drop --format json)") }
        }

        struct Report: Encodable {
            var service: String
            var release: ReleaseRef
            var phase: String
            var step: Int
            var manual: Bool
            var holdReason: String?
            var lastVerdict: Verdict?
            var eValue: Double
            var split: SplitSummary?
            /// Which controller decides and which stand by (seen in the last minute).
            var lease: ControllerLease?
            var controllers: [ControllerPresence]
        }

        /// `Controller: host:1234:5 leads (token 3, lease renewed until 12:00:15); standing by: host:999:1`
        static func controllerLine(lease: ControllerLease?, present: [ControllerPresence], now: Date) -> String {
            guard let lease else { return "Controller: none has run on this database" }
            let standby = present.filter { $0.role == .standby && $0.holder != lease.holder }.map(\.holder)
            let state = lease.expiresAt > now ? "leads (token \(lease.token), lease until \(lease.expiresAt.formatted(.iso8601)))"
                : "led until \(lease.expiresAt.formatted(.iso8601)) (token \(lease.token)); its lease has lapsed, a standby takes over on its next pass"
            return "Controller: \(lease.holder) \(state)" + (standby.isEmpty ? "" : "; standing by: \(standby.joined(separator: ", "))")
        }

        func run() async throws {
            let db = try database.open()
            if watch {
                let ending = try await RolloutWatch.run(db, service: service, interval: interval, terminal: isatty(STDOUT_FILENO) == 1)
                throw ExitCode(ending.rawValue)
            }
            guard let rollout = try db.rolloutState(service) else {
                throw GrayscaleError("\(service): no rollout yet (the controller starts one when a canary is published)")
            }
            let now = Date()
            let seen = try db.controllers(seenSince: now.addingTimeInterval(-60))
            let report = Report(service: service, release: rollout.release, phase: rollout.phase.rawValue, step: rollout.step,
                                manual: rollout.manual, holdReason: rollout.holdReason, lastVerdict: rollout.lastVerdict,
                                eValue: rollout.evidence.eValue, split: (try? db.split(service)).map(SplitSummary.init),
                                lease: seen.lease, controllers: seen.present)
            try format.emit(report) {
                var lines = ["\(service): canary \(rollout.release), \(rollout.phase.rawValue), step \(rollout.step + 1)\(rollout.manual ? " (manual)" : "")"]
                if let reason = rollout.holdReason { lines.append("Holding: \(reason)") }
                if let verdict = rollout.lastVerdict { lines.append("Last verdict: \(verdict.outcome.rawValue): \(verdict.reason)") }
                if let split = try? db.split(service) { lines += split.statusLines }
                lines.append(Self.controllerLine(lease: seen.lease, present: seen.present, now: now))
                return lines.joined(separator: "\n")
            }
        }
    }

    struct Order: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "order",
            abstract: "Queue an order for the controller's next tick: init, pause, resume, rollback, finish, announce-override.")

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service.") var service: String
        @Argument(help: "init, pause, resume, rollback, finish, force-finish or announce-override (with --reason).") var order: String
        @Option(name: .customLong("command-id"), help: "Names the order across retries: the same id is queued once (default: a new id).")
        var commandId: String?
        @Option(help: "announce-override: the release it is for (refused if the canary is another one by then).") var number: Int?

        func run() throws {
            let kind: HumanCommand.Kind
            switch order {
            case "init": kind = .initialize
            case "pause": kind = .pause
            case "resume": kind = .resume
            case "rollback": kind = .rollback
            case "finish": kind = .finish(force: false)
            case "force-finish": kind = .finish(force: true)
            case "announce-override":
                // Starting a release its policy wants announced first is a decision someone answers for.
                guard let reason = actor.reason?.trimmingCharacters(in: .whitespacesAndNewlines), !reason.isEmpty else {
                    throw ValidationError("announce-override needs --reason: why this release starts without its announcement")
                }
                guard let number else { throw ValidationError("announce-override needs --number: the release it lets start") }
                kind = .overrideAnnouncement(release: number, reason: reason)
            default:
                throw ValidationError("order: expected init, pause, resume, rollback, finish, force-finish or announce-override (got '\(order)')")
            }
            let who = actor.attribution
            let id = commandId ?? "cli:\(UUID().uuidString)"
            guard try database.open().enqueue(HumanCommand(kind, actor: who.actor, text: who.command, id: id), for: service, at: Date()) else {
                print("Order \(id) was queued before; nothing more was queued.")
                return
            }
            print("Queued \(order) for \(service) (command id \(id)); the controller applies it on its next tick.")
        }
    }
}
