import Foundation

/// The Grafana dashboard for Grayscale's `/metrics`, built from typed values: the one
/// source of `dashboards/grafana.json`, which `grayscale dashboard grafana` writes and a
/// test keeps current. Every panel shows each version and all of them together.
public enum GrafanaDashboard {
    /// The dashboard as Grafana imports it: sorted keys, pretty-printed, a final newline.
    public static var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Only strings, numbers and arrays of them: encoding cannot fail.
        return String(decoding: (try? encoder.encode(dashboard)) ?? Data(), as: UTF8.self) + "\n"
    }

    /// The panels' queries, `$service` as Grafana fills it in.
    public static var queries: [String] { dashboard.panels.flatMap { $0.targets.map(\.expr) } }

    static let service = #"service="$service""#
    static let requests = "grayscale_requests_total"
    static let errors = "grayscale_request_errors_total"
    static let durationBuckets = "grayscale_request_duration_seconds_bucket"

    static var dashboard: Dashboard {
        let errorRate = { (by: String) in
            #"sum\#(by)(rate(\#(errors){\#(service),class!="rejected"}[1m])) / sum\#(by)(rate(\#(requests){\#(service)}[1m]))"#
        }
        let quantile = { (q: String, by: String) in
            "histogram_quantile(\(q), sum by (le\(by)) (rate(\(durationBuckets){\(service)}[5m])))"
        }
        let panels: [(title: String, unit: String, targets: [(expr: String, legend: String)])] = [
            ("Request rate by version", "reqps", [
                ("sum by (release, label) (rate(\(requests){\(service)}[1m]))", byVersion),
                ("sum(rate(\(requests){\(service)}[1m]))", allVersions)]),
            ("Error rate by version", "percentunit", [(errorRate(" by (release, label) "), byVersion), (errorRate(""), allVersions)]),
            ("p50 latency by version", "s", [(quantile("0.5", ", release, label"), byVersion), (quantile("0.5", ""), allVersions)]),
            ("p99 latency by version", "s", [(quantile("0.99", ", release, label"), byVersion), (quantile("0.99", ""), allVersions)]),
            ("Canary share of users", "percent", [
                ("grayscale_canary_percent{\(service)}", "canary %"), ("grayscale_rollout_step{\(service)}", "step")]),
            ("Rollout events", "short", [
                ("sum by (outcome) (increase(grayscale_verdicts_total{\(service)}[5m]))", "verdicts {{outcome}}"),
                ("increase(grayscale_rollbacks_total{\(service)}[5m])", "rollbacks"),
                ("increase(grayscale_promotions_total{\(service)}[5m])", "promotions")]),
        ]
        return Dashboard(
            annotations: .init(list: [.init(expr: "changes(grayscale_rollbacks_total{\(service)}[1m]) > 0")]),
            panels: panels.enumerated().map { index, panel in
                Panel(fieldConfig: .init(defaults: .init(unit: panel.unit)),
                      gridPos: .init(h: 8, w: 12, x: index % 2 * 12, y: index / 2 * 8), id: index + 1,
                      targets: panel.targets.enumerated().map { number, target in
                          Target(expr: target.expr, legendFormat: target.legend,
                                 refId: String(UnicodeScalar(UInt8(ascii: "A") + UInt8(number))))
                      },
                      title: panel.title)
            },
            templating: .init(list: [
                .init(label: "Prometheus", name: "datasource", query: .text("prometheus"), type: "datasource"),
                .init(datasource: .prometheus, definition: "label_values(\(requests), service)", label: "Service", name: "service",
                      query: .object(.init(query: "label_values(\(requests), service)", refId: "services")), refresh: 2, type: "query"),
            ]))
    }

    static let byVersion = "{{release}} ({{label}})"
    static let allVersions = "all versions"

    // MARK: - Grafana's dashboard model (the fields this dashboard uses)

    struct Dashboard: Encodable {
        var annotations: Annotations
        var editable = true
        var panels: [Panel]
        var refresh = "10s"
        var schemaVersion = 39
        var tags = ["grayscale", "canary"]
        var templating: Templating
        var time = TimeRange()
        var title = "Grayscale"
        var uid = "grayscale"
        var version = 1
    }

    struct DataSource: Encodable {
        var type = "prometheus"
        var uid = "${datasource}"
        static let prometheus = DataSource()
    }

    struct Annotations: Encodable {
        struct Query: Encodable {
            var datasource = DataSource.prometheus
            var enable = true
            var expr: String
            var iconColor = "red"
            var name = "Rollbacks"
            var titleFormat = "rollback"
        }
        var list: [Query]
    }

    struct Panel: Encodable {
        struct FieldConfig: Encodable {
            struct Defaults: Encodable { var unit: String }
            var defaults: Defaults
            var overrides: [String] = []
        }
        struct GridPos: Encodable { var h, w, x, y: Int }
        struct Options: Encodable {
            struct Legend: Encodable {
                var displayMode = "table"
                var placement = "bottom"
            }
            var legend = Legend()
        }
        var datasource = DataSource.prometheus
        var fieldConfig: FieldConfig
        var gridPos: GridPos
        var id: Int
        var options = Options()
        var targets: [Target]
        var title: String
        var type = "timeseries"
    }

    struct Target: Encodable {
        var datasource = DataSource.prometheus
        var expr: String
        var legendFormat: String
        var refId: String
    }

    struct Templating: Encodable {
        struct Variable: Encodable {
            var current: [String: String] = [:]
            var datasource: DataSource?
            var definition: String?
            var hide = 0
            var label: String
            var name: String
            var query: Query
            var refresh: Int?
            var type: String
        }
        enum Query: Encodable {
            struct Object: Encodable {
                var query: String
                var refId: String
            }
            case text(String)
            case object(Object)
            func encode(to encoder: any Encoder) throws {
                switch self {
                case .text(let text): try text.encode(to: encoder)
                case .object(let object): try object.encode(to: encoder)
                }
            }
        }
        var list: [Variable]
    }

    struct TimeRange: Encodable {
        var from = "now-1h"
        var to = "now"
    }
}
