import Foundation

/// What one tick decided, whole: the new rollout state (with every piece of evidence,
/// cursor and test state a later decision depends on), the split changes, the audit
/// entries, the notifications and the verdict to keep. The store writes exactly this in
/// one transaction; the runtime only performs what follows from it (smoke checks while
/// the rollout is verifying, the platform's split). Nothing is matched by string.
public struct Transition: Hashable, Sendable {
    public enum SplitChange: Hashable, Sendable {
        /// Give the canary these users (the release stays canary).
        case canary(CanaryRange, nonAuthWeight: Int, reason: String)
        /// The policy's allow and deny lists and opt-in, for the split's routing.
        case rules(allowList: [String], denyList: [String], optIn: Bool)
        /// Everything back to stable.
        case rollBack(reason: String)
        /// The canary becomes stable.
        case promote(reason: String)
        /// Copy this share (hundredths of a percent) of stable's safe requests to the canary; 0 stops.
        case mirror(share: Int, routes: [MirrorRoute] = [], reason: String)
        /// How long the canary's WebSockets get to close when it loses them (the policy's `webSocketDrain`).
        case webSocketDrain(seconds: Int?)
    }

    /// One audit entry; `command` is the human's text when a command caused it.
    public struct Note: Hashable, Sendable {
        public var action: String
        public var actor: String
        public var detail: String
        public var refused: Bool
        public var command: String?
        /// The entry of the change that moved traffic: the store gives it the split before and after.
        public var movesTraffic: Bool
    }

    public var rollout: RolloutState?
    public var splitChanges: [SplitChange] = []
    public var audit: [Note] = []
    public var notifications: [String] = []
    /// The verdict to keep in the history (changes of outcome, and one per analysis interval).
    public var verdict: Verdict?
    /// Why a human's command was refused, when it was.
    public var refusal: String?

    public init(rollout: RolloutState? = nil) { self.rollout = rollout }

    /// Nothing to write besides the rollout state.
    public var isQuiet: Bool { splitChanges.isEmpty && audit.isEmpty && notifications.isEmpty && verdict == nil && refusal == nil }

    /// Why the canary was rolled back in this transition, if it was.
    public var rollbackReason: String? {
        for case .rollBack(let reason) in splitChanges { return reason }
        return nil
    }

    public var promoted: Bool { splitChanges.contains { if case .promote = $0 { true } else { false } } }

    /// The rollout waits for smoke checks of its release: the runtime runs them and hands
    /// the outcome to the next tick. Derived from the stored state, so a restart or a lost
    /// compare-and-swap during `verifying` runs them again instead of waiting for ever.
    public var awaitsSmokeChecks: Bool { rollout?.phase == .verifying }

    /// The one apply path (store, simulator, tests): the split changes, in order, with the
    /// same rules as a human's change; the rollout then knows the split it wrote.
    public mutating func apply(to service: inout ServiceState, at now: Date) throws(GrayscaleError) {
        for change in splitChanges {
            switch change {
            case .canary(let range, let weight, _):
                try service.setCanaryTraffic(range: range, nonAuthWeight: weight)
            case .rules(let allowList, let denyList, let optIn):
                if service.split != nil { try service.setRules(allowList: allowList, denyList: denyList, optInAllowed: optIn) }
            case .rollBack:
                if service.canary != nil { try service.rollBack(at: now) }
            case .promote:
                if service.canary != nil { try service.finish(at: now) }
            case .mirror(let share, let routes, _):
                if service.canary != nil { try service.setMirror(share: share, routes: routes) }
            case .webSocketDrain(let seconds):
                service.setWebSocketDrain(seconds: seconds)
            }
        }
        if let split = service.split { rollout?.knownSplitRevision = split.revision }
    }
}

