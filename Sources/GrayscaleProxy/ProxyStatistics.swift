import Foundation
import GrayscaleCore
import Histogram
import Synchronization

/// Why a request counts as an error of the version it was routed to.
public enum ErrorClass: String, Codable, CaseIterable, Sendable {
    /// The upstream answered 5xx.
    case upstream5xx
    /// The upstream refused or reset the connection (the proxy answered 502).
    case connectFailure
    /// The upstream did not answer in time (the proxy answered 504).
    case timeout
    /// The proxy refused the request itself (413): counted apart, not a server error.
    case rejected
    /// A WebSocket upgrade the upstream did not switch (any answer but 101).
    case upgradeFailed
    /// A WebSocket the upstream dropped without a close frame (1006), while the client was there:
    /// counted apart (not in `errors`, not evidence for the judge: drops come in bursts).
    case webSocketDropped
}

/// What happened to one request, as the statistics and the access log record it.
public struct RequestOutcome: Sendable {
    public var service: String
    public var release: ReleaseRef
    public var appId: String?
    public var status: Int
    public var errorClass: ErrorClass?
    public var latencyMicros: UInt64
    public var at: Date
    /// The randomized unit (user or sticky anonymous client) and the split it was routed by;
    /// nil for traffic that was not randomized (lists, opt-in), which is never evidence.
    public var unit: UnitEvent?

    public init(service: String, release: ReleaseRef, appId: String?, status: Int, errorClass: ErrorClass?, latencyMicros: UInt64, at: Date,
                unit: UnitEvent? = nil) {
        self.unit = unit
        self.service = service
        self.release = release
        self.appId = appId
        self.status = status
        self.errorClass = errorClass
        self.latencyMicros = latencyMicros
        self.at = at
    }
}

/// Per service and release, per fixed window: requests, errors by class, a latency
/// histogram (microseconds) and the distinct users that saw an error. What the
/// controller polls, in-process or as JSON at `GET /stats`.
public final class ProxyStatistics: Sendable {
    public let windowSeconds: Int
    public let retainedWindows: Int
    private let series = Mutex<[SeriesKey: Series]>([:])
    /// Per service, the units that have sent a request under its current split.
    private let firstRequests = Mutex<[String: FirstRequests]>([:])
    /// Units whose first request under the split is still unanswered, with the failures of
    /// their later requests held back until it is (see `record`).
    private let pendingFirst = Mutex<[PendingKey: PendingFirst]>([:])
    /// How long a first request may stay unanswered before what waits behind it is recorded anyway.
    public let firstRequestPatience: TimeInterval

    struct PendingKey: Hashable {
        var service: String
        var unit: String
    }

    struct PendingFirst {
        var since: Date
        var held: [RequestOutcome] = []
    }

    struct SeriesKey: Hashable {
        var service: String
        var release: Int
    }

    struct Series {
        var label: String
        var windows: [Window] = []
    }

    struct Window {
        var start: Int
        var requests = 0
        var errors: [Int] = Array(repeating: 0, count: ErrorClass.allCases.count)
        var latency = Histogram<UInt32>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .two)
        var affectedUsers: Set<String> = []
        var anonymousErrors = 0
        /// WebSocket upgrades answered 101.
        var webSocketsOpened = 0
        /// Randomized traffic, for the judge; one failure per unit, its earliest
        /// (`failedUnits`: where each unit's failure is in `evidence.failures`).
        var evidence = VersionEvidence()
        var failedUnits: [String: Int] = [:]

