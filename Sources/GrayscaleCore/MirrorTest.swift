import Foundation

/// What the proxies saw of mirrored requests over a span: each pair is one of stable's
/// safe requests (GET or HEAD) answered by stable for its user, and the same request
/// sent again to the canary, whose answer was compared and discarded.
///
/// A version *failed* a request when it answered 5xx, refused or reset the connection,
/// or did not answer in time (the classes that are errors for users). The latency of a
/// pair is kept only when both versions answered without failing, as the canary's excess
/// over stable (`canarySlowerBy`, in `LatencyBuckets`) or none (`canaryNotSlower`).
public struct MirrorPairs: Codable, Hashable, Sendable {
    public var pairs: Int
    public var canaryOnlyFailures: Int
    public var stableOnlyFailures: Int
    public var bothFailed: Int
    /// Pairs both answered, by how much slower the canary was (ms, `LatencyBuckets`).
    public var canarySlowerBy: [Int]
    /// Pairs both answered with the canary no slower than stable.
    public var canaryNotSlower: Int

    public init() {
        pairs = 0
        canaryOnlyFailures = 0
        stableOnlyFailures = 0
        bothFailed = 0
        canarySlowerBy = Array(repeating: 0, count: LatencyBuckets.count)
        canaryNotSlower = 0
    }

    /// Records one compared pair.
    public mutating func record(stableFailed: Bool, canaryFailed: Bool, stableMs: Double, canaryMs: Double, compareLatency: Bool = true) {
        pairs += 1
        switch (stableFailed, canaryFailed) {
        case (true, true): bothFailed += 1
        case (true, false): stableOnlyFailures += 1
        case (false, true): canaryOnlyFailures += 1
        case (false, false):
            guard compareLatency else { return }
            let excess = canaryMs - stableMs
            if excess > 0 { canarySlowerBy[LatencyBuckets.index(ms: excess)] += 1 } else { canaryNotSlower += 1 }
        }
    }

    /// Records one pair judged on the same terms for both sides: a side failed when its
    /// answer's head did not come within `limitMicros` of its request being written (no
    /// answer at all, refused, reset, or later than the limit) or said 5xx; the latency
    /// compared is the time to the head. The limit is the proxy's upstream timeout, or
    /// less when the user left before stable answered: then both sides are cut off at the
    /// moment the user left, so a pair is never chosen by how slow one side was.
    public mutating func record(stable: MirrorSide, canary: MirrorSide, limitMicros: UInt64) {
        func failed(_ side: MirrorSide) -> Bool {
            guard let status = side.status, let micros = side.headMicros, micros <= limitMicros else { return true }
            return status >= 500
        }
        // A new connection's setup at the upstream (its accept, its pipeline) is in one side's time and not the
        // other's: such a pair counts for errors only. Whether a side reused a connection was settled before it was sent.
        record(stableFailed: failed(stable), canaryFailed: failed(canary), stableMs: Double(stable.headMicros ?? 0) / 1000,
               canaryMs: Double(canary.headMicros ?? 0) / 1000, compareLatency: stable.reused && canary.reused)
    }

    /// Adds another span's (or another proxy's) pairs.
    public mutating func merge(_ other: MirrorPairs) {
        let other = other.sanitized()
        func add(_ a: Int, _ b: Int) -> Int { min(VersionEvidence.countLimit, a + b) }
        pairs = add(pairs, other.pairs)
        canaryOnlyFailures = add(canaryOnlyFailures, other.canaryOnlyFailures)
        stableOnlyFailures = add(stableOnlyFailures, other.stableOnlyFailures)
        bothFailed = add(bothFailed, other.bothFailed)
        if canarySlowerBy.count != LatencyBuckets.count { canarySlowerBy = Array(repeating: 0, count: LatencyBuckets.count) }
        for index in canarySlowerBy.indices { canarySlowerBy[index] = add(canarySlowerBy[index], other.canarySlowerBy[index]) }
        canaryNotSlower = add(canaryNotSlower, other.canaryNotSlower)
    }