/// Everything one tick decides from.
public struct ReconcileInput: Sendable {
    public var policy: RolloutPolicy
    public var service: ServiceState
    public var rollout: RolloutState?
    /// The metrics of the interval that just ended; nil when none was due.
    public var observation: ObservationResult?
    public var smoke: SmokeOutcome?
    public var commands: [HumanCommand]
    /// Set when the platform (an SCF alias) does not show the committed split yet: the
    /// rollout judges and may roll back, but does not advance.
    public var platformLag: String?
    /// Set when the policy file this service follows is gone or broken: the rollout judges
    /// (under the last good policy) and may roll back, but does not advance.
    public var policyProblem: String?
    /// The canary release's announcement, when it was announced.
    public var announcement: Announcement?
    /// The platform release the canary is part of, with its other services; nil for a release of its own.
    public var platform: PlatformContext?
    public var now: Date

    public init(policy: RolloutPolicy, service: ServiceState, rollout: RolloutState?, observation: ObservationResult? = nil,
                smoke: SmokeOutcome? = nil, commands: [HumanCommand] = [], platformLag: String? = nil, policyProblem: String? = nil,
                announcement: Announcement? = nil, platform: PlatformContext? = nil, now: Date) {
        self.platform = platform
        self.policyProblem = policyProblem
        self.announcement = announcement
        self.policy = policy
        self.service = service
        self.rollout = rollout
        self.observation = observation
        self.smoke = smoke
        self.commands = commands
        self.platformLag = platformLag
        self.now = now
    }
}

/// The one place that decides: `(policy, state, observations, commands, now) -> Transition`.
/// No I/O and no clock: `now` is an input.
public enum Reconciler {
    public static let actor = "grayscale-controller"

    /// Whether the rollout has evidence to read: it has reached a step, the canary has users,
    /// or mirrored copies go to it. The runtime asks for metrics only then.
    public static func readsEvidence(_ rollout: RolloutState, split: TrafficSplit?) -> Bool {
        rollout.step >= 0 || !(split?.range.isEmpty ?? true) || split?.canary?.mirror != nil
    }

    public static func reconcile(_ input: ReconcileInput) -> Transition {
        var run = Run(input: input)
        run.reconcile()
        var transition = run.transition
        // Whenever the controller moves traffic, every proxy learns the policy's WebSocket drain with it.
        if !transition.splitChanges.isEmpty, let split = input.service.split, split.webSocketDrain != input.policy.webSocketDrain {
            transition.splitChanges.insert(.webSocketDrain(seconds: input.policy.webSocketDrain), at: 0)
        }
        if var rollout = run.rollout, rollout != input.rollout || !transition.isQuiet {
            rollout.updatedAt = input.now
            transition.rollout = rollout
        } else {
            transition.rollout = run.rollout
        }
        return transition
    }

    struct Run {
        let input: ReconcileInput
        var rollout: RolloutState?
        var transition = Transition()

        init(input: ReconcileInput) {
            self.input = input
            self.rollout = input.rollout
        }

        var policy: RolloutPolicy { input.policy }
        var now: Date { input.now }
        var service: String { input.service.service }

        mutating func reconcile() {
            guard let canary = input.service.canary, let split = input.service.split else {
                endOutsideController()
                return
            }
            var state = current(for: canary, split: split)
            rebaseIfTheClockMovedBack(&state)
            if split.revision != state.knownSplitRevision {
                // Someone else (CLI, bot) changed the split: a human pin.
                state.manual = true
                state.knownSplitRevision = split.revision
                state.step = policy.step(forWidth: split.range.widthHundredths)
                startStep(&state)
            }
            state.waitingForPlatform = nil
            // A platform release rolls back together before anything else: a human's finish
            // of this service must not promote it while another service of it was rolled back.
            if let platform = input.platform, policy.rollback == .together, let failed = platform.peers.first(where: \.rolledBack) {
                let why = failed.rollout?.lastVerdict.flatMap { $0.outcome == .fail ? " (\($0.reason))" : nil } ?? ""
                let reason = "platform release \(platform.label) rolls back together: \(failed.service) \(failed.release) was rolled back\(why)"
                var human: HumanCommand?
                for command in input.commands {
                    if case .rollback = command.kind { human = human ?? command; continue }
                    refuse(command, action: command.kind.auditName, "\(reason); it is rolled back too", telling: reason)
                }
                if let human {
                    end(&state, .rolledBack, .rollBack(reason: "rolled back by \(human.actor)"), actor: human.actor, command: human.text)
                } else {
                    end(&state, .rolledBack, .rollBack(reason: reason))
                }
                return
            }
            for command in input.commands {
                if let meant = command.release, meant != canary.number {
                    refuse(command, action: command.kind.auditName, "it was meant for release \(meant), but the canary is \(canary.ref) now; nothing was done",
                           telling: "the canary is \(canary.ref), not release \(meant)")
                    continue
                }
                guard apply(command, to: &state, split: split) else {
                    rollout = state
                    return
                }
            }
            if state.phase == .verifying {
                guard let smoke = input.smoke, smoke.release == state.release.number else {
                    rollout = state
                    return
                }
                if let failed = smoke.checks.first(where: { !$0.passed }) {
                    end(&state, .rolledBack, .rollBack(reason: "smoke check \(failed.name) failed: \(failed.detail)"))
                    return
                }
                state.phase = .progressing
                say(&state, "smoke checks passed (\(smoke.checks.map(\.name).joined(separator: ", ")))", action: "smoke")
            }
            if judge(&state, split: split) == .rolledBack { return }
            advance(&state)
            rollout = state
        }

