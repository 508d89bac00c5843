import Foundation

/// Everything the judge knows about one canary over its whole rollout: two
/// anytime-valid tests (errors and latency) sharing one α, and the acceptance
/// evidence that lets a step advance. Stored with the rollout after every tick;
/// its parameters are frozen when the rollout starts.
///
/// **Why the error statistic keeps α whatever users do.** The hash (or the sticky
/// cookie's salted hash) puts each unit in a bucket uniformly at random, independently
/// of how often it sends requests or whether its client is broken. Take a unit's
/// failure at a moment when the canary held buckets C, and let K be the buckets this
/// unit may still be in given what earlier failures revealed (all of them at first).
/// If the canary is no worse than stable, *when* a unit fails does not depend on its
/// bucket, so the chance that this failure came from the canary is exactly
/// p = |K ∩ C| / |K|. Under "the canary makes units fail r times as often" it is
/// q = p·r / (p·r + 1 − p). The product of q/p (canary) and (1−q)/(1−p) (stable) over
/// failures is a nonnegative martingale under the null for each r; a mixture over r is
/// one too, so by Ville's inequality it reaches 1/α with probability at most α, however
/// often it is looked at. A unit that fails a thousand times under the same C says
/// nothing new (p becomes 0 or 1), so heavy users, chronic broken clients and sticky
/// anonymous clients count once per split they are seen under. Traffic that was not
/// randomized (allow and deny lists, opt-in) never reaches this statistic.
///
/// **Latency.** For a threshold T taken from stable's past histogram (so chosen before
/// the data it judges) and the policy's minimum effect δ, the canary's requests above
/// T + δ are compared with stable's above T. If the canary is at most δ slower in
/// distribution, a slow request is the canary's with probability at most its request
/// share ρ, and the same likelihood-ratio product is a supermartingale (conditioning on
/// the number of slow requests gives a hypergeometric count, less spread than the
/// binomial the ratio assumes). This part treats requests as independent: a user who
/// is slow on every version weighs by their requests.
///
/// **Faults that start late.** Hours of good evidence drive an error statistic far
/// below 1, where a fault that starts later would take long to lift it. So fresh error
/// e-processes start along the way: at the first step (weight 0.45), at the last step
/// (0.15, where most users are), at every other step (the j-th 0.25 · 6/(π² j²)) and
/// every half hour of data (the i-th 0.15 · 6/(π² i²)); the series sum to 0.25 and
/// 0.15, so all weights sum to at most 1. Each is 1 until it starts (a step's start is a
/// stopping time, a half hour a fixed time), and the error e-value is their weighted
/// sum, the weight of those not started yet counting as 1. A segment's log likelihood
/// ratio is the rollout's running sum minus its value when the segment started.
///
/// **Breakage at a step's start.** Most faults hit a user on their first request to
/// the new version, so a bad canary's failures come in a burst after each widening.
/// `OnsetTest` bets on the same events with a ratio that fades with the time since the
/// step began, and on failures of units' first requests under the split with a constant
/// one, carrying its wealth from step to step. The error e-value is
/// 0.8 × the onset test + 0.2 × the segments above: an average of e-processes.
///
/// **Custom metrics.** Each interval, a metric of the policy's own is "worse" when the
/// canary's value is beyond stable's by more than its minimum effect. If the canary is
/// no worse, the two versions' values are exchangeable and the chance of "worse" is at
/// most 1/2 (ties count as not worse), so Π (1 + λ·(+1 if worse, −1 if not)) is a test
/// supermartingale for each λ in (0, 1): a sequential sign test, mixed over λ.
///
/// **One α.** The e-processes are averaged with fixed weights; an average of
/// e-processes is an e-process, so rolling back when the average reaches 1/α keeps the
/// chance of ever rolling back a release as good as stable at or below α.
///
/// **Acceptance (β).** A step advances only when the likelihood ratio of "the canary is
/// `detectRatio` times worse" against "no worse", over the failures seen in this step,
/// has fallen to β: if the canary were that bad, this happens with probability at most
/// β (Ville's inequality under the alternative).
public struct CanaryEvidence: Codable, Hashable, Sendable {
    // Frozen when the rollout starts.
    public var alpha: Double
    public var beta: Double
    public var detectRatio: Double
    /// Minimum latency effect in milliseconds; nil when latency is not judged.
    public var latencyEffectMs: Double?
    /// The share of the e-value given to errors; the rest goes to latency and custom metrics.
    public var errorWeight: Double
    /// The share of each custom metric (0 without them); latency gets what remains.
    public var customWeight: Double
    /// The policy's metrics, frozen with the rest.
    public var customMetrics: [RolloutPolicy.CustomMetric]
    public var errorRatios: [Double]
    /// The mixture's weight of each ratio (they sum to 1).
    public var errorPrior: [Double]
    public var latencyRatios: [Double]
    public static let customBets: [Double] = [0.3, 0.6, 0.9]
    /// Log wealth of each custom metric's sign test, per bet in `customBets`.
    public var customLogE: [String: [Double]]
    /// Intervals judged per custom metric and how many were worse.
    public var customWorse: [String: Int]
    public var customSeen: [String: Int]
    /// When the custom metrics were last read (data time): they are read once per analysis interval.
    public var customLastAt: Date?