        init(start: Int) { self.start = start }
    }

    public init(windowSeconds: Int = 10, retainedWindows: Int = 360, firstRequestPatience: TimeInterval = 60) {
        precondition(windowSeconds > 0 && retainedWindows > 0)
        self.windowSeconds = windowSeconds
        self.retainedWindows = retainedWindows
        self.firstRequestPatience = firstRequestPatience
    }

    /// Whether this is `unit`'s first request to `service` under `split` (`UnitEvent.fresh`);
    /// asked once per randomized request, as it arrives (`at`). `newUnit`: a unit that did not
    /// exist before this request (an anonymous client's new draw) is first without being
    /// remembered, so clients that never keep their cookie do not fill the set.
    public func isFirstRequest(_ unit: String, service: String, split: TrafficSplit, newUnit: Bool = false, at: Date) -> Bool {
        let key = FirstRequests.Split(split)
        let first = newUnit || firstRequests.withLock { $0[service, default: FirstRequests()].isFirst(unit, under: key, revision: split.revision) }
        if first {
            // A first request under an older split still unanswered: what it held back is recorded now, not dropped.
            let earlier = pendingFirst.withLock { $0.updateValue(PendingFirst(since: at), forKey: PendingKey(service: service, unit: unit)) }
            recordNow(earlier?.held ?? [], at: at)
        }
        return first
    }

    /// A unit's first request ended without an outcome to record (its client went away):
    /// what waited behind it is recorded now.
    public func firstRequestAbandoned(_ unit: String, service: String, at: Date) {
        recordNow(pendingFirst.withLock { $0.removeValue(forKey: PendingKey(service: service, unit: unit))?.held ?? [] }, at: at)
    }

    /// Records one request's outcome.
    ///
    /// A unit's failures reach the judge in the order they arrived, not the order they were
    /// answered: while a unit's first request under the split is unanswered, the failures
    /// of its later requests are held back and recorded when it is answered (or after
    /// `firstRequestPatience`). Otherwise a quick failing retry behind a slow first request
    /// would be read first, reveal the unit's version, and leave the first request's
    /// failure (the one `UnitEvent.fresh` marks) without weight; how often that happens
    /// depends on each version's latency, which would tilt the judge's first-request bets.
    public func record(_ outcome: RequestOutcome) {
        guard let unit = outcome.unit else { return recordNow(outcome, at: outcome.at) }
        let key = PendingKey(service: outcome.service, unit: unit.unit)
        if unit.fresh {
            let held = pendingFirst.withLock { $0.removeValue(forKey: key)?.held ?? [] }
            return recordNow([outcome] + held, at: outcome.at)
        }
        // Only a failure can wait: a success takes no lock here.
        guard outcome.errorClass.map({ $0 != .rejected }) ?? false else { return recordNow(outcome, at: outcome.at) }
        let released: [RequestOutcome]? = pendingFirst.withLock { pending in
            guard let first = pending[key] else { return [] }
            guard outcome.at.timeIntervalSince(first.since) < firstRequestPatience else {
                return pending.removeValue(forKey: key)?.held ?? []
            }
            pending[key]!.held.append(outcome)
            return nil  // held back
        }
        if let released { recordNow(released + [outcome], at: outcome.at) }
    }

    /// First requests unanswered for longer than `firstRequestPatience` (an upgraded
    /// connection, an exchange that never ended) stop holding their unit's failures back.
    func releaseStalePending(at now: Date) {
        let stale: [RequestOutcome] = pendingFirst.withLock { pending in
            let old = pending.filter { now.timeIntervalSince($0.value.since) >= firstRequestPatience }
            for key in old.keys { pending[key] = nil }
            return old.values.flatMap(\.held)
        }
        recordNow(stale, at: now)
    }

    private func recordNow(_ outcomes: [RequestOutcome], at: Date) {
        for outcome in outcomes { recordNow(outcome, at: at) }
    }

    /// Records `outcome` in the window of `at` (its answer's time, or later when it was held
    /// back), its failure dated by its arrival.
    private func recordNow(_ outcome: RequestOutcome, at: Date) {
        var outcome = outcome
        if var unit = outcome.unit, unit.at == 0 {
            unit.at = outcome.at.timeIntervalSince1970 - Double(outcome.latencyMicros) / 1_000_000
            outcome.unit = unit
        }
        outcome.at = at
        let second = Int(outcome.at.timeIntervalSince1970.rounded(.down))
        let start = second - second % windowSeconds
        let key = SeriesKey(service: outcome.service, release: outcome.release.number)
        series.withLock { all in
            all[key, default: Series(label: outcome.release.label)].record(outcome, windowStart: start, keep: retainedWindows * windowSeconds)
        }
    }

    /// One mirrored request compared (`MirrorPairs`): kept with the canary's evidence, in
    /// the window of `at` (when the later of the two answers came). Never a request, a
    /// latency sample or an affected user of the canary: no user saw its answer.
    public func recordMirror(service: String, canary: ReleaseRef, at: Date, pairs: MirrorPairs) {
        let second = Int(at.timeIntervalSince1970.rounded(.down))
        let start = second - second % windowSeconds
        series.withLock { all in
            all[SeriesKey(service: service, release: canary.number), default: Series(label: canary.label)]
                .update(windowStart: start, keep: retainedWindows * windowSeconds) { window in
                    var merged = window.evidence.mirror ?? MirrorPairs()
                    merged.merge(pairs)
                    window.evidence.mirror = merged
                }
        }
    }

    /// Every version's windows that end after `since` (all retained ones when nil),
    /// and their totals over those windows.
    public func snapshot(since: Date? = nil, now: Date = Date()) -> StatisticsSnapshot {
        releaseStalePending(at: now)
        // Clamped: a time far outside Int's seconds (since=1e19) must not trap.
        let from = since.map { Int(max(-1e15, min(1e15, $0.timeIntervalSince1970)).rounded(.down)) } ?? Int.min
        let versions = series.withLock { all in
            all.map { key, series in
                let windows = series.windows.filter { $0.start + windowSeconds > from }
                return VersionStatistics(service: key.service, release: key.release, label: series.label,
                                         totals: Self.merge(windows, start: windows.first?.start ?? 0),
                                         windows: windows.map { Self.merge([$0], start: $0.start) })
            }
        }
        return StatisticsSnapshot(windowSeconds: windowSeconds,
                                  versions: versions.sorted { ($0.service, $0.release) < ($1.service, $1.release) })
    }

    /// One release over the complete windows that start at or after `from` and end by
    /// `to`: what the controller judges. Also returns where the covered span ends, the
    /// `from` of the next call (so no window is counted twice).
    public func observation(service: String, release: Int, from: Date, to: Date) -> (VersionObservation, covered: Date) {
        releaseStalePending(at: to)
        let start = Int(from.timeIntervalSince1970.rounded(.up)), end = Int(to.timeIntervalSince1970.rounded(.down))
        let coveredEnd = max(start, end - end % windowSeconds)
        let windows = series.withLock { all in
            (all[SeriesKey(service: service, release: release)]?.windows ?? []).filter {
                $0.start >= start && $0.start + windowSeconds <= coveredEnd
            }
        }
        let merged = Self.merge(windows, start: windows.first?.start ?? start)
        let observation = VersionObservation(
            requests: merged.requests, errors: merged.errors, evidence: merged.evidence ?? VersionEvidence(),
            p50Ms: merged.requests > 0 ? merged.latencyMs.p50 : nil, p99Ms: merged.requests > 0 ? merged.latencyMs.p99 : nil,
            webSocketsOpened: merged.webSocketsOpened ?? 0, webSocketsDropped: merged.errorsByClass[ErrorClass.webSocketDropped.rawValue] ?? 0)
        return (observation, Date(timeIntervalSince1970: TimeInterval(coveredEnd)))
    }

    static func merge(_ windows: [Window], start: Int) -> WindowStatistics {
        var latency = Histogram<UInt32>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .two)
        var errors = [Int](repeating: 0, count: ErrorClass.allCases.count)
        var users: Set<String> = []
        var requests = 0, anonymousErrors = 0, webSocketsOpened = 0
        var evidence = VersionEvidence()
        for window in windows {
            evidence.merge(window.evidence)
            requests += window.requests
            webSocketsOpened += window.webSocketsOpened
            for index in errors.indices { errors[index] += window.errors[index] }
            latency.add(window.latency)
            users.formUnion(window.affectedUsers)
            anonymousErrors += window.anonymousErrors
        }
        var byClass: [String: Int] = [:]
        for (index, errorClass) in ErrorClass.allCases.enumerated() { byClass[errorClass.rawValue] = errors[index] }
        let apart: Set<Int> = [ErrorClass.allCases.firstIndex(of: .rejected)!, ErrorClass.allCases.firstIndex(of: .webSocketDropped)!]
        func millis(_ percentile: Double) -> Double {
            latency.totalCount == 0 ? 0 : Double(latency.valueAtPercentile(percentile)) / 1000
        }
        return WindowStatistics(
            start: Date(timeIntervalSince1970: TimeInterval(start)),
            requests: requests,
            errors: errors.enumerated().filter { !apart.contains($0.offset) }.reduce(0) { $0 + $1.element },
            errorsByClass: byClass,
            affectedUsers: users.count,
            affectedUserIds: users.sorted(),
            anonymousErrors: anonymousErrors,
            webSocketsOpened: webSocketsOpened,
            evidence: evidence,
            latencyMs: LatencySummary(p50: millis(50), p90: millis(90), p99: millis(99),
                                      max: latency.totalCount == 0 ? 0 : Double(latency.max) / 1000)
        )
    }
}

