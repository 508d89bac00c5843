import Foundation

/// SplitMix64: small, fast and the same on every machine, so a seed replays exactly.
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    @inline(__always)
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// A Poisson draw; `limit` is exp(-mean), precomputed by callers drawing often with one mean.
    @inline(__always)
    public mutating func poisson(mean: Double, limit: Double) -> Int {
        if mean > 30 { return max(0, Int((mean + mean.squareRoot() * normal()).rounded())) }
        var product = uniform(), count = 0
        while product > limit {
            count += 1
            product *= uniform()
        }
        return count
    }

    public mutating func poisson(_ mean: Double) -> Int { mean <= 0 ? 0 : poisson(mean: mean, limit: exp(-mean)) }

    public mutating func normal() -> Double {
        (-2 * log(max(uniform(), 1e-300))).squareRoot() * cos(2 * .pi * uniform())
    }

    /// Sixteen hex digits, for a release's salt.
    public mutating func salt() -> String {
        let hex = String(next(), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