    /// The burst test of each step's first minutes. nil in a rollout stored before it
    /// existed: such a rollout keeps judging errors by the segments alone until it ends,
    /// since changing the formula in the middle of a rollout would not keep α.
    public var onset: OnsetTest?
    /// Log likelihood ratio of each alternative in `errorRatios` since the rollout began.
    public var errorLogLR: [Double]
    /// `errorLogLR` when each started segment (a fresh e-process) began.
    public var segmentStarts: [[Double]]
    /// Each started segment's share of the error e-value.
    public var segmentWeights: [Double]
    /// Weight of segments dropped because they had fallen below 1e-17 of it (dropping
    /// them only lowers the e-value).
    public var droppedWeight: Double
    /// Steps other than the first and the last started so far, and half-hour restarts (the j and i of their weights).
    public var stepRestarts: Int
    public var timeRestarts: Int
    public var lastStepStarted: Bool
    /// When the newest segment started, in data time.
    public var lastRestartAt: Date?
    /// What earlier failures revealed of each unit's bucket: `[lower, upper, lower, upper, …]`.
    public var units: [String: [Int]]
    /// Failures that carried evidence, by version.
    public var canaryFailures: Int
    public var stableFailures: Int
    /// Failures of units first seen after `maxUnits` were tracked: left out (which keeps α).
    public var ignoredFailures: Int

    /// Log likelihood ratio of a `detectRatio`-bad canary, over this step's failures.
    public var stepLogLR: Double
    /// The canary's share of randomized units in this step (the widest seen).
    public var stepShare: Double
    /// Failures (first per unit and span) seen in this step, on either version.
    public var stepFailures: Int

    /// Log likelihood ratios of the latency test: thresholds (stable's p90, p99) × `latencyRatios`.
    public var latencyLogLR: [Double]
    /// Stable's randomized requests per latency bucket so far: where thresholds come from.
    public var stableLatency: [Int]
    public var canarySlow: Int
    public var stableSlow: Int

    /// The mirror phase's paired test (`MirrorTest`), its weight taken from the others';
    /// nil when the policy has no mirror phase (and in rollouts stored before it existed).
    public var mirror: MirrorTest?

    public static let maxUnits = 200_000
    /// The mirror test's share of the e-value when the policy mirrors: the others keep
    /// their proportions in the remaining 0.8.
    public static let mirrorWeight = 0.2
    static let latencyQuantiles = [0.9, 0.99]
    /// Stable requests needed before latency thresholds are drawn from them.
    static let latencyHistory = 200

    static let firstWeight = 0.45, lastWeight = 0.15, stepWeight = 0.25, timeWeight = 0.15
    /// The onset test's share of the error e-value; the segments share the rest.
    static let onsetWeight = 0.8
    /// Seconds of data after which a fresh error e-process starts.
    public static let restartEvery: TimeInterval = 1800

