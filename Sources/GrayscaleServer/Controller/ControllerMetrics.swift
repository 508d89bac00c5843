import GrayscaleCore
import Prometheus

/// The controller's own gauges and counters: canary percent and step per service,
/// verdicts by outcome, rollbacks and promotions.
public final class ControllerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    private func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "grayscale", metricName: name, unitName: unit, helpText: help)
    }

    /// Updates the metrics after a committed tick.
    public func observe(service: ServiceState, transition: Transition) {
        let rollout = transition.rollout
        let labels = [("service", service.service)]
        registry.makeGauge(descriptor: descriptor("canary", "percent", "Percent of users on the canary."), labels: labels)
            .set(Double(service.split?.canary?.range.widthHundredths ?? 0) / 100)
        registry.makeGauge(descriptor: descriptor("canary", "release", "Release number of the canary (0: none)."), labels: labels)
            .set(Double(service.canary?.number ?? 0))
        registry.makeGauge(descriptor: descriptor("rollout", "step", "Step of the rollout, from 1 (0: before the first step or none)."), labels: labels)
            .set(Double(rollout.map { $0.phase.isActive ? $0.step + 1 : 0 } ?? 0))
        if let verdict = transition.verdict {
            registry.makeCounter(descriptor: descriptor("verdicts", "total", "Verdicts of the canary judge by outcome."),
                                 labels: labels + [("outcome", verdict.outcome.rawValue)]).increment()
        }
        // Both counters exist from a service's first tick, at 0: a query (or a dashboard
        // panel) of rollbacks or promotions sees 0, not "no data", before the first one.
        let rollbacks = registry.makeCounter(descriptor: descriptor("rollbacks", "total", "Rollbacks, automatic or by a human."), labels: labels)
        let promotions = registry.makeCounter(descriptor: descriptor("promotions", "total", "Canaries promoted to stable."), labels: labels)
        if transition.rollbackReason != nil { rollbacks.increment() }
        if transition.promoted { promotions.increment() }
    }
}