        /// The rollout of `canary`: the stored one, or a new one for a newly published canary.
        mutating func current(for canary: Release, split: TrafficSplit) -> RolloutState {
            if let existing = rollout, existing.release.number == canary.number, existing.phase.isActive { return existing }
            let verifying = !policy.smokeChecks.isEmpty
            var state = RolloutState(service: service, release: canary.ref, phase: verifying ? .verifying : .progressing,
                                     evidence: CanaryEvidence(policy: policy), splitRevision: split.revision, now: now)
            if verifying {
                say(&state, "canary \(canary.ref) published; running \(policy.smokeChecks.count) smoke check(s) before any user sees it",
                    action: "verify")
            } else {
                say(&state, "canary \(canary.ref) published; rollout under policy \(policy.name)", action: "start")
            }
            return state
        }

        /// The canary was rolled back, finished or superseded outside the controller.
        mutating func endOutsideController() {
            guard var state = rollout, state.phase.isActive else { return }
            switch input.service.release(number: state.release.number)?.status {
            case .stable?, .retired?: state.phase = .promoted
            case .superseded?: state.phase = .superseded
            default: state.phase = .rolledBack
            }
            state.holdReason = nil
            state.updatedAt = now
            rollout = state
        }

        /// Applies one human command; false when the rollout ended.
        mutating func apply(_ command: HumanCommand, to state: inout RolloutState, split: TrafficSplit) -> Bool {
            switch command.kind {
            case .rollback:
                end(&state, .rolledBack, .rollBack(reason: "rolled back by \(command.actor)"), actor: command.actor, command: command.text)
                return false
            case .finish(let force):
                if !force, let verdict = state.lastVerdict, verdict.outcome == .fail {
                    refuse(command, action: "finish", "the last verdict failed (\(verdict.reason)); use --force to finish anyway",
                           telling: "the last verdict failed (\(verdict.reason))")
                    return true
                }
                end(&state, .promoted, .promote(reason: "finished by \(command.actor)\(force ? " (forced)" : "")"), actor: command.actor,
                    command: command.text)
                return false
            case .setRange(let range, let weight):
                state.manual = true
                state.phase = .holding
                state.step = policy.step(forWidth: range.widthHundredths)
                startStep(&state)
                transition.splitChanges.append(.canary(range, nonAuthWeight: weight ?? range.widthHundredths, reason: "set by \(command.actor)"))
                say(&state, "\(command.actor) set the canary to \(range) (manual mode: no automatic advance until resume)",
                    action: "manual", actor: command.actor, command: command.text, movesTraffic: true)
            case .pause:
                state.manual = true
                say(&state, "paused by \(command.actor): no automatic advance until resume", action: "pause", actor: command.actor,
                    command: command.text)
            case .resume:
                state.manual = false
                state.step = policy.step(forWidth: split.range.widthHundredths)
                startStep(&state)  // the step's minimum time counts from the resume
                say(&state, "resumed by \(command.actor): automatic rollout continues", action: "resume", actor: command.actor,
                    command: command.text)
            case .overrideAnnouncement(let release, let reason):
                guard release == state.release.number else {
                    let refusal = "the canary is release \(state.release.number), not \(release): nothing was overridden"
                    refuse(command, action: "announce-override", refusal, telling: refusal)
                    return true
                }
                state.announceOverride = reason
                let need = policy.announce.map { "an announcement \(formatDuration($0)) before its window" } ?? "no announcement (nothing to override)"
                say(&state, "\(command.actor) lets canary \(state.release) start without waiting for its announcement (its policy asks for \(need)): "
                    + "\(reason)", action: "announce-override", actor: command.actor, command: command.text)
            case .initialize:
                if state.step < 0, let problem = announcementProblem(state) {
                    refuse(command, action: "init",
                           "\(problem); to start it anyway, override with a reason (grayscale rollout order announce-override --reason …)",
                           telling: problem)
                    return true
                }
                state.manual = false
                if state.phase != .verifying {
                    let starting = state.step < 0
                    let skipsMirror = starting && policy.mirror != nil && state.mirrorPassedAt == nil
                    state.step = 0
                    applyStep(&state, reason: "initialized by \(command.actor)\(skipsMirror ? ", skipping the mirror phase" : "")",
                              actor: command.actor, command: command.text)
                    if starting { remindOfAnnouncement(state) }
                }
            }
            return true
        }

