import Foundation
import GrayscaleCore
import GrayscaleStore

/// `grayscale rollout status --watch`: the rollout redrawn as it changes, until it ends.
/// What one frame shows is a pure function of what the database holds and the time.
struct RolloutWatch {
    /// How a watch ended, as its exit status says it.
    enum Ending: Int32, Equatable {
        case promoted = 0
        case rolledBack = 3
        case superseded = 4

        var text: String {
            switch self {
            case .promoted: return "promoted"
            case .rolledBack: return "rolled back"
            case .superseded: return "superseded"
            }
        }
    }

    /// What one frame is drawn from.
    struct Frame {
        var service: String
        /// The service's stored rollout: the latest one, which may be another release's.
        var rollout: RolloutState?
        var split: TrafficSplit?
        var releases: [Release]
        var verdicts: [VerdictRecord]
        var audit: [AuditEntry]
        /// The release the watch follows: the canary when it started, or the first one published after.
        var following: ReleaseRef?
        /// Set while the database cannot be read: the frame is the last one read, and why.
        var unreadable: String?

        /// The followed release's rollout, once the controller has started it.
        var followed: RolloutState? { rollout.flatMap { $0.release == following ? $0 : nil } }
    }

    /// How the rollout of the followed release ended, or nil while it goes on (or has not started).
    static func ending(of frame: Frame) -> Ending? {
        guard let following = frame.following else { return nil }
        if let rollout = frame.followed {
            switch rollout.phase {
            case .promoted: return .promoted
            case .rolledBack: return .rolledBack
            case .superseded: return .superseded
            case .verifying, .progressing, .holding: return nil
            }
        }
        // Its rollout row was replaced by a newer release's (or never written): its status says how it ended.
        switch frame.releases.first(where: { $0.number == following.number })?.status {
        case .stable?: return .promoted
        case .rolledBack?: return .rolledBack
        case .superseded?, .retired?: return .superseded
        case .canary?, nil: return nil
        }
    }

    /// The frame's lines (no time in them, so an unchanged rollout draws the same frame).
    static func lines(_ frame: Frame) -> [String] {
        var lines: [String] = []
        if let problem = frame.unreadable { lines.append("The database cannot be read (\(problem)); retrying") }
        guard let following = frame.following else {
            return lines + ["\(frame.service): no canary; waiting for one to be published"]
        }
        let ending = ending(of: frame)
        guard let rollout = frame.followed else {
            if let ending { return lines + ["\(frame.service): canary \(following)", "Rollout ended: \(ending.text)"] }
            return lines + ["\(frame.service): canary \(following) published; waiting for the controller to start its rollout"]
        }
        lines.append("\(frame.service): canary \(rollout.release), \(phaseText(rollout.phase)), step \(rollout.step + 1)\(rollout.manual ? " (manual)" : "")")
        if let split = frame.split {
            lines += split.statusLines.map { "  " + $0 }
        }
        lines.append("Judge: " + judgeLine(rollout))
        if let verdict = rollout.lastVerdict {
            lines.append("Last verdict: \(verdict.outcome.rawValue)\(verdict.critical ? " (critical)" : ""): \(verdict.reason)")
        }
        let events = (frame.verdicts.map { (at: $0.at, text: "verdict \($0.outcome): \($0.reason)") }
            + frame.audit.map { (at: $0.at, text: "\($0.actor) \($0.command ?? $0.action): \($0.outcome)\($0.detail.map { " (\($0))" } ?? "")") })
            .sorted { $0.at > $1.at }.prefix(6)
        if !events.isEmpty {
            lines.append("Recent:")
            lines += events.map { event in
                let line = "  \(clock(event.at))  \(event.text)"
                return line.count > 150 ? line.prefix(149) + "…" : line
            }
        }
        if let ending { lines.append("Rollout ended: \(ending.text)") }
        return lines
    }

    /// What the judge waits for before its next decision.
    static func judgeLine(_ rollout: RolloutState) -> String {
        if !rollout.phase.isActive { return "done" }
        if rollout.manual { return "nothing: manual mode (resume to let it advance)" }
        if let reason = rollout.holdReason { return "holding: \(reason)" }
        if rollout.phase == .verifying { return "the smoke checks of the new release" }
        let evidence = "e-value \(String(format: "%.2f", rollout.evidence.eValue)) (rolls back at 1/α)"
        if let verdict = rollout.lastVerdict, verdict.outcome == .inconclusive { return "more evidence: \(verdict.reason); \(evidence)" }
        return "the step's time and traffic, then a verdict; \(evidence)"
    }

    static func phaseText(_ phase: RolloutState.Phase) -> String {
        switch phase {
        case .rolledBack: return "rolled back"
        default: return phase.rawValue
        }
    }

    static func clock(_ date: Date) -> String {
        String(date.formatted(.iso8601).dropFirst(11))  // 2026-12-07T09:30:00Z → 09:30:00Z
    }

    /// Reads a frame from the database; an unknown service is an error.
    static func read(_ database: GrayscaleDatabase, service: String, following: ReleaseRef?) throws -> Frame {
        let state = try database.serviceState(service)
        let following = following ?? state.canary?.ref
        return Frame(service: service, rollout: try database.rolloutState(service), split: state.split, releases: state.releases,
                     verdicts: try following.map { try database.verdicts(service, release: $0.number, limit: 6) } ?? [],
                     audit: try database.auditLog(service: service, limit: 6), following: following)
    }

    /// Redraws whenever the frame changes, every `interval`, until the rollout ends; returns how.
    /// On a terminal each frame replaces the last; otherwise frames are printed one after another.
    /// A database that cannot be read is said and read again (30 times in a row at most).
    static func run(_ database: GrayscaleDatabase, service: String, interval: Double, terminal: Bool,
                    write: (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }) async throws -> Ending {
        var frame = try read(database, service: service, following: nil)
        var drawn: [String]?
        var failures = 0
        while true {
            let lines = lines(frame)
            if lines != drawn {
                let header = "Every \(String(format: "%g", interval))s: grayscale rollout status --service \(service) --watch    \(clock(Date()))"
                write((terminal ? "\u{1B}[H\u{1B}[2J" : drawn == nil ? "" : "\n") + ([header, ""] + lines).joined(separator: "\n") + "\n")
                drawn = lines
            }
            if let ending = ending(of: frame) { return ending }
            try await Task.sleep(for: .seconds(interval))
            do {
                frame = try read(database, service: service, following: frame.following)
                failures = 0
            } catch {
                failures += 1
                if failures >= 30 { throw error }
                frame.unreadable = "\(error)"
            }
        }
    }
}