    public init(alpha: Double, beta: Double, detectRatio: Double, latencyEffectMs: Double?, customMetrics: [RolloutPolicy.CustomMetric] = [],
                mirror: Bool = false) {
        self.mirror = mirror ? MirrorTest(weight: Self.mirrorWeight, latencyEffectMs: latencyEffectMs) : nil
        self.alpha = alpha
        self.beta = beta
        self.detectRatio = detectRatio
        self.latencyEffectMs = latencyEffectMs
        self.customMetrics = customMetrics
        let others = (latencyEffectMs == nil ? 0 : 0.05) + (customMetrics.isEmpty ? 0 : 0.05)
        errorWeight = 1 - others
        customWeight = customMetrics.isEmpty ? 0 : 0.05 / Double(customMetrics.count)
        customLogE = Dictionary(uniqueKeysWithValues: customMetrics.map { ($0.name, Array(repeating: 0.0, count: Self.customBets.count)) })
        customWorse = [:]
        customSeen = [:]
        customLastAt = nil
        // From half the ratio the policy asks to detect up to gross breakage (a release
        // that fails a few percent of users against a 0.1% background is 50–500× worse).
        // Most of the weight sits on gross breakage, which is what a small first step is
        // for: it is caught after two or three failing users; milder regressions are
        // caught at wider steps, where each failing user says more.
        errorRatios = [max(1.5, detectRatio / 2), detectRatio, 2 * detectRatio, 20, 50, 100, 200, 500]
        errorPrior = [0.03, 0.03, 0.04, 0.1, 0.3, 0.3, 0.15, 0.05]
        latencyRatios = [2, 5, 20, 50]
        onset = OnsetTest()
        errorLogLR = Array(repeating: 0, count: errorRatios.count)
        segmentStarts = []
        segmentWeights = []
        droppedWeight = 0
        stepRestarts = 0
        timeRestarts = 0
        lastStepStarted = false
        lastRestartAt = nil
        units = [:]
        canaryFailures = 0
        stableFailures = 0
        ignoredFailures = 0
        stepLogLR = 0
        stepShare = 0
        stepFailures = 0
        latencyLogLR = Array(repeating: 0, count: Self.latencyQuantiles.count * latencyRatios.count)
        stableLatency = Array(repeating: 0, count: LatencyBuckets.count)
        canarySlow = 0
        stableSlow = 0
    }

    public init(policy: RolloutPolicy) {
        self.init(alpha: policy.analysis.errorRate.alpha, beta: policy.analysis.errorRate.beta,
                  detectRatio: policy.analysis.errorRate.detectRatio, latencyEffectMs: policy.analysis.latency.minDifferenceMs,
                  customMetrics: policy.analysis.metrics, mirror: policy.mirror != nil)
    }

    // MARK: - The numbers

    /// log of the error e-process: the onset test and the segments, averaged with fixed weights.
    public var errorLogE: Double {
        guard let onset else { return segmentsLogE }
        return logSumExp([log(Self.onsetWeight) + onset.logE, log(1 - Self.onsetWeight) + segmentsLogE])
    }

    /// log of the segments' e-process: per segment the mixture over `errorRatios`, then
    /// the weighted average over segments (a segment not started yet is worth 1).
    public var segmentsLogE: Double {
        var terms = segmentStarts.indices.map(segmentLogE)
        let unstarted = 1 - segmentWeights.reduce(0, +) - droppedWeight
        if unstarted > 0 { terms.append(log(unstarted)) }
        return terms.isEmpty ? 0 : logSumExp(terms)
    }

    /// log of segment `index`'s weighted e-value.
    func segmentLogE(_ index: Int) -> Double {
        log(segmentWeights[index]) + logWeightedMeanExp(zip(errorLogLR, segmentStarts[index]).map { $0 - $1 }, errorPrior)
    }
    public var latencyLogE: Double { logMeanExp(latencyLogLR) }
    /// log of the combined e-value; the canary is rolled back when it reaches log(1/α).
    public var logE: Double { logEValues.combined }
    public var rejects: Bool { logE >= -log(alpha) }
    /// The three logs at once (each costs a pass over the segments).
    public var logEValues: (errors: Double, latency: Double, combined: Double) {
        let errors = errorLogE, latency = latencyLogE
        // With a mirror phase, the others share what the mirror test leaves, in their proportions.
        let scale = log(1 - (mirror?.weight ?? 0))
        var terms = [scale + log(errorWeight) + errors]
        let latencyWeight = 1 - errorWeight - customWeight * Double(customMetrics.count)
        if latencyWeight > 1e-12 { terms.append(scale + log(latencyWeight) + latency) }
        for metric in customMetrics { terms.append(scale + log(customWeight) + customMetricLogE(metric.name)) }
        if let mirror { terms.append(log(mirror.weight) + mirror.logE) }
        return (errors, latency, logSumExp(terms))
    }