        /// A human's command refused: its sender hears `refusal`, the audit keeps it, the channel is told `telling`.
        mutating func refuse(_ command: HumanCommand, action: String, _ refusal: String, telling: String) {
            transition.refusal = refusal
            transition.audit.append(.init(action: action, actor: command.actor, detail: "refused: \(refusal)", refused: true,
                                          command: command.text, movesTraffic: false))
            transition.notifications.append("\(service): \(action) refused for \(command.actor): \(telling)")
        }

        enum JudgeOutcome { case continuing, rolledBack }

        /// Adds the span's evidence; rolls back at once when the rollout's one α is spent.
        mutating func judge(_ state: inout RolloutState, split: TrafficSplit) -> JudgeOutcome {
            guard let observation = input.observation, Reconciler.readsEvidence(state, split: split) else { return .continuing }
            let verdict: Verdict
            switch observation {
            case .unavailable(let problem):
                state.metricsFailures += 1
                verdict = Verdict(.inconclusive, "metrics unavailable: \(problem)", numbers: ["metricsFailures": Double(state.metricsFailures)])
                if state.metricsFailures == 3 {
                    transition.notifications.append("\(service): metrics for canary \(state.release) failed 3 times in a row (\(problem)); the rollout holds")
                }
            case .observed(var interval):
                // The cursor follows the clock; the high-water mark keeps what was counted.
                let counted = state.evidenceUntil ?? interval.from
                if interval.from < counted {
                    // Read again below the mark (the wall clock moved back): only who failed may count.
                    interval = interval.failuresOnly
                }
                state.observedUntil = interval.to
                state.evidenceFrom = state.evidenceFrom ?? interval.from
                state.evidenceSeconds = (state.evidenceSeconds ?? 0) + max(0, interval.to.timeIntervalSince(max(interval.from, counted)))
                state.evidenceUntil = max(counted, interval.to)
                state.metricsFailures = 0
                if interval.canary.webSocketsOpened != nil || interval.canary.webSocketsDropped != nil {
                    var tally = state.stepWebSockets ?? WebSocketTally()
                    tally.add(canary: interval.canary, stable: interval.stable, at: interval.to)
                    state.stepWebSockets = tally
                }
                state.stepRequests = min(VersionEvidence.countLimit, state.stepRequests + min(max(interval.canary.requests, 0), VersionEvidence.countLimit))
                verdict = CanaryJudge.judge(interval, analysis: policy.analysis, evidence: &state.evidence,
                                            share: Double(split.range.widthHundredths) / Double(Bucket.count), stepRequests: state.stepRequests)
            }
            state.lastVerdict = verdict
            state.lastVerdictAt = now
            if verdict.outcome != state.recordedOutcome || state.recordedAt.map({ now.timeIntervalSince($0) >= Double(policy.analysis.interval) }) ?? true {
                transition.verdict = verdict
                state.recordedOutcome = verdict.outcome
                state.recordedAt = now
            }
            guard verdict.outcome == .fail else { return .continuing }
            end(&state, .rolledBack, .rollBack(reason: verdict.reason))
            return .rolledBack
        }