extension ProxyStatistics.Series {
    mutating func record(_ outcome: RequestOutcome, windowStart: Int, keep seconds: Int) {
        update(windowStart: windowStart, keep: seconds) { $0.add(outcome) }
    }

    /// Changes the window that starts at `windowStart`, made if it is the newest.
    mutating func update(windowStart: Int, keep seconds: Int, _ change: (inout ProxyStatistics.Window) -> Void) {
        if let last = windows.last, windowStart < last.start {
            // A request that finished on another thread just before the window turned.
            guard let index = windows.lastIndex(where: { $0.start == windowStart }) else { return }
            change(&windows[index])
            return
        }
        if windows.last?.start != windowStart {
            windows.append(ProxyStatistics.Window(start: windowStart))
            let oldest = windowStart - seconds
            if let firstKept = windows.firstIndex(where: { $0.start > oldest }), firstKept > 0 {
                windows.removeFirst(firstKept)
            }
        }
        change(&windows[windows.count - 1])
    }
}

extension ProxyStatistics.Window {
    mutating func add(_ outcome: RequestOutcome) {
        // A dropped WebSocket is how its upgrade request ended: an error, not another request,
        // and its lifetime is no latency. It carries no unit (no evidence for the judge).
        guard outcome.errorClass != .webSocketDropped else {
            errors[ErrorClass.allCases.firstIndex(of: .webSocketDropped)!] += 1
            return
        }
        requests += 1
        if outcome.status == 101 { webSocketsOpened += 1 }
        _ = latency.record(outcome.latencyMicros)
        if var unit = outcome.unit {
            let failed = outcome.errorClass.map { $0 != .rejected } ?? false
            var first: UnitEvent?
            if failed {
                // A failure is dated by the request's arrival, not its answer: the answer's
                // time adds that version's latency (a timeout is 30 s late), and the judge's
                // bets and order by time must not depend on the version. For the same
                // reason a unit keeps its earliest-arriving failure, not its first answered.
                if unit.at == 0 { unit.at = outcome.at.timeIntervalSince1970 - Double(outcome.latencyMicros) / 1_000_000 }
                if let index = failedUnits[unit.unit] {
                    if unit.at < evidence.failures[index].at { evidence.failures[index] = unit }
                } else {
                    failedUnits[unit.unit] = evidence.failures.count  // `record` appends every failure it is given
                    first = unit
                }
            }
            evidence.record(latencyMs: Double(outcome.latencyMicros) / 1000, failure: first)
        }
        guard let errorClass = outcome.errorClass else { return }
        errors[ErrorClass.allCases.firstIndex(of: errorClass)!] += 1
        guard errorClass != .rejected else { return }
        if let appId = outcome.appId {
            affectedUsers.insert(appId)
        } else {
            anonymousErrors += 1
        }
    }
}