    /// Adds one span's mirrored pairs (`MirrorTest`); nothing without a mirror phase.
    public mutating func updateMirror(_ pairs: MirrorPairs?) {
        guard let pairs, !pairs.isEmpty, mirror != nil else { return }
        mirror?.update(pairs)
    }

    /// log of one custom metric's e-value: the mean over bets.
    public func customMetricLogE(_ name: String) -> Double { logMeanExp(customLogE[name] ?? [0]) }

    /// The custom metric whose weighted e-value is largest, when there are any.
    public var strongestCustomMetric: (name: String, logE: Double)? {
        customMetrics.map { ($0.name, customMetricLogE($0.name)) }.max { $0.1 < $1.1 }
    }

    /// Adds one interval of the policy's own metrics.
    public mutating func updateCustom(_ samples: [String: CustomMetricSample], at time: Date) {
        guard !samples.isEmpty else { return }
        customLastAt = time
        for metric in customMetrics {
            guard let sample = samples[metric.name], sample.canary.isFinite, sample.stable.isFinite else { continue }
            let difference = metric.direction == .lower ? sample.canary - sample.stable : sample.stable - sample.canary
            let worse = difference > metric.minEffect
            customSeen[metric.name, default: 0] += 1
            if worse { customWorse[metric.name, default: 0] += 1 }
            customLogE[metric.name] = zip(customLogE[metric.name] ?? [], Self.customBets).map { $0 + log1p(worse ? $1 : -$1) }
        }
    }
    /// Whether this step has the evidence to advance (its minimum time and requests aside).
    /// Two cases carry no relative evidence and say so in the verdict: no unit failed on
    /// either version in the step (the canary's requests then rule out an absolute
    /// failure rate, ln(1/β) / requests), and every unit on the canary (a last step
    /// without holdback: nothing to compare).
    public func accepts(share: Double) -> Bool { stepLogLR <= log(beta) || stepFailures == 0 || share >= 1 }
    /// The e-value, capped so that it always encodes: beyond 1e300 nothing changes.
    public var eValue: Double { exp(min(logE, 690)) }

    /// Failing units of this step's kind still needed, at the step's share, for the
    /// acceptance boundary if none of them is on the canary: (counted so far, needed in all).
    public func acceptanceProgress(share: Double) -> (have: Int, need: Int) {
        let p = min(max(share, stepShare), 0.9999)
        guard p > 0 else { return (0, 0) }
        let perStable = log(1 + p * (detectRatio - 1))
        let need = Int(min(1e12, (-log(beta) / perStable).rounded(.up)))
        let have = Int(min(Double(need), max(0, (-stepLogLR / perStable).rounded(.down))))
        return (have, need)
    }

    // MARK: - Updates

    /// A new step: acceptance starts again at the step's exposure, and so does a fresh
    /// error e-process.
    public mutating func startStep(last: Bool, at time: Date) {
        stepLogLR = 0
        stepShare = 0
        stepFailures = 0
        onset?.startStep(at: time.timeIntervalSince1970)
        if segmentStarts.isEmpty && droppedWeight == 0 {
            startSegment(weight: Self.firstWeight, at: time)
        } else if last, !lastStepStarted {
            lastStepStarted = true
            startSegment(weight: Self.lastWeight, at: time)
        } else {
            stepRestarts += 1
            startSegment(weight: Self.series(Self.stepWeight, stepRestarts), at: time)
        }
    }