        /// The wall clock moved back (an NTP step, a wrong manual setting): times stored in
        /// the future would hold the step for as long as the move, and a verdict from "later"
        /// would count as fresh. The step's minimum time counts again from now, and the next
        /// step waits for a verdict made after it; judging and rollback go on meanwhile. A
        /// move forward needs nothing: one step per tick at most, each on a fresh verdict,
        /// and the promotion window is read on the clock as it is.
        mutating func rebaseIfTheClockMovedBack(_ state: inout RolloutState) {
            let latest = [state.stepStartedAt, state.lastVerdictAt, state.recordedAt, state.evidence.lastRestartAt].compactMap { $0 }.max()
            guard let latest, latest > now.addingTimeInterval(1) else { return }
            var said = "the next step waits for a verdict made after the move"
            if let started = state.stepStartedAt, started > now {
                state.stepStartedAt = now
                said = "step \(state.step + 1) of \(policy.steps.count) counts its minimum time again from now, " + said
            }
            if let at = state.lastVerdictAt, at > now { state.lastVerdictAt = nil }
            if let at = state.recordedAt, at > now { state.recordedAt = nil }
            if let at = state.evidence.lastRestartAt, at > now { state.evidence.lastRestartAt = now }
            if let at = state.evidence.onset?.stepStartedAt, at > now.timeIntervalSince1970 { state.evidence.onset?.stepStartedAt = now.timeIntervalSince1970 }
            if let at = state.evidence.customLastAt, at > now { state.evidence.customLastAt = nil }
            transition.notifications.append("\(service): the clock moved back \(Int(latest.timeIntervalSince(now))) s; \(said)")
        }

        /// Advances to the next step, or promotes, when the step has lasted and passed.
        mutating func advance(_ state: inout RolloutState) {
            guard state.phase != .verifying else { return }
            if state.manual {
                hold(&state, "manual mode: a human set the split; resume to continue")
                return
            }
            if state.step < 0, let mirror = policy.mirror, state.mirrorPassedAt == nil, !mirrorPhase(&state, mirror) { return }
            guard policy.window.contains(now) else {
                hold(&state, "outside the promotion window (\(policy.window.summary))")
                return
            }
            if state.step < 0, let problem = announcementProblem(state) {
                hold(&state, problem)
                return
            }
            if let problem = input.policyProblem {
                hold(&state, "the policy is unavailable (\(problem)); fix or restore it to continue")
                return
            }
            if let lag = input.platformLag {
                hold(&state, "the platform does not show the split yet (\(lag))")
                return
            }
            if state.step < 0 || Self.stepPassed(state, policy: policy, now: now), let waiting = platformWaiting(state) {
                // Quietly: at every step all but the last service of a platform release wait here for
                // a moment, and the one that keeps them waiting says why in its own words.
                hold(&state, waiting, quietly: true)
                state.waitingForPlatform = true
                return
            }
            state.phase = .progressing
            state.holdReason = nil
            guard state.step >= 0, let started = state.stepStartedAt else {
                state.step = 0
                applyStep(&state, reason: "first step")
                remindOfAnnouncement(state)
                return
            }
            guard now.timeIntervalSince(started) >= Double(policy.stepMinimum) else { return }
            guard let verdict = state.lastVerdict, verdict.outcome == .pass, let at = state.lastVerdictAt, at > started else {
                let waiting = state.lastVerdictAt.map { $0 > started } == true ? state.lastVerdict?.reason ?? "" : "waiting for the first verdict"
                state.holdReason = "step \(state.step + 1) of \(policy.steps.count): \(waiting)"
                return
            }
            if let problem = state.stepWebSockets?.problem(now: now, quiet: policy.stepMinimum) {
                // Told once: the counts in the reason change every tick, the hold does not.
                let told = input.rollout?.phase == .holding && input.rollout?.holdReason?.contains(WebSocketTally.reasonPrefix) == true
                hold(&state, "step \(state.step + 1) of \(policy.steps.count) passed its verdict, but \(problem)", quietly: told)
                return
            }
            if state.step >= policy.steps.count - 1 {
                let holdback = policy.holdback > 0 && policy.steps[state.step] == Bucket.count
                    ? " (final verdict with \(formatHundredths(policy.holdback))% held back on stable)" : ""
                end(&state, .promoted, .promote(reason: "every step passed\(holdback)"))
                return
            }
            state.step += 1
            applyStep(&state, reason: "step \(state.step) passed")
        }

