/// The earliest failure of one randomized unit in a span of time: which version the
/// unit was on, and which buckets sent units to the canary when it happened.
///
/// A unit is what the hash randomized: an authenticated user (`u:<appId>`) or an
/// anonymous client that keeps its sticky cookie (`a:<client id>`). Both are placed
/// by a salted hash of their id; a unit is on the canary when its bucket lies in
/// `lower ..< upper` (for anonymous clients `0 ..< nonAuthWeight`).
public struct UnitEvent: Codable, Hashable, Sendable {
    public var unit: String
    public var canary: Bool
    public var lower: Int
    public var upper: Int
    /// When its request arrived (seconds since 1970), never when it was answered, which
    /// would add the version's latency: a unit's failures on both versions in one span are
    /// taken in time order, whatever version each was on.
    public var at: Double
    /// Whether the failing request was the unit's first under this split (its first since
    /// the canary's range or weight last changed). Whether a unit's first request fails
    /// depends on the unit and the version, never on its bucket, so the judge may count
    /// these failures apart (`OnsetTest`). Absent from older proxies' JSON: false.
    public var fresh: Bool

    public init(unit: String, canary: Bool, lower: Int, upper: Int, at: Double = 0, fresh: Bool = false) {
        self.unit = unit
        self.canary = canary
        self.lower = lower
        self.upper = upper
        self.at = at
        self.fresh = fresh
    }

    enum CodingKeys: String, CodingKey { case unit, canary, lower, upper, at, fresh }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        unit = try container.decode(String.self, forKey: .unit)
        canary = try container.decode(Bool.self, forKey: .canary)
        lower = try container.decode(Int.self, forKey: .lower)
        upper = try container.decode(Int.self, forKey: .upper)
        at = try container.decodeIfPresent(Double.self, forKey: .at) ?? 0
        fresh = try container.decodeIfPresent(Bool.self, forKey: .fresh) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(unit, forKey: .unit)
        try container.encode(canary, forKey: .canary)
        try container.encode(lower, forKey: .lower)
        try container.encode(upper, forKey: .upper)
        try container.encode(at, forKey: .at)
        if fresh { try container.encode(fresh, forKey: .fresh) }
    }
}

/// Which units have sent a request under a service's current split: a unit's first
/// request after the canary's salt, range or weight changes is "fresh" (`UnitEvent.fresh`).
/// Decided when a request arrives, in arrival order, so the answer never depends on a
/// version's latency. Past `limit` units the rest are not fresh, and a request routed by
/// an older revision than the newest seen (a thread that had not taken the new table
/// yet) is not fresh either: which units those are depends on when they arrive, never on
/// their buckets, so the judge stays valid. Units are kept as in-process hashes (a
/// collision, about 10⁻⁹ at the limit, only makes a unit not fresh).
public struct FirstRequests: Sendable {
    /// What makes a split new for this purpose.
    public struct Split: Hashable, Sendable {
        public var salt: String
        public var lower: Int
        public var upper: Int
        public var nonAuthWeight: Int

        public init(_ split: TrafficSplit) {
            salt = split.canary?.salt ?? ""
            lower = split.range.lower
            upper = split.range.upper
            nonAuthWeight = split.nonAuthWeight
        }
    }

    public let limit: Int
    private var split: Split?
    private var revision = Int.min
    private var seen: Set<Int> = []

    public init(limit: Int = CanaryEvidence.maxUnits) { self.limit = limit }

    /// Whether this is `unit`'s first request under `split` (of `revision`); records it.
    public mutating func isFirst(_ unit: String, under split: Split, revision: Int = 0) -> Bool {
        guard revision >= self.revision else { return false }
        self.revision = revision
        if split != self.split {
            self.split = split
            seen.removeAll(keepingCapacity: seen.count < 4096)
        }
        guard seen.count < limit else { return false }
        return seen.insert(unit.hashValue).inserted
    }
}

/// Latency buckets shared by the proxy, the simulator and the judge: upper bounds in
/// milliseconds, roughly logarithmic. Histograms over these add up across windows and
/// proxies; percentiles never have to be averaged.
public enum LatencyBuckets {
    public static let boundsMs: [Double] = [
        1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 150, 200, 250, 300, 400, 500, 700,
        1000, 1500, 2000, 3000, 5000, 7000, 10_000, 20_000, 60_000,
    ]
    /// Buckets: one per bound, plus one above the last.
    public static var count: Int { boundsMs.count + 1 }