    /// What a hostile or broken proxy cannot use to crash the judge: counts within
    /// 0 … `countLimit`, one count per latency bucket.
    public func sanitized() -> MirrorPairs {
        func count(_ value: Int) -> Int { min(max(value, 0), VersionEvidence.countLimit) }
        var clean = MirrorPairs()
        clean.pairs = count(pairs)
        clean.canaryOnlyFailures = count(canaryOnlyFailures)
        clean.stableOnlyFailures = count(stableOnlyFailures)
        clean.bothFailed = count(bothFailed)
        for (index, value) in canarySlowerBy.prefix(LatencyBuckets.count).enumerated() { clean.canarySlowerBy[index] = count(value) }
        clean.canaryNotSlower = count(canaryNotSlower)
        return clean
    }

    /// Pairs both answered in which the canary was slower than stable by more than
    /// `effectMs` for certain (a bucket counts only when its lower bound is at least the effect).
    public func canarySlower(byMoreThan effectMs: Double) -> Int {
        var slower = 0
        for index in canarySlowerBy.indices.dropFirst() where LatencyBuckets.boundsMs[index - 1] >= effectMs {
            slower += canarySlowerBy[index]
        }
        return slower
    }

    public var isEmpty: Bool { pairs == 0 }
}

/// One side of a mirrored pair as a proxy saw it: the status of its answer's head and
/// how long after its request was written the head came; nil when no head came (refused,
/// reset, timed out, or the user left first).
public struct MirrorSide: Hashable, Sendable {
    public var status: Int?
    public var headMicros: UInt64?
    /// The request went on a connection kept from an earlier one (no connection setup at the
    /// upstream in its time): latency is compared only between two such sides.
    public var reused: Bool

    public init(status: Int?, headMicros: UInt64?, reused: Bool = true) {
        self.status = status
        self.headMicros = headMicros
        self.reused = reused
    }

    public static let noAnswer = MirrorSide(status: nil, headMicros: nil)
}

/// The paired test of the mirror phase: canary and stable answer the *same* requests, so
/// whatever makes a request fail or slow for reasons of its own (the user, the client,
/// the payload, the moment) falls on both, and only the differences say anything.
///
/// **Errors: a sequential sign test on discordant pairs.** Take the pairs in which exactly
/// one version failed. The null is that, given the past, a discordant pair is the
/// canary's failure with probability at most 1/2: exactly 1/2 when the two are the same
/// software (swapping the labels changes nothing), less when the canary is better. So for each
/// bet λ in (0, 1), Π (1 + λ) per canary-only failure × (1 − λ) per stable-only failure
/// is a nonnegative supermartingale under the null, and so is their mean over
/// `bets`: by Ville's inequality it reaches any 1/a with probability at most a, however
/// often it is read. Requests that fail on both (a broken client, a missing resource, a
/// chronic error) are concordant and weigh nothing; a user whose requests fail at random
/// fails on either version alike.
///
/// **Latency: the same sign test on "the canary was slower by more than δ".** The null is
/// that the median of the paired difference (canary's time to its answer's head less
/// stable's, on the same request) is at most δ, given the past: "canary slower by more
/// than δ" then has probability at most 1/2. Two versions that are the same software are
/// interchangeable, so the difference is symmetric about 0 and the null holds for any
/// δ ≥ 0. A bucket of the difference counts only when it lies wholly above δ, which only
/// lowers the statistic. Noise that hits both (load, a slow disk, a big payload) cancels
/// in the difference.
///
/// **The same terms for both sides.** The proxy judges each side by its answer's head
/// (status and time from its request being written) against one limit, and cuts both
/// sides off at the same moment when the user leaves first; latency is compared only when
/// both sides went on kept-alive connections, as a new connection's setup at the upstream
/// would count in one side's time only (`MirrorPairs.record(stable:canary:limitMicros:)`).
///
/// **Inside the rollout's α.** The rollout's e-value is a fixed-weight average of its
/// e-processes; the mirror test is one of them (weight `weight`). Once the mirror phase
/// ends no more pairs come, and a stopped e-process is still one.
///
/// What it assumes of the world: the copy is the same request, sent at the same moment; a
/// GET or HEAD does not change what the next one sees (RFC 9110's safe methods). A
/// backend that rate-limits the copy with a 5xx, or answers a repeat from a cache faster,
/// favours one side; the first makes a false alarm possible and is the operator's to
/// avoid (mirror to a canary with its own limits).
public struct MirrorTest: Codable, Hashable, Sendable {
    public static let bets: [Double] = [0.3, 0.6, 0.9, 0.97]
    /// The errors' share of the mirror e-value when latency is judged too.
    static let errorShare = 0.7