        /// The mirror phase, before any user: copies of stable's safe requests go to the canary
        /// (no window or announcement needed, as no user is exposed) until it has lasted
        /// `duration` and compared `minRequests` pairs; the judge rolls back meanwhile if the
        /// paired test says so. True once it has passed: the first step's own gates follow,
        /// and mirroring goes on until that step gives the canary its users.
        mutating func mirrorPhase(_ state: inout RolloutState, _ mirror: RolloutPolicy.Mirror) -> Bool {
            guard let test = state.evidence.mirror else {
                // Its evidence was frozen before the policy asked for a mirror phase: no test to run one with.
                state.mirrorPassedAt = now
                say(&state, "canary \(state.release): no mirror phase (this rollout began before its policy asked for one)", action: "mirror")
                return true
            }
            state.phase = .progressing
            guard let started = state.mirrorStartedAt, input.service.split?.canary?.mirror != nil else {
                let again = state.mirrorStartedAt != nil
                state.mirrorStartedAt = now
                state.holdReason = "mirror phase: starting"
                transition.splitChanges.append(.mirror(share: mirror.share, routes: mirror.routes, reason: "mirror phase"))
                let also = mirror.routes.isEmpty ? "" : " (and \(mirror.routes.map(\.description).joined(separator: ", ")))"
                say(&state, "canary \(state.release): \(again ? "mirroring again" : "mirror phase"): \(formatHundredths(mirror.share))% of stable's GET and HEAD requests\(also) "
                    + "are copied to it for at least \(formatDuration(mirror.duration)) and \(mirror.minRequests) compared requests, before any user; "
                    + "its answers are compared with stable's and discarded", action: "mirror", movesTraffic: true)
                return false
            }
            let pairs = test.pairs
            let elapsed = now.timeIntervalSince(started)
            if pairs < mirror.minRequests, elapsed >= Double(mirror.maxDuration) {
                // Too little safe traffic (or a metrics source without pairs): the steps judge on their own.
                state.mirrorPassedAt = now
                say(&state, "canary \(state.release): the mirror phase ends after \(formatDuration(mirror.maxDuration)) with \(pairs) of "
                    + "\(mirror.minRequests) mirrored requests compared (too little GET and HEAD traffic, or a metrics source without mirrored "
                    + "pairs); no verdict from it, the steps judge on", action: "mirror")
                return true
            }
            guard elapsed >= Double(mirror.duration), pairs >= mirror.minRequests else {
                state.holdReason = "mirror phase (no user on the canary yet): \(pairs) of \(mirror.minRequests) mirrored requests compared, "
                    + "\(formatDuration(Int(max(0, elapsed)))) of \(formatDuration(mirror.duration))"
                return false
            }
            // Not while the evidence leans against the canary (its mirror e-value past √(1/α), halfway to a rollback
            // in log terms): the copies go on until the test rolls it back or the evidence evens out, or maxDuration.
            // When to stop the mirror test is a stopping time; the rollout's α is untouched.
            let eValue = CanaryJudge.format(exp(min(test.logE, 690)))
            let leaning = test.logE > -0.5 * log(state.evidence.alpha)
            if leaning, elapsed < Double(mirror.maxDuration) {
                state.holdReason = "mirror phase (no user on the canary yet): \(test.summary); mirroring on until the evidence settles (mirror e-value \(eValue))"
                return false
            }
            state.mirrorPassedAt = now
            if leaning {
                say(&state, "canary \(state.release): the mirror phase ends after \(formatDuration(mirror.maxDuration)) with its evidence leaning "
                    + "against the canary (\(test.summary); mirror e-value \(eValue), below a rollback); the steps judge on, the e-value with them", action: "mirror")
            } else {
                say(&state, "canary \(state.release) passed its mirror phase: \(pairs) mirrored requests compared with stable's answers "
                    + "(\(test.canaryOnlyFailures) failed only on the canary, \(test.stableOnlyFailures) only on stable; mirror e-value \(eValue)); "
                    + "its first users come with the first step", action: "mirror")
            }
            return true
        }