    /// The bucket of a latency: the first whose bound is at least `ms`.
    @inlinable
    public static func index(ms: Double) -> Int {
        var low = 0, high = boundsMs.count
        while low < high {
            let mid = (low + high) / 2
            if boundsMs[mid] >= ms { high = mid } else { low = mid + 1 }
        }
        return low
    }

    /// The bucket of the smallest bound that is at least `ms`, or nil above every bound.
    public static func firstBound(atLeast ms: Double) -> Int? {
        let index = index(ms: ms)
        return index < boundsMs.count ? index : nil
    }
}

/// What the judge may use of one version over a span: randomized traffic only.
/// Traffic that was not randomized (allow and deny lists, opt-in) is served and shows in
/// metrics and logs, but it is not evidence and never reaches this value.
public struct VersionEvidence: Codable, Hashable, Sendable {
    /// Randomized requests.
    public var requests: Int
    /// Randomized requests per `LatencyBuckets` bucket.
    public var latency: [Int]
    /// The earliest failure of each unit in the span (`merge` and the judge order them by `at`).
    public var failures: [UnitEvent]
    /// The canary's mirrored requests, compared with stable's answers to the same requests
    /// (kept with the canary's evidence; never requests, latency or failures of its users).
    public var mirror: MirrorPairs?

    public init(requests: Int = 0, latency: [Int] = Array(repeating: 0, count: LatencyBuckets.count), failures: [UnitEvent] = [],
                mirror: MirrorPairs? = nil) {
        self.requests = requests
        self.latency = latency
        self.failures = failures
        self.mirror = mirror
    }

    /// Records one randomized request.
    public mutating func record(latencyMs: Double, failure: UnitEvent?) {
        requests += 1
        latency[LatencyBuckets.index(ms: latencyMs)] += 1
        if let failure { failures.append(failure) }
    }

    /// The bound of the bucket holding the `quantile` (0–1) of requests; nil without requests.
    public func percentileMs(_ quantile: Double) -> Double? {
        let total = latency.reduce(0, +)
        guard total > 0 else { return nil }
        var cumulative = 0
        for (index, count) in latency.enumerated() {
            cumulative += count
            if Double(cumulative) >= quantile * Double(total) {
                return index < LatencyBuckets.boundsMs.count ? LatencyBuckets.boundsMs[index] : LatencyBuckets.boundsMs.last! * 2
            }
        }
        return nil
    }

    /// Adds another span (a later window, or another proxy's) of the same version; a unit
    /// keeps its earliest failure.
    public mutating func merge(_ other: VersionEvidence) {
        let other = other.sanitized()
        if let pairs = other.mirror {
            var merged = mirror ?? MirrorPairs()
            merged.merge(pairs)
            mirror = merged
        }
        requests = min(Self.countLimit, requests + other.requests)
        if latency.count != LatencyBuckets.count { latency = Array(repeating: 0, count: LatencyBuckets.count) }
        for index in latency.indices { latency[index] = min(Self.countLimit, latency[index] + other.latency[index]) }
        var earliest: [String: Int] = [:]
        for (index, event) in failures.enumerated() { earliest[event.unit] = index }
        for event in other.failures {
            if let index = earliest[event.unit] {
                if event.at < failures[index].at { failures[index] = event }
            } else {
                earliest[event.unit] = failures.count
                failures.append(event)
            }
        }
    }

    /// No count beyond this in one span: far above any real traffic, far below overflow.
    public static let countLimit = 1 << 40

    /// What a hostile or broken proxy cannot use to crash or sway the judge: counts
    /// within 0 … `countLimit`, one latency count per bucket, ranges within the buckets,
    /// finite times.
    public func sanitized() -> VersionEvidence {
        func count(_ value: Int) -> Int { min(max(value, 0), Self.countLimit) }
        var latency = Array(repeating: 0, count: LatencyBuckets.count)
        for (index, value) in self.latency.prefix(LatencyBuckets.count).enumerated() { latency[index] = count(value) }
        let failures = self.failures.compactMap { event -> UnitEvent? in
            let lower = min(max(event.lower, 0), Bucket.count), upper = min(max(event.upper, lower), Bucket.count)
            guard event.at.isFinite else { return nil }
            return UnitEvent(unit: event.unit, canary: event.canary, lower: lower, upper: upper, at: event.at, fresh: event.fresh)
        }
        return VersionEvidence(requests: count(requests), latency: latency, failures: failures, mirror: mirror?.sanitized())
    }
}