    /// Before evidence is added: the first segment if none started yet (evidence before
    /// any step), or a fresh one when half an hour of data has passed since the last.
    mutating func beginSegments(at time: Date) {
        if segmentStarts.isEmpty, droppedWeight == 0 {
            startSegment(weight: Self.firstWeight, at: time)
        } else if let last = lastRestartAt, time.timeIntervalSince(last) >= Self.restartEvery {
            restartOnTime(at: time)
        }
    }

    /// A fresh error e-process after half an hour of data.
    mutating func restartOnTime(at time: Date) {
        timeRestarts += 1
        startSegment(weight: Self.series(Self.timeWeight, timeRestarts), at: time)
    }

    /// The j-th term of a series that sums to `total`: total · 6/(π² j²).
    static func series(_ total: Double, _ j: Int) -> Double { total * 6 / (Double.pi * Double.pi * Double(j) * Double(j)) }

    mutating func startSegment(weight: Double, at time: Date) {
        dropSpentSegments()
        segmentStarts.append(errorLogLR)
        segmentWeights.append(weight)
        lastRestartAt = time
    }

    /// Adds one span of both versions' evidence, ending at `time`.
    public mutating func update(canary: VersionEvidence, stable: VersionEvidence, at time: Date) {
        beginSegments(at: time)
        let canary = canary.sanitized(), stable = stable.sanitized()
        // Failures in the order they happened; a unit seen on both versions in one span
        // counts once, by its earliest failure, whichever version that was on: the choice
        // depends on when the unit failed, never on its bucket.
        var seen = Set<String>()
        for event in (canary.failures + stable.failures).sorted(by: { ($0.at, $0.unit) < ($1.at, $1.unit) })
        where seen.insert(event.unit).inserted {
            stepFailures += 1
            observe(event)
        }
        updateLatency(canary: canary, stable: stable)
    }

    /// Segments worth less than e^-40 of the e-value are dropped: the state stays small.
    mutating func dropSpentSegments() {
        for index in segmentStarts.indices.reversed() where index < segmentStarts.count - 1 && segmentLogE(index) < -40 {
            droppedWeight += segmentWeights[index]
            segmentStarts.remove(at: index)
            segmentWeights.remove(at: index)
        }
    }

    /// Errors from a source that cannot tell units apart (Prometheus): each error is a
    /// unit of its own, at the canary's request share. Valid only while errors are
    /// independent; the proxies' statistics are preferred.
    public mutating func updateWithoutUnits(canaryRequests: Int, canaryErrors: Int, stableRequests: Int, stableErrors: Int, at time: Date) {
        func clamp(_ value: Int) -> Int { min(max(value, 0), VersionEvidence.countLimit) }
        let canaryRequests = clamp(canaryRequests), stableRequests = clamp(stableRequests)
        let canaryErrors = min(clamp(canaryErrors), canaryRequests), stableErrors = min(clamp(stableErrors), stableRequests)
        beginSegments(at: time)
        let total = canaryRequests + stableRequests
        guard total > 0, canaryRequests > 0, stableRequests > 0 else { return }
        let p = Double(canaryRequests) / Double(total)
        stepShare = max(stepShare, p)
        stepFailures += canaryErrors + stableErrors
        add(p: p, canary: canaryErrors, stable: stableErrors, at: time.timeIntervalSince1970)
    }

    mutating func observe(_ event: UnitEvent) {
        let lower = max(0, min(event.lower, Bucket.count)), upper = max(lower, min(event.upper, Bucket.count))
        var known = units[event.unit] ?? [0, Bucket.count]
        if units[event.unit] == nil, units.count >= Self.maxUnits {
            ignoredFailures += 1
            return
        }
        var size = 0, inside = 0
        for index in stride(from: 0, to: known.count - 1, by: 2) {
            size += known[index + 1] - known[index]
            inside += max(0, min(known[index + 1], upper) - max(known[index], lower))
        }
        // What this failure reveals: the unit's bucket is inside C (canary) or outside it.
        var revealed: [Int] = []
        for index in stride(from: 0, to: known.count - 1, by: 2) {
            let low = known[index], high = known[index + 1]
            if event.canary {
                let a = max(low, lower), b = min(high, upper)
                if a < b { revealed += [a, b] }
            } else {
                if low < min(high, lower) { revealed += [low, min(high, lower)] }
                if max(low, upper) < high { revealed += [max(low, upper), high] }
            }
        }
        guard size > 0, !revealed.isEmpty else { return }  // inconsistent with what was known: no evidence
        known = revealed
        units[event.unit] = known
        guard inside > 0, inside < size else { return }  // the version was certain: no evidence
        let p = Double(inside) / Double(size)
        stepShare = max(stepShare, Double(upper - lower) / Double(Bucket.count))
        add(p: p, canary: event.canary ? 1 : 0, stable: event.canary ? 0 : 1, at: event.at, fresh: event.fresh)
    }

