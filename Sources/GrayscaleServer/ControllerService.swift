import Foundation
import GrayscaleCore
import GrayscaleStore
import Logging
import ServiceLifecycle
import Synchronization

/// The reconcile loop on a clock: for every service with a canary, read the stored
/// state, the metrics and the humans' commands, let the `Reconciler` decide, commit
/// the decision in one transaction, then do what lies outside the database (smoke
/// checks). The database is the source of truth: a restart continues the same rollout
/// at the same step with the same split.
public final class ControllerService: Service, Sendable {
    public struct Configuration: Sendable {
        /// How often the loop wakes; metrics are judged once per policy interval.
        public var tick: Duration
        /// Overrides every policy's analysis interval (for demos and tests).
        public var analysisInterval: Double?
        /// The notification channel when a policy names none.
        public var defaultChannel: String

        public init(tick: Duration = .seconds(5), analysisInterval: Double? = nil, defaultChannel: String = "#grayscale") {
            self.tick = tick
            self.analysisInterval = analysisInterval
            self.defaultChannel = defaultChannel
        }
    }

    let database: GrayscaleDatabase
    let policiesFolder: String
    let metrics: any MetricsSource
    /// Where the policies' own metrics are read (Prometheus); nil: they are not judged here.
    let customMetrics: PrometheusMetrics?
    let smoke: SmokeChecker
    let configuration: Configuration
    let now: @Sendable () -> Date
    let logger: Logger
    let controllerMetrics: ControllerMetrics?
    /// Services whose splits also go to a platform (an SCF alias, …).
    let drivers: [String: any TrafficDriver]
    private let memory = Mutex(Memory())

    /// What a controller keeps between ticks and may lose on restart without harm.
    struct Memory {
        var smokeResults: [String: SmokeOutcome] = [:]
        var policies: PolicyLibrary?
        /// The split revision each driver last applied and read back.
        var appliedRevision: [String: Int] = [:]
        /// The revision whose failure was already notified.
        var notifiedFailure: [String: Int] = [:]
    }

    public init(database: GrayscaleDatabase, policiesFolder: String, metrics: any MetricsSource, customMetrics: PrometheusMetrics? = nil,
                smoke: SmokeChecker = SmokeChecker(),
                configuration: Configuration = Configuration(), now: @escaping @Sendable () -> Date = { Date() }, logger: Logger,
                controllerMetrics: ControllerMetrics? = nil, drivers: [String: any TrafficDriver] = [:]) {
        self.database = database
        self.policiesFolder = policiesFolder
        self.metrics = metrics
        self.customMetrics = customMetrics
        self.smoke = smoke
        self.configuration = configuration
        self.now = now
        self.logger = logger
        self.controllerMetrics = controllerMetrics
        self.drivers = drivers
    }