    /// The mirror test's share of the rollout's e-value.
    public var weight: Double
    /// δ in milliseconds; nil when latency is not judged.
    public var latencyEffectMs: Double?
    /// Log wealth of the error and latency sign tests, one per bet.
    public var errorLogE: [Double]
    public var latencyLogE: [Double]
    /// What was counted so far.
    public var pairs: Int
    public var canaryOnlyFailures: Int
    public var stableOnlyFailures: Int
    public var canarySlower: Int
    public var compared: Int

    public init(weight: Double, latencyEffectMs: Double?) {
        self.weight = weight
        self.latencyEffectMs = latencyEffectMs
        errorLogE = Array(repeating: 0, count: Self.bets.count)
        latencyLogE = Array(repeating: 0, count: Self.bets.count)
        pairs = 0
        canaryOnlyFailures = 0
        stableOnlyFailures = 0
        canarySlower = 0
        compared = 0
    }

    /// log of the mirror e-value: the error test, or errors and latency averaged.
    public var logE: Double {
        let errors = logMeanExp(errorLogE)
        guard latencyEffectMs != nil else { return errors }
        return logSumExp([log(Self.errorShare) + errors, log(1 - Self.errorShare) + logMeanExp(latencyLogE)])
    }

    /// Which of the two carries the mirror e-value.
    public var latencyDrives: Bool {
        latencyEffectMs != nil && log(1 - Self.errorShare) + logMeanExp(latencyLogE) > log(Self.errorShare) + logMeanExp(errorLogE)
    }

    /// What the test has seen, in words: the side of it that carries its e-value.
    public var summary: String {
        latencyDrives
            ? String(format: "canary slower than stable by more than %.0f ms on the same mirrored requests (%d of %d pairs)",
                     latencyEffectMs ?? 0, canarySlower, compared)
            : "canary failed mirrored requests that stable answered (\(canaryOnlyFailures) failed only on the canary, "
                + "\(stableOnlyFailures) only on stable, of \(pairs) mirrored)"
    }

    /// Adds one span's pairs. The order of pairs inside a span does not matter: the product
    /// is the same whatever it is.
    public mutating func update(_ span: MirrorPairs) {
        let span = span.sanitized()
        guard span.pairs > 0 else { return }
        pairs = min(VersionEvidence.countLimit, pairs + span.pairs)
        canaryOnlyFailures = min(VersionEvidence.countLimit, canaryOnlyFailures + span.canaryOnlyFailures)
        stableOnlyFailures = min(VersionEvidence.countLimit, stableOnlyFailures + span.stableOnlyFailures)
        let worse = Double(span.canaryOnlyFailures), better = Double(span.stableOnlyFailures)
        errorLogE = zip(errorLogE, Self.bets).map { $0 + worse * log1p($1) + better * log1p(-$1) }
        guard let effect = latencyEffectMs else { return }
        let both = span.canaryNotSlower + span.canarySlowerBy.reduce(0, +)
        let slower = span.canarySlower(byMoreThan: effect)
        canarySlower = min(VersionEvidence.countLimit, canarySlower + slower)
        compared = min(VersionEvidence.countLimit, compared + both)
        let notSlower = Double(both - slower)
        latencyLogE = zip(latencyLogE, Self.bets).map { $0 + Double(slower) * log1p($1) + notSlower * log1p(-$1) }
    }
}
