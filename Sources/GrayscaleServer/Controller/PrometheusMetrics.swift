import Foundation
import GrayscaleCore
import GrayscaleIntegrations

/// Per-version metrics from Prometheus (`/api/v1/query`), one query template per
/// quantity. Templates name the version with `{{service}}`, `{{version}}` (the release
/// number), `{{label}}` and the span with `{{window}}` (e.g. `60s`).
/// Prometheus cannot tell users apart, so its errors are judged per request.
public struct PrometheusMetrics: MetricsSource {
    public struct Queries: Sendable, Hashable {
        public var requests: String
        public var errors: String
        public var p50Ms: String?
        public var p99Ms: String?

        public init(requests: String, errors: String, p50Ms: String? = nil, p99Ms: String? = nil) {
            self.requests = requests
            self.errors = errors
            self.p50Ms = p50Ms
            self.p99Ms = p99Ms
        }

        /// For services exporting `http_requests_total{service,version,code}` and
        /// `http_request_duration_seconds_bucket{service,version,le}`.
        public static let standard = Queries(
            requests: #"sum(increase(http_requests_total{service="{{service}}",version="{{version}}"}[{{window}}]))"#,
            errors: #"sum(increase(http_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}[{{window}}]))"#,
            p50Ms: #"1000 * histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{service="{{service}}",version="{{version}}"}[{{window}}])))"#,
            p99Ms: #"1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{service="{{service}}",version="{{version}}"}[{{window}}])))"#)
    }

    public let baseURL: String
    public let queries: Queries
    public let client: CurlHTTPClient
    public let timeout: Double

    public init(baseURL: String, queries: Queries = .standard, client: CurlHTTPClient = CurlHTTPClient(), timeout: Double = 5) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.queries = queries
        self.client = client
        self.timeout = timeout
    }

    public func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        let seconds = max(1, Int(to.timeIntervalSince(from).rounded()))
        func version(_ release: ReleaseRef) async throws -> VersionObservation {
            func value(_ template: String?) async throws -> Double? {
                guard let template else { return nil }
                let query = template.replacingOccurrences(of: "{{service}}", with: service)
                    .replacingOccurrences(of: "{{version}}", with: String(release.number))
                    .replacingOccurrences(of: "{{label}}", with: release.label)
                    .replacingOccurrences(of: "{{window}}", with: "\(seconds)s")
                return try await instant(query, at: to)
            }
            let requests = try await value(queries.requests) ?? 0
            let errors = try await value(queries.errors) ?? 0
            return VersionObservation(requests: Int(requests.rounded()), errors: Int(errors.rounded()),
                                      p50Ms: try await value(queries.p50Ms), p99Ms: try await value(queries.p99Ms))
        }
        return IntervalObservation(from: from, to: to, canary: try await version(canary), stable: try await version(stable))
    }

    /// A policy's own metric for canary and stable over the last `window` seconds; a
    /// version with no series (an empty vector) reads 0, a NaN is an error.
    public func sample(_ metric: RolloutPolicy.CustomMetric, service: String, canary: ReleaseRef, stable: ReleaseRef, window: Int,
                       at time: Date) async throws -> CustomMetricSample {
        func value(_ release: ReleaseRef) async throws -> Double {
            let query = metric.query.replacingOccurrences(of: "{{service}}", with: service)
                .replacingOccurrences(of: "{{version}}", with: String(release.number))
                .replacingOccurrences(of: "{{label}}", with: release.label)
                .replacingOccurrences(of: "{{window}}", with: "\(max(1, window))s")
            guard let value = try await instant(query, at: time) else {
                throw GrayscaleError("prometheus \(baseURL): \(metric.name) is NaN for version \(release.number)")
            }
            return value
        }
        return CustomMetricSample(canary: try await value(canary), stable: try await value(stable))
    }

    /// The value of an instant query: the sum of the vector's samples, 0 for an empty vector, nil for NaN.
    public func instant(_ query: String, at time: Date) async throws -> Double? {
        var components = URLComponents(string: "\(baseURL)/api/v1/query")!
        components.queryItems = [URLQueryItem(name: "query", value: query),
                                 URLQueryItem(name: "time", value: String(format: "%.3f", time.timeIntervalSince1970))]
        // '+' in a query string reads as a space; encode it.
        let url = components.url!.absoluteString.replacingOccurrences(of: "+", with: "%2B")
        let response = try await client.send(OutboundRequest(url: url, timeout: timeout))
        return try Self.value(of: response.body, status: response.status, source: "prometheus \(baseURL)", query: query)
    }

    /// The value an instant query's answer gives: the sum of its samples, 0 for an empty
    /// vector, nil when one is NaN; an error answer throws with Prometheus's own words.
    public static func value(of body: Data, status: Int, source: String, query: String) throws(GrayscaleError) -> Double? {
        guard let answer = try? JSONDecoder().decode(QueryAnswer.self, from: body) else {
            throw GrayscaleError("\(source): HTTP \(status), not a Prometheus answer")
        }
        guard status == 200, answer.status == "success", let result = answer.data?.result else {
            throw GrayscaleError("\(source): \(answer.error ?? "HTTP \(status)") for query \(query)")
        }
        var total = 0.0
        for sample in result {
            guard let value = sample.value?.number else { continue }
            if value.isNaN { return nil }
            total += value
        }
        return total
    }

    /// `GET /api/v1/query`'s answer: `{"status", "error"?, "data": {"resultType", "result"}}`.
    /// An instant vector's samples are `{"metric": {…}, "value": [time, "text"]}`; a scalar
    /// result is `[time, "text"]` itself.
    struct QueryAnswer: Decodable {
        var status: String
        var error: String?
        var data: Result?

        struct Result: Decodable {
            var resultType: String
            var result: [Sample]

            enum CodingKeys: String, CodingKey { case resultType, result }

            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                resultType = try container.decode(String.self, forKey: .resultType)
                switch resultType {
                case "vector": result = try container.decode([Sample].self, forKey: .result)
                case "scalar": result = [Sample(value: try container.decode(Value.self, forKey: .result))]
                default: result = []  // a matrix or a string: not an instant number
                }
            }
        }

        struct Sample: Decodable {
            var value: Value?
        }

        /// `[unix time, "value"]`: the value is a string ("NaN", "+Inf" included).
        struct Value: Decodable {
            var number: Double?

            init(from decoder: any Decoder) throws {
                var container = try decoder.unkeyedContainer()
                _ = try container.decode(Double.self)
                number = Double(try container.decode(String.self))
            }
        }
    }
}
