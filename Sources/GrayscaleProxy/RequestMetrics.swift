import GrayscaleCore
import Prometheus
import Synchronization

/// The proxy's Prometheus metrics, labelled by service, release number and label,
/// route (stable/canary) and status class: request and error counters and a latency
/// histogram. Handles are made once per label set and cached; recording is a lookup.
public final class RequestMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let handles = Mutex<[Key: Handles]>([:])

    struct Key: Hashable {
        var service: String
        var release: Int
        var route: RouteTarget
        var statusClass: Int
        var errorClass: ErrorClass?
    }

    struct Handles: Sendable {
        let requests: Counter
        let errors: Counter?
        let duration: DurationHistogram
    }

    static let buckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                      .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)]

    static var requests: MetricNameDescriptor { MetricNameDescriptor(namespace: "grayscale", metricName: "requests", unitName: "total",
                                               helpText: "Requests through the proxy by version, route and status class.") }
    static var errors: MetricNameDescriptor { MetricNameDescriptor(namespace: "grayscale", metricName: "request_errors", unitName: "total",
                                             helpText: "Requests that failed, by version and cause (rejected: refused by the proxy itself).") }
    static var duration: MetricNameDescriptor { MetricNameDescriptor(namespace: "grayscale", metricName: "request_duration", unitName: "seconds",
                                               helpText: "Request latency through the proxy by version.") }

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    static var refusals: MetricNameDescriptor { MetricNameDescriptor(namespace: "grayscale", metricName: "requests_refused", unitName: "total",
                                               helpText: "Requests the proxy refused before routing them, by reason.") }

    /// A request refused before it had a version (malformed, CONNECT, an unsupported transfer coding, …).
    public func refused(reason: String) {
        registry.makeCounter(descriptor: Self.refusals, labels: [("reason", reason)]).increment()
    }

    static var mirroredRequests: MetricNameDescriptor { MetricNameDescriptor(namespace: "grayscale", metricName: "mirrored_requests", unitName: "total",
                                                       helpText: "Stable requests copied to the canary and compared, by canary version and which side failed.") }

    /// One mirrored request compared: `outcome` is ok, canary_failed, stable_failed or both_failed.
    public func mirrored(service: String, release: ReleaseRef, stableFailed: Bool, canaryFailed: Bool) {
        let outcome = stableFailed ? (canaryFailed ? "both_failed" : "stable_failed") : (canaryFailed ? "canary_failed" : "ok")
        registry.makeCounter(descriptor: Self.mirroredRequests, labels: [
            ("service", service), ("release", String(release.number)), ("label", release.label), ("outcome", outcome),
        ]).increment()
    }

    public func record(_ outcome: RequestOutcome, route: RouteTarget) {
        let key = Key(service: outcome.service, release: outcome.release.number, route: route, statusClass: outcome.status / 100,
                      errorClass: outcome.errorClass)
        let handles = self.handles.withLock { cache -> Handles in
            if let existing = cache[key] { return existing }
            let version = [("service", outcome.service), ("release", String(outcome.release.number)), ("label", outcome.release.label),
                           ("route", route.rawValue)]
            let made = Handles(
                requests: registry.makeCounter(descriptor: Self.requests, labels: version + [("code", "\(key.statusClass)xx")]),
                errors: outcome.errorClass.map { registry.makeCounter(descriptor: Self.errors, labels: version + [("class", $0.rawValue)]) },
                duration: registry.makeDurationHistogram(descriptor: Self.duration, labels: version, buckets: Self.buckets))
            cache[key] = made
            return made
        }
        handles.errors?.increment()
        // A dropped WebSocket is how its upgrade request ended: an error, not another request, and no latency.
        guard outcome.errorClass != .webSocketDropped else { return }
        handles.requests.increment()
        handles.duration.record(.microseconds(Int64(outcome.latencyMicros)))
    }
}
