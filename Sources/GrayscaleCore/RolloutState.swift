import Foundation

/// Where the rollout of one canary release stands. Stored after every tick.
public struct RolloutState: Codable, Hashable, Sendable {
    public enum Phase: String, Codable, Hashable, Sendable {
        /// Smoke checks run against the release's upstream; no user sees it yet.
        case verifying
        /// Moving through the policy's steps.
        case progressing
        /// Not advancing: outside the promotion window, or pinned by a human.
        case holding
        case promoted
        case rolledBack
        case superseded

        public var isActive: Bool { self == .verifying || self == .progressing || self == .holding }
    }

    public var service: String
    public var release: ReleaseRef
    public var phase: Phase
    /// Index into the policy's steps; -1 before the first step.
    public var step: Int
    public var stepStartedAt: Date?
    /// Pinned by a human: no automatic advance until resumed; automatic rollback stays armed.
    public var manual: Bool
    /// Why the rollout is not advancing, when it is not.
    public var holdReason: String?
    /// The tests' state and every failing unit they have counted: what the next verdict builds on.
    public var evidence: CanaryEvidence
    /// Where the evidence read so far ends: the next observation starts here. Kept with
    /// the rollout and committed with the tick that used the evidence, so a tick that is
    /// not committed (a lost compare-and-swap, a crash) reads the same span again and a
    /// committed one never does.
    public var observedUntil: Date?
    /// Where the first span of evidence began, how far evidence has been counted (a
    /// high-water mark that never goes back, even when the clock does), and how many
    /// seconds of spans were counted: `evidenceFrom + evidenceSeconds == evidenceUntil`
    /// unless a span was skipped (the chaos suite checks it after every fault). A span
    /// read again below the mark counts only who failed (see `failuresOnly`).
    public var evidenceFrom: Date?
    public var evidenceUntil: Date?
    public var evidenceSeconds: Double?
    /// Canary requests since the current step began.
    public var stepRequests: Int
    public var metricsFailures: Int
    public var lastVerdict: Verdict?
    public var lastVerdictAt: Date?
    /// The last verdict written to the verdict history, and when: evidence arrives every
    /// second, the history keeps a change of outcome or one verdict per analysis interval.
    public var recordedOutcome: Verdict.Outcome?
    public var recordedAt: Date?
    /// The split revision this rollout last wrote or accepted; another revision means a human changed it.
    public var knownSplitRevision: Int
    public var startedAt: Date
    public var updatedAt: Date
    /// Why a human let this release start without the announcement its policy asks for.
    public var announceOverride: String?
    /// Held only because the other services of its platform release have not passed the
    /// step yet (its own gates and evidence let it move): what those services wait for.
    public var waitingForPlatform: Bool?
    /// When the mirror phase began (its copies started) and when it passed; nil before,
    /// and for a policy without one.
    public var mirrorStartedAt: Date?
    public var mirrorPassedAt: Date?
    /// The step's WebSockets, by version: a canary whose sockets drop more often holds the step.
    public var stepWebSockets: WebSocketTally?

    public init(service: String, release: ReleaseRef, phase: Phase, evidence: CanaryEvidence, splitRevision: Int, now: Date) {
        self.service = service
        self.release = release
        self.phase = phase
        step = -1
        stepStartedAt = nil
        manual = false
        holdReason = nil
        self.evidence = evidence
        stepRequests = 0
        metricsFailures = 0
        lastVerdict = nil
        lastVerdictAt = nil
        knownSplitRevision = splitRevision
        startedAt = now
        updatedAt = now
    }
}

/// An order from a human (bot, CLI, admin API) for the controller.
public struct HumanCommand: Codable, Hashable, Sendable {
    public enum Kind: Codable, Hashable, Sendable {
        /// `-c`: start the rollout from the policy's first step, automatic.
        case initialize
        /// `-g -p …`: pin this range (manual mode).
        case setRange(CanaryRange, nonAuthWeight: Int?)
        case pause
        case resume
        /// `-r`: everything back to stable.
        case rollback
        /// `-f`: the canary becomes stable; refused over failing verdicts unless forced.
        case finish(force: Bool)
        /// Start this release without the announcement its policy asks for (audited with the reason);
        /// refused when the canary is another release by then.
        case overrideAnnouncement(release: Int, reason: String)
    }

    public var kind: Kind
    public var actor: String
    public var text: String?
    /// Names this command across retries (Slack's trigger or event id, the API's
    /// `Idempotency-Key`, the CLI's `--command-id`): a retry gets the first answer and
    /// changes nothing.
    public var id: String?
    /// The canary release the sender meant (the bot's `-m platform` sets it): refused when
    /// the canary is another one by the time the command runs.
    public var release: Int?

    public init(_ kind: Kind, actor: String, text: String? = nil, id: String? = nil, release: Int? = nil) {
        self.release = release
        self.kind = kind
        self.actor = actor
        self.text = text
        self.id = id
    }
}

extension HumanCommand.Kind {
    /// The audit trail's name for the command, as the bot and the CLI write it.
    public var auditName: String {
        switch self {
        case .initialize: return "init"
        case .setRange: return "set-traffic"
        case .pause: return "pause"
        case .resume: return "resume"
        case .rollback: return "rollback"
        case .finish: return "finish"
        case .overrideAnnouncement: return "announce-override"
        }
    }
}

/// Whether a metrics source answered for the interval.
public enum ObservationResult: Hashable, Sendable {
    case observed(IntervalObservation)
    case unavailable(String)
}

/// Results of the smoke checks of a release, run while its rollout is `verifying`.
public struct SmokeOutcome: Codable, Hashable, Sendable {
    public struct Check: Codable, Hashable, Sendable {
        public var name: String
        public var passed: Bool
        public var detail: String

        public init(name: String, passed: Bool, detail: String) {
            self.name = name
            self.passed = passed
            self.detail = detail
        }
    }

    public var release: Int
    public var checks: [Check]

    public init(release: Int, checks: [Check]) {
        self.release = release
        self.checks = checks
    }
}

/// What a human's command came to: the split and rollout right after it, and why it was
/// refused if it was. Stored with the command's id, so a retry gets this same answer.
public struct CommandResult: Codable, Hashable, Sendable {
    public var split: TrafficSplit?
    public var rollout: RolloutState?
    public var refusal: String?

    public init(split: TrafficSplit?, rollout: RolloutState?, refusal: String?) {
        self.split = split
        self.rollout = rollout
        self.refusal = refusal
    }
}
