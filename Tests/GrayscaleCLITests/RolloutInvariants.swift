import Foundation
import GrayscaleCore
import GrayscaleStore

/// What must hold for the engine service after any fault, whichever store and however
/// many controllers: the chaos suites check it after every round.
enum RolloutInvariants {
    enum Broken {
        /// The split history has a gap, or a canary's share moved other than one step up.
        case split
        /// A decision under an older lease token than one before it.
        case token
        /// Evidence between the first and the last span that was never counted.
        case evidenceSkipped
        /// The cursor behind what was counted: the next read would count it again.
        case evidenceTwice
    }

    /// Everything broken now, with what was seen. `widths` are the policy's steps (in
    /// hundredths of a percent); `releases` the release numbers whose verdicts to read.
    static func check(_ database: GrayscaleDatabase, widths: [Int], releases: ClosedRange<Int>) throws -> [(Broken, String)] {
        var found: [(Broken, String)] = []
        // The split and its history from the same moment: read again if a controller committed in between.
        var split = try database.split("engine")
        var history = try database.splitHistory("engine")
        for _ in 0..<10 {
            let after = try database.split("engine")
            if after == split { break }
            split = after
            history = try database.splitHistory("engine")
        }
        if history.map(\.revision) != Array(1...history.count) || history.last?.split != split {
            found.append((.split, "the split history has gaps or does not end at the split"))
        }
        // Within each canary's rollout its share only grows by one step at a time, until it ends.
        var byRelease: [Int: [Int]] = [:]
        for change in history {
            guard let canary = change.split.canary else { continue }
            byRelease[canary.release.number, default: []].append(change.split.range.widthHundredths)
        }
        for (release, shares) in byRelease {
            let steps = shares.filter { $0 > 0 }
            for width in steps where !widths.contains(width) {
                found.append((.split, "release \(release) at \(width), not a step"))
            }
            for (before, after) in zip(steps, steps.dropFirst()) {
                guard let b = widths.firstIndex(of: before), let a = widths.firstIndex(of: after) else { continue }
                if a < b || a > b + 1 { found.append((.split, "release \(release) went from \(before) to \(after)")) }
            }
        }
        // Decisions carry the lease token they were made under: it never goes back.
        var verdicts: [VerdictRecord] = []
        for release in releases { verdicts += try database.verdicts("engine", release: release, limit: 100_000) }
        let tokens = verdicts.sorted { $0.id! < $1.id! }.map { $0.leaseToken ?? 0 }
        for (before, after) in zip(tokens, tokens.dropFirst()) where after < before {
            found.append((.token, "a decision under token \(after) after one under \(before)"))
        }
        // Every span of evidence read once and none skipped: the spans counted add up to the
        // high-water mark, and the cursor never fell behind it (the clock does not move here).
        if let rollout = try database.rolloutState("engine"), let from = rollout.evidenceFrom, let until = rollout.evidenceUntil {
            let counted = rollout.evidenceSeconds ?? 0
            if abs(from.addingTimeInterval(counted).timeIntervalSince(until)) > 0.001 {
                found.append((.evidenceSkipped, "\(counted) s of evidence counted between \(from) and \(until)"))
            }
            if rollout.observedUntil != until {
                found.append((.evidenceTwice, "the cursor \(String(describing: rollout.observedUntil)) is behind what was counted (\(until))"))
            }
        }
        return found
    }
}
