import Foundation
import GrayscaleCore

/// Where the controller gets per-version metrics. A source that fails throws; the
/// controller turns that into an inconclusive verdict, never a promotion.
public protocol MetricsSource: Sendable {
    /// Canary and stable over the same span, starting at `from` and ending by `to`.
    /// The returned observation's `to` is where the span it covers ends: the next `from`.
    func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation
    /// Seconds between two observations when the source has new evidence that often (the
    /// proxies' statistics windows); the policy's `analysis.interval` when that is shorter
    /// or this is nil.
    var cadence: Double? { get }
}

extension MetricsSource {
    public var cadence: Double? { nil }
}

/// For processes that act on commands but judge nothing (the bot's CLI twin).
public struct NoMetrics: MetricsSource {
    public init() {}

    public func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        throw GrayscaleError("this process has no metrics source")
    }
}