        /// The rollout `state` has passed its step: it lasted the policy's minimum and has a
        /// passing verdict made after the step began. The same test for a platform's other
        /// services, read from their stored rollouts.
        static func stepPassed(_ state: RolloutState, policy: RolloutPolicy, now: Date) -> Bool {
            guard state.phase.isActive, state.phase != .verifying, !state.manual, state.step >= 0, let started = state.stepStartedAt,
                  now.timeIntervalSince(started) >= Double(policy.stepMinimum),
                  let verdict = state.lastVerdict, verdict.outcome == .pass, let at = state.lastVerdictAt, at > started,
                  state.stepWebSockets?.problem(now: now, quiet: policy.stepMinimum) == nil else { return false }
            return true
        }

        /// Why this service of a platform release may not move yet although it could on its
        /// own: the services advance together, so each waits until every other one has passed
        /// the same step (or moved on already). A service rolled back under `rollback: alone`,
        /// or replaced by a newer release of its own, is no longer waited for. Nil: it may move.
        func platformWaiting(_ state: RolloutState) -> String? {
            guard let platform = input.platform else { return nil }
            let step = state.step
            var waiting: [String] = []
            for peer in platform.peers where !peer.left && !peer.rolledBack && !peer.promoted {
                let name = "\(peer.service) \(peer.release)"
                guard let other = peer.rollout, other.release.number == peer.release.number else {
                    waiting.append("\(name) to start its rollout")
                    continue
                }
                if other.step > step { continue }
                if other.step < step {
                    waiting.append("\(name) to reach step \(step + 1) (it is at step \(other.step + 1))")
                } else if other.manual {
                    waiting.append("\(name), which a human pinned (manual mode)")
                } else if other.phase == .verifying {
                    waiting.append("\(name) to pass its smoke checks")
                } else if step >= 0, !Self.stepPassed(other, policy: policy, now: now) {
                    waiting.append("\(name) to pass step \(step + 1) of \(policy.steps.count)")
                } else if other.waitingForPlatform != true {
                    // It passed, but may not move on its own account (its announcement, the window,
                    // its platform's split, its policy): it says so when it waits only for the others.
                    let why = other.holdReason.map { " (\($0))" } ?? ""
                    waiting.append("\(name) to be free to \(step < 0 ? "start" : "move")\(why)")
                }
            }
            guard !waiting.isEmpty else { return nil }
            return "platform release \(platform.label) advances together: waiting for \(waiting.joined(separator: ", "))"
        }

        /// Why the release may not start in this window under a policy with `announce`: it
        /// was not announced, or not that long before the window opened. Nil when it may (or a
        /// human let it start without).
        func announcementProblem(_ state: RolloutState) -> String? {
            guard let lead = policy.announce, state.announceOverride == nil else { return nil }
            let zone = policy.window.timeZone
            guard let announcement = input.announcement, announcement.release == state.release.number else {
                return "release \(state.release.number) was not announced; this policy starts a release in a promotion window that opens "
                    + "at least \(formatDuration(lead)) after it is (grayscale release announce)"
            }
            let earliest = announcement.at.addingTimeInterval(Double(lead))
            let opened = policy.window.opening(of: now) ?? now
            guard earliest > opened else { return nil }
            let next = policy.window.nextOpening(atOrAfter: earliest).map { PromotionWindow.format($0, in: zone) } ?? "never"
            let when = announcement.at >= opened ? "after this window opened" : "less than \(formatDuration(lead)) before this window opened"
            return "release \(state.release.number) was announced \(PromotionWindow.format(announcement.at, in: zone)), \(when); "
                + "it starts in the window opening \(next)"
        }