    /// `canary` and `stable` failures at `time`, each the canary's with probability `p` under the null.
    mutating func add(p: Double, canary: Int, stable: Int, at time: Double, fresh: Bool = false) {
        guard p > 0, p < 1, canary + stable > 0 else { return }
        canaryFailures += canary
        stableFailures += stable
        onset?.add(p: p, canary: canary, stable: stable, at: time, fresh: fresh)
        for (index, ratio) in errorRatios.enumerated() {
            errorLogLR[index] += Self.logLR(p: p, ratio: ratio, canary: canary, stable: stable)
        }
        stepLogLR += Self.logLR(p: p, ratio: detectRatio, canary: canary, stable: stable)
    }

    /// log of (q/p)^canary ((1−q)/(1−p))^stable with q = p·r / (p·r + 1 − p).
    static func logLR(p: Double, ratio: Double, canary: Int, stable: Int) -> Double {
        let denominator = log1p(p * (ratio - 1))
        return Double(canary) * (log(ratio) - denominator) - Double(stable) * denominator
    }

    mutating func updateLatency(canary: VersionEvidence, stable: VersionEvidence) {
        defer {
            for index in stableLatency.indices where index < stable.latency.count { stableLatency[index] += stable.latency[index] }
        }
        guard let effect = latencyEffectMs, canary.requests > 0, stable.requests > 0 else { return }
        let history = stableLatency.reduce(0, +)
        guard history >= Self.latencyHistory else { return }
        let p = Double(canary.requests) / Double(canary.requests + stable.requests)
        for (thresholdIndex, quantile) in Self.latencyQuantiles.enumerated() {
            // T: the smallest bound with at least `quantile` of stable's past requests at or below it.
            var cumulative = 0, stableBucket = LatencyBuckets.boundsMs.count - 1
            for (index, count) in stableLatency.enumerated() {
                cumulative += count
                if Double(cumulative) >= quantile * Double(history) { stableBucket = index; break }
            }
            guard stableBucket < LatencyBuckets.boundsMs.count,
                  let canaryBucket = LatencyBuckets.firstBound(atLeast: LatencyBuckets.boundsMs[stableBucket] + effect)
            else { continue }
            let stableAbove = stable.latency.dropFirst(stableBucket + 1).reduce(0, +)
            let canaryAbove = canary.latency.dropFirst(canaryBucket + 1).reduce(0, +)
            guard stableAbove + canaryAbove > 0 else { continue }
            if thresholdIndex == Self.latencyQuantiles.count - 1 {
                canarySlow += canaryAbove
                stableSlow += stableAbove
            }
            for (ratioIndex, ratio) in latencyRatios.enumerated() {
                latencyLogLR[thresholdIndex * latencyRatios.count + ratioIndex] +=
                    Self.logLR(p: p, ratio: ratio, canary: canaryAbove, stable: stableAbove)
            }
        }
    }
}

/// log(Σ wᵢ exp(valuesᵢ)) for weights summing to 1, without overflow.
func logWeightedMeanExp(_ values: [Double], _ weights: [Double]) -> Double {
    logSumExp(zip(values, weights).map { $0 + log($1) })
}

/// log(mean(exp(values))), without overflow.
func logMeanExp(_ values: [Double]) -> Double {
    values.isEmpty ? 0 : logSumExp(values) - log(Double(values.count))
}

func logSumExp(_ values: [Double]) -> Double {
    guard let top = values.max(), top.isFinite else { return values.max() ?? -.infinity }
    return top + log(values.reduce(0) { $0 + exp($1 - top) })
}