    public func run() async throws {
        logger.info("controller started", metadata: ["database": "\(database.path)", "policies": "\(policiesFolder)"])
        for service in try database.services() {
            if let split = try? database.split(service) {
                logger.info("continuing from the committed split", metadata: [
                    "service": "\(service)", "revision": "\(split.revision)", "canary": "\(split.canary.map { "\($0.release) \($0.range)" } ?? "none")"])
            }
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.tickAll()
                try? await Task.sleep(for: self.configuration.tick)
            }
        }
        logger.info("controller stopped")
    }

    /// One pass over every service that needs the controller.
    public func tickAll() async {
        var library = memory.withLock { $0.policies } ?? PolicyLibrary(folder: policiesFolder)
        do {
            try library.reload()
            for problem in library.problems { logger.error("policy not loaded", metadata: ["problem": "\(problem)"]) }
        } catch {
            logger.error("policies unavailable", metadata: ["problem": "\(error.message)"])
        }
        memory.withLock { [library] in $0.policies = library }
        let services: [String]
        do { services = try database.servicesNeedingControl() } catch {
            logger.error("cannot list services", metadata: ["problem": "\(error.message)"])
            return
        }
        for service in services {
            // A platform that does not show the committed split yet holds the rollout (the reconciler decides how).
            let lag = await syncDriver(service) ? nil : "\(drivers[service]?.name ?? "driver") has not taken it"
            do {
                let policy = library.policy(for: service), problem = library.problem(for: service)
                var again = try await tick(service, policy: policy, platformLag: lag, policyProblem: problem)
                // Smoke checks just finished: decide on them at once.
                while again { again = try await tick(service, policy: policy, platformLag: lag, policyProblem: problem) }
            } catch {
                logger.warning("tick failed", metadata: ["service": "\(service)", "problem": "\(error)"])
            }
            // Whatever the tick committed goes to the platform now, a rollback above all.
            if drivers[service] != nil { await syncDriver(service) }
        }
    }

    /// Runs a human's command now, through the reconciler, and commits the result: the
    /// way the bot and the admin API act. Returns the service and rollout afterwards and
    /// what the reconciler did.
    public func execute(_ command: HumanCommand, service: String, policy given: RolloutPolicy? = nil) async throws
        -> (service: ServiceState, rollout: RolloutState?, actions: [ControllerAction]) {
        let policy = given ?? {
            var library = PolicyLibrary(folder: policiesFolder)
            try? library.reload()
            return library.policy(for: service)
        }()
        var lastError: (any Error)?
        for _ in 0..<5 {
            let snapshot = try database.controllerSnapshot(service)
            let time = now()
            let (rollout, actions) = Reconciler.reconcile(ReconcileInput(
                policy: policy, service: snapshot.service, rollout: snapshot.rollout, observation: nil,
                smoke: memory.withLock { $0.smokeResults[service] }, commands: snapshot.commands.map(\.command) + [command], now: time))
            do {
                let after = try database.commitTick(snapshot, rollout: rollout, actions: actions,
                                                    notifyChannel: policy.slack?.channel ?? configuration.defaultChannel, at: time)
                controllerMetrics?.observe(service: after, rollout: rollout, actions: actions)
                for case .runSmokeChecks(let release, let upstream, let checks) in actions {
                    let outcome = await smoke.run(checks, release: release, upstream: upstream)
                    memory.withLock { $0.smokeResults[service] = outcome }
                }
                return (after, try database.rolloutState(service), actions)
            } catch {
                lastError = error  // another writer got in between: read again
            }
        }
        throw lastError!
    }

    /// Applies the committed split through the service's driver if it has not been yet.
    /// True when the platform shows the committed split (or the service has no driver).
    @discardableResult
    public func syncDriver(_ service: String) async -> Bool {
        guard let driver = drivers[service] else { return true }
        guard let split = try? database.split(service) else { return true }
        if memory.withLock({ $0.appliedRevision[service] }) == split.revision { return true }
        do {
            try await driver.apply(split)
            memory.withLock { $0.appliedRevision[service] = split.revision }
            logger.info("split applied", metadata: ["service": "\(service)", "driver": "\(driver.name)", "revision": "\(split.revision)"])
            return true
        } catch {
            logger.error("split not applied; the rollout holds until it is", metadata: [
                "service": "\(service)", "driver": "\(driver.name)", "revision": "\(split.revision)", "problem": "\(error)"])
            let first = memory.withLock { memory -> Bool in
                defer { memory.notifiedFailure[service] = split.revision }
                return memory.notifiedFailure[service] != split.revision
            }
            if first {
                _ = try? database.enqueue(channel: configuration.defaultChannel,
                                      text: "\(service): \(driver.name) did not take split revision \(split.revision) (\(error)); retrying, the rollout holds",
                                      service: service, at: now())
            }
            return false
        }
    }

    /// The policy's own metrics for canary and stable, once per analysis interval (the
    /// rollout's evidence says when they were last read). A query that fails leaves them
    /// out of this span: no evidence either way, said in the log.
    func customSamples(policy: RolloutPolicy, rollout: RolloutState, service: String, canary: ReleaseRef, stable: ReleaseRef,
                       to: Date) async -> [String: CustomMetricSample] {
        let interval = Double(policy.analysis.interval)
        guard let source = customMetrics, !rollout.evidence.customMetrics.isEmpty,
              rollout.evidence.customLastAt.map({ to.timeIntervalSince($0) >= interval }) ?? true else { return [:] }
        var samples: [String: CustomMetricSample] = [:]
        for metric in rollout.evidence.customMetrics {
            do {
                samples[metric.name] = try await source.sample(metric, service: service, canary: canary, stable: stable,
                                                               window: Int(interval), at: to)
            } catch {
                logger.warning("custom metric not read", metadata: ["service": "\(service)", "metric": "\(metric.name)", "problem": "\(error)"])
            }
        }
        return samples
    }

    /// One tick of one service; true when it should run again right away.
    func tick(_ service: String, policy: RolloutPolicy, platformLag: String? = nil, policyProblem: String? = nil) async throws -> Bool {
        let snapshot = try database.controllerSnapshot(service)
        let time = now()
        var observation: ObservationResult?
        if let canary = snapshot.service.canary, let stable = snapshot.service.stable, let rollout = snapshot.rollout,
           rollout.release.number == canary.number, rollout.phase.isActive, rollout.step >= 0 || !(snapshot.service.split?.range.isEmpty ?? true) {
            // As often as the source has something new, and at least once per analysis interval.
            let interval = configuration.analysisInterval ?? min(metrics.cadence ?? .infinity, Double(policy.analysis.interval))
            let from = rollout.observedUntil ?? time.addingTimeInterval(-interval)
            if time.timeIntervalSince(from) >= interval {
                do {
                    var observed = try await metrics.observe(service: service, canary: canary.ref, stable: stable.ref, from: from, to: time)
                    observed.custom = await customSamples(policy: policy, rollout: rollout, service: service, canary: canary.ref,
                                                          stable: stable.ref, to: observed.to)
                    observation = .observed(observed)
                } catch {
                    // The span stays unobserved: the next tick asks for it again.
                    observation = .unavailable("\(error)")
                }
            }
        }
        let smokeResult = memory.withLock { $0.smokeResults[service] }
        let (rollout, actions) = Reconciler.reconcile(ReconcileInput(
            policy: policy, service: snapshot.service, rollout: snapshot.rollout, observation: observation, smoke: smokeResult,
            commands: snapshot.commands.map(\.command), platformLag: platformLag, policyProblem: policyProblem, now: time))
        guard rollout != snapshot.rollout || !actions.isEmpty || !snapshot.commands.isEmpty else { return false }
        if smokeResult != nil, rollout?.phase != .verifying { memory.withLock { $0.smokeResults[service] = nil } }
        let after = try database.commitTick(snapshot, rollout: rollout, actions: actions,
                                            notifyChannel: policy.slack?.channel ?? configuration.defaultChannel, at: time)
        controllerMetrics?.observe(service: after, rollout: rollout, actions: actions)
        for case .notify(let text) in actions { logger.info("\(text)") }
        var ranSmoke = false
        for case .runSmokeChecks(let release, let upstream, let checks) in actions {
            let outcome = await smoke.run(checks, release: release, upstream: upstream)
            memory.withLock { $0.smokeResults[service] = outcome }
            ranSmoke = true
        }
        return ranSmoke
    }
}