        /// When an announced release gets its first users: the channel is reminded of the announcement.
        mutating func remindOfAnnouncement(_ state: RolloutState) {
            guard let announcement = input.announcement, announcement.release == state.release.number else { return }
            transition.notifications.append("\(service): reminder: release \(state.release), announced by \(announcement.actor) "
                + "\(PromotionWindow.format(announcement.at, in: policy.window.timeZone)), starts now")
        }

        /// Holds the rollout; says so once when it starts holding for this reason.
        mutating func hold(_ state: inout RolloutState, _ reason: String, quietly: Bool = false) {
            let changed = state.phase != .holding || state.holdReason != reason
            state.phase = .holding
            state.holdReason = reason
            if changed, !quietly { transition.notifications.append("\(service): canary \(state.release) holds at \(currentRange.map { "\($0), " } ?? "")\(formatHundredths(currentRange?.widthHundredths ?? 0))%: \(reason)") }
        }

        /// The canary's range as this tick leaves it: a change made in this tick (a human's
        /// `-g -p`, a step) wins over the split read before it.
        var currentRange: CanaryRange? {
            for change in transition.splitChanges.reversed() {
                switch change {
                case .canary(let range, _, _): return range
                case .rollBack, .promote: return nil
                case .rules, .mirror, .webSocketDrain: continue
                }
            }
            return input.service.split?.canary?.range
        }

        mutating func applyStep(_ state: inout RolloutState, reason: String, actor: String = Reconciler.actor, command: String? = nil) {
            let width = policy.width(ofStep: state.step)
            if let split = input.service.split, policy.routesLists,
               Set(split.allowList) != Set(policy.allowList) || Set(split.denyList) != Set(policy.denyList) || split.optInAllowed != policy.optIn {
                transition.splitChanges.append(.rules(allowList: policy.allowList, denyList: policy.denyList, optIn: policy.optIn))
            }
            let range = try! CanaryRange.prefix(hundredths: width)
            let weight: Int
            switch policy.nonAuthWeight {
            case .followsStep: weight = width
            case .fixed(let fixed): weight = fixed
            }
            startStep(&state)
            transition.splitChanges.append(.canary(range, nonAuthWeight: weight, reason: reason))
            say(&state, "canary \(state.release) now at \(formatHundredths(width))% of users (step \(state.step + 1) of \(policy.steps.count); \(reason))",
                action: "step", actor: actor, command: command, movesTraffic: true)
        }

        func startStep(_ state: inout RolloutState) {
            state.stepStartedAt = now
            state.stepRequests = 0
            state.stepWebSockets = nil
            state.evidence.startStep(last: state.step == policy.steps.count - 1, at: now)
        }

        mutating func end(_ state: inout RolloutState, _ phase: RolloutState.Phase, _ change: Transition.SplitChange, actor: String = Reconciler.actor,
                          command: String? = nil) {
            state.phase = phase
            state.holdReason = nil
            state.updatedAt = now
            transition.splitChanges.append(change)
            let text: String
            switch change {
            case .rollBack(let reason): text = "rolled back canary \(state.release): \(reason); all traffic on stable"
            case .promote(let reason): text = "promoted \(state.release) to stable: \(reason)"
            case .canary, .rules, .mirror, .webSocketDrain: text = "rollout ended"
            }
            say(&state, text, action: phase == .promoted ? "promote" : "rollback", actor: actor, command: command, movesTraffic: true)
            rollout = state
        }

        mutating func say(_ state: inout RolloutState, _ text: String, action: String, actor: String = Reconciler.actor,
                          command: String? = nil, movesTraffic: Bool = false) {
            transition.audit.append(.init(action: action, actor: actor, detail: text, refused: false, command: command, movesTraffic: movesTraffic))
            transition.notifications.append("\(service): \(text)")
        }
    }
}
