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
        /// How long the lease lasts without renewal: a standby takes over within two periods
        /// of the leader's death or freeze.
        public var leasePeriod: Double
        /// This process as other controllers, logs and status name it.
        public var holder: String

        public init(tick: Duration = .seconds(5), analysisInterval: Double? = nil, defaultChannel: String = "#grayscale",
                    leasePeriod: Double = 15, holder: String = ControllerService.processName()) {
            self.tick = tick
            self.analysisInterval = analysisInterval
            self.defaultChannel = defaultChannel
            self.leasePeriod = leasePeriod
            self.holder = holder
        }
    }

    /// `host:pid` and a random suffix, so a restarted process with a reused pid is not taken for its predecessor.
    public static func processName() -> String {
        "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(UInt32.random(in: 0...UInt32.max) % 100_000)"
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

    /// A split this process pushed to a platform: under which lease token, and when.
    struct AppliedSplit {
        var revision: Int
        var token: Int64
        var at: Date
    }

    /// How often the leader pushes the committed split again although it did already:
    /// heals a platform that a deposed leader (frozen past its lease, then woken) wrote to.
    static let reapplyEvery: Double = 60

    /// What a controller keeps between ticks and may lose on restart without harm.
    struct Memory {
        var policies: PolicyLibrary?
        /// The lease as this process last held or saw it.
        var standing: LeaseStanding?
        /// The last error claiming the lease, said once.
        var leaseProblem: String?
        /// The split revision each driver last applied and read back.
        var applied: [String: AppliedSplit] = [:]
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
        // Renew well inside the lease, however long the tick.
        let pause = min(configuration.tick, .milliseconds(Int(configuration.leasePeriod * 1000 / 3)))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.tickAll()
                try? await Task.sleep(for: pause)
            }
        }
        // A clean stop hands the lease over at once; the tick in flight finished above.
        resign()
        logger.info("controller stopped")
    }

    /// Gives the lease up, so a standby takes over on its next pass instead of after the lease lapses.
    public func resign() {
        do {
            try database.releaseLease(holder: configuration.holder, at: now())
        } catch {
            logger.warning("lease not released; another controller takes over when it lapses", metadata: ["problem": "\(error.message)"])
        }
        memory.withLock { $0.standing = nil }
    }

    /// Renews or takes the lease; the token to fence this pass's commits with, or nil
    /// while another controller leads. Says so in the log when the standing changes.
    func lead() -> Int64? {
        // A lease held with more than two thirds of its period left needs no write yet
        // (every commit still checks the token); a clock moved back forces a renewal.
        if case .leading(let lease)? = memory.withLock({ $0.standing }) {
            let left = lease.expiresAt.timeIntervalSince(now())
            if left > configuration.leasePeriod * 2 / 3, left <= configuration.leasePeriod { return lease.token }
        }
        let standing: LeaseStanding
        do {
            standing = try database.claimLease(holder: configuration.holder, period: configuration.leasePeriod, at: now())
        } catch {
            // Said once per problem, not on every pass (a locked or full database lasts).
            let first = memory.withLock { memory -> Bool in
                defer { memory.standing = nil; memory.leaseProblem = error.message }
                return memory.leaseProblem != error.message
            }
            if first {
                logger.error("cannot claim the controller's lease; not deciding until it can", metadata: ["problem": "\(error.message)"])
            }
            return nil
        }
        if memory.withLock({ $0.leaseProblem }) != nil {
            logger.notice("the database answers again: claiming the lease works")
            memory.withLock { $0.leaseProblem = nil }
        }
        let before = memory.withLock { memory in
            defer { memory.standing = standing }
            return memory.standing
        }
        switch standing {
        case .leading(let lease):
            if case .leading(let previous)? = before, previous.token == lease.token {} else {
                logger.notice("leading: this controller decides", metadata: ["holder": "\(lease.holder)", "token": "\(lease.token)"])
            }
            return lease.token
        case .standingBy(let leader):
            if case .standingBy(let previous)? = before, previous.holder == leader.holder, previous.token == leader.token {} else {
                logger.notice("standing by: another controller leads", metadata: [
                    "leader": "\(leader.holder)", "token": "\(leader.token)", "leaseUntil": "\(leader.expiresAt)"])
            }
            return nil
        }
    }

    /// One pass over every service that needs the controller, if this one leads.
    public func tickAll() async {
        guard let fence = lead() else { return }
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
        var moved: Set<String> = []
        for service in services {
            guard await tickService(service, library: library, fence: fence, moved: &moved) else { return }
        }
        // A platform release's services move together: when one moved (a step, a promotion, a
        // rollback), those ticked before it in this pass are ticked again now, not a tick later.
        guard !moved.isEmpty, let platforms = try? database.platformReleases() else { return }
        for platform in platforms where moved.contains(platform.label) {
            for service in platform.services where services.contains(service) {
                var ignored: Set<String> = []
                guard await tickService(service, library: library, fence: fence, moved: &ignored) else { return }
            }
        }
    }

    /// One service's ticks in a pass; false when the lease was lost (the pass stops).
    private func tickService(_ service: String, library: PolicyLibrary, fence: Int64, moved: inout Set<String>) async -> Bool {
        // A platform that does not show the committed split yet holds the rollout (the reconciler decides how).
        let lag = await syncDriver(service, token: fence) ? nil : "\(drivers[service]?.name ?? "driver") has not taken it"
        do {
            var outcome = try await tick(service, library: library, fence: fence, platformLag: lag)
            if let label = outcome.platformMoved { moved.insert(label) }
            // A rollout that now waits for smoke checks runs them at once.
            while outcome.again {
                outcome = try await tick(service, library: library, fence: fence, platformLag: lag)
                if let label = outcome.platformMoved { moved.insert(label) }
            }
        } catch let error as GrayscaleError where error.kind == .fenced {
            logger.warning("lost the lease during the tick; nothing was written", metadata: ["service": "\(service)", "problem": "\(error.message)"])
            memory.withLock { $0.standing = nil }
            return false
        } catch {
            logger.warning("tick failed", metadata: ["service": "\(service)", "problem": "\(error)"])
        }
        // Whatever the tick committed goes to the platform now, a rollback above all.
        if drivers[service] != nil { await syncDriver(service) }
        return true
    }

    /// The policy a service's canary follows, and why it must hold when that policy is
    /// unavailable: a platform release's services all follow the platform's (`service: platform`),
    /// so that they take the same steps with the same users.
    static func policy(for service: String, inPlatform: Bool, library: PolicyLibrary) -> (policy: RolloutPolicy, problem: String?) {
        let name = inPlatform ? PlatformRelease.module : service
        return (library.policy(for: name), library.problem(for: name))
    }

    /// Runs a human's command now, through the reconciler, and commits the result: the
    /// way the bot and the admin API act. A command with an id runs once: a retry (or a
    /// second replica given the same id) gets the first answer back and changes nothing.
    /// Tries again only when nothing was written (a conflict, a busy database).
    public func execute(_ command: HumanCommand, service: String, policies given: PolicyLibrary? = nil) async throws(GrayscaleError)
        -> (result: CommandResult, transition: Transition?) {
        let library = given ?? {
            var library = PolicyLibrary(folder: policiesFolder)
            try? library.reload()
            return library
        }()
        var attempt = 0
        while true {
            if let id = command.id, let first = try database.commandResult(id, service: service) { return (first, nil) }
            let snapshot = try database.controllerSnapshot(service)
            let (policy, policyProblem) = Self.policy(for: service, inPlatform: snapshot.platform != nil, library: library)
            // A command never moves the rollout's clock back (this process's clock may be behind the controller's).
            let time = max(now(), snapshot.rollout?.updatedAt ?? .distantPast)
            // The same command queued earlier under this id is this one: it runs once, here.
            let queued = snapshot.commands.map(\.command).filter { command.id == nil || $0.id != command.id }
            let transition = Reconciler.reconcile(ReconcileInput(
                policy: policy, service: snapshot.service, rollout: snapshot.rollout, observation: nil,
                commands: queued + [command], policyProblem: policyProblem, announcement: snapshot.announcement,
                platform: snapshot.platform, now: time))
            do {
                let (after, committed) = try database.commitTick(snapshot, transition, command: command, fence: nil,
                                                                 notifyChannel: policy.slack?.channel ?? configuration.defaultChannel, at: time)
                controllerMetrics?.observe(service: after, transition: committed)
                // A human's rollback of one service of a platform release: the others follow now, not on the next pass.
                if let platform = snapshot.platform, committed.rollbackReason != nil, policy.rollback == .together {
                    for peer in platform.peers where !peer.rolledBack && !peer.left && !peer.promoted {
                        await settle(peer.service, release: peer.release.number, library: library)
                    }
                }
                return (CommandResult(split: after.split, rollout: committed.rollout, refusal: committed.refusal), committed)
            } catch where error.isTransient && attempt < 20 {
                attempt += 1  // nothing was written: read again
                try? await Task.sleep(for: .milliseconds(10 * attempt))
            }
        }
    }

    /// Rolls `service` back now if the reconciler, on what is stored (no new metrics, no
    /// queued command), rolls its canary `release` back: how a platform release's other
    /// services follow a human's rollback of one of them at once. It commits nothing else
    /// (no step, from a process that may not hold the lease).
    func settle(_ service: String, release: Int, library: PolicyLibrary) async {
        for attempt in 0..<20 {
            do {
                var snapshot = try database.controllerSnapshot(service)
                guard snapshot.service.canary?.number == release, snapshot.platform != nil else { return }
                snapshot.commands = []  // they wait for the controller's own tick
                let (policy, problem) = Self.policy(for: service, inPlatform: true, library: library)
                let time = max(now(), snapshot.rollout?.updatedAt ?? .distantPast)
                let transition = Reconciler.reconcile(ReconcileInput(
                    policy: policy, service: snapshot.service, rollout: snapshot.rollout,
                    policyProblem: problem, announcement: snapshot.announcement, platform: snapshot.platform, now: time))
                guard transition.rollbackReason != nil else { return }
                let (after, committed) = try database.commitTick(snapshot, transition, fence: nil,
                                                                 notifyChannel: policy.slack?.channel ?? configuration.defaultChannel, at: time)
                controllerMetrics?.observe(service: after, transition: committed)
                return
            } catch where error.isTransient && attempt < 19 {
                try? await Task.sleep(for: .milliseconds(10 * (attempt + 1)))
            } catch {
                logger.warning("could not follow the platform release's rollback now; the next pass will", metadata: [
                    "service": "\(service)", "problem": "\(error.message)"])
                return
            }
        }
    }

    /// Applies the committed split through the service's driver if this leader has not
    /// yet (under its current token), or not lately. True when the platform shows the
    /// committed split (or the service has no driver). Only the leader pushes: the lease is
    /// renewed right before (or `held` was just claimed), so a leader that was frozen and lost it writes nothing.
    @discardableResult
    public func syncDriver(_ service: String, token held: Int64? = nil) async -> Bool {
        guard let driver = drivers[service] else { return true }
        guard let split = try? database.split(service) else { return true }
        guard let token = held ?? lead() else { return true }  // a standby says nothing about the platform
        let time = now()
        if let applied = memory.withLock({ $0.applied[service] }), applied.revision == split.revision, applied.token == token,
           time.timeIntervalSince(applied.at) < Self.reapplyEvery {
            return true
        }
        do {
            try await driver.apply(split)
            memory.withLock { $0.applied[service] = AppliedSplit(revision: split.revision, token: token, at: time) }
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

    /// What one tick did that the pass acts on.
    struct TickOutcome {
        /// Run it again right away: the rollout just started verifying, its smoke checks run on the next one.
        var again = false
        /// The platform release whose service this tick moved (a step, a promotion, a rollback).
        var platformMoved: String?
    }

    /// One tick of one service.
    func tick(_ service: String, library: PolicyLibrary, fence: Int64?, platformLag: String? = nil) async throws -> TickOutcome {
        let snapshot = try database.controllerSnapshot(service)
        let (policy, policyProblem) = Self.policy(for: service, inPlatform: snapshot.platform != nil, library: library)
        var observation: ObservationResult?
        var smokeResult: SmokeOutcome?
        if let canary = snapshot.service.canary, let rollout = snapshot.rollout, rollout.release.number == canary.number,
           rollout.phase == .verifying {
            // Follows from the stored state, not from a message: a restart or a lost commit runs them again.
            smokeResult = await smoke.run(policy.smokeChecks, release: canary.ref, upstream: canary.upstream)
        }
        let time = now()
        if let canary = snapshot.service.canary, let stable = snapshot.service.stable, let rollout = snapshot.rollout,
           rollout.release.number == canary.number, rollout.phase.isActive, Reconciler.readsEvidence(rollout, split: snapshot.service.split) {
            // As often as the source has something new, and at least once per analysis interval.
            let interval = configuration.analysisInterval ?? min(metrics.cadence ?? .infinity, Double(policy.analysis.interval))
            var from = rollout.observedUntil ?? time.addingTimeInterval(-interval)
            if from > time.addingTimeInterval(1) {
                // The wall clock moved back: waiting for it to catch up would leave the canary unjudged that long.
                logger.warning("the clock moved back; evidence is read from now on", metadata: [
                    "service": "\(service)", "observedUntil": "\(from)", "now": "\(time)"])
                from = time.addingTimeInterval(-interval)
            }
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
        let transition = Reconciler.reconcile(ReconcileInput(
            policy: policy, service: snapshot.service, rollout: snapshot.rollout, observation: observation, smoke: smokeResult,
            commands: snapshot.commands.map(\.command), platformLag: platformLag, policyProblem: policyProblem,
            announcement: snapshot.announcement, platform: snapshot.platform, now: time))
        guard transition.rollout != snapshot.rollout || !transition.isQuiet || !snapshot.commands.isEmpty else {
            return TickOutcome()
        }
        let (after, committed) = try database.commitTick(snapshot, transition, fence: fence,
                                                         notifyChannel: policy.slack?.channel ?? configuration.defaultChannel, at: time)
        controllerMetrics?.observe(service: after, transition: committed)
        for text in committed.notifications { logger.info("\(text)") }
        let movedPlatform = committed.splitChanges.contains {
            switch $0 {
            case .rules, .mirror, .webSocketDrain: false
            case .canary, .rollBack, .promote: true
            }
        } ? snapshot.platform?.label : nil
        return TickOutcome(again: committed.awaitsSmokeChecks && snapshot.rollout?.phase != .verifying, platformMoved: movedPlatform)
    }
}