/// `GET /stats` as JSON.
public struct StatisticsSnapshot: Codable, Sendable {
    public var windowSeconds: Int
    public var versions: [VersionStatistics]
}

public struct VersionStatistics: Codable, Sendable {
    public var service: String
    public var release: Int
    public var label: String
    /// The sum over `windows`; `affectedUsers` counts distinct users over all of them.
    public var totals: WindowStatistics
    public var windows: [WindowStatistics]
}

public struct WindowStatistics: Codable, Sendable {
    public var start: Date
    public var requests: Int
    /// Server-side errors: upstream 5xx, connect failures, timeouts and failed upgrades (not `rejected` or `webSocketDropped`).
    public var errors: Int
    public var errorsByClass: [String: Int]
    /// Distinct appIds that got at least one server-side error.
    public var affectedUsers: Int
    /// Those appIds, for the controller's per-user evidence.
    public var affectedUserIds: [String]
    /// Server-side errors of requests without an identity.
    public var anonymousErrors: Int
    /// WebSocket upgrades answered 101 (their drops are `errorsByClass.webSocketDropped`); nil from an older proxy.
    public var webSocketsOpened: Int?
    /// Randomized traffic only: what the controller judges (fleet proxies send it here);
    /// nil from a proxy older than the evidence.
    public var evidence: VersionEvidence?
    public var latencyMs: LatencySummary
}

public struct LatencySummary: Codable, Sendable {
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var max: Double
}
