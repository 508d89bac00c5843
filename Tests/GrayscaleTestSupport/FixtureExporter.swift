import Foundation

/// Exposes `http_requests_total{service,version,code}` growing at fixed rates, for a real
/// Prometheus to scrape: stable (7) 500 requests/s with 1% 5xx, canary (8) 100 requests/s
/// with 10% 5xx.
public final class FixtureExporter: Sendable {
    let server: FixtureHTTPServer
    public let started = Date()

    public var port: Int { server.port }

    public init() throws {
        let started = self.started
        server = try FixtureHTTPServer { _ in
            let seconds = Date().timeIntervalSince(started)
            func line(_ version: Int, _ code: Int, _ perSecond: Double) -> String {
                #"http_requests_total{service="engine",version="\#(version)",code="\#(code)"} \#(Int(seconds * perSecond))"#
            }
            let body = ["# HELP http_requests_total Requests by version and status.", "# TYPE http_requests_total counter",
                        line(7, 200, 495), line(7, 503, 5), line(8, 200, 90), line(8, 503, 10), ""].joined(separator: "\n")
            return .respond(status: 200, headers: [("content-type", "text/plain; version=0.0.4")], body: body)
        }
    }

    public func stop() { server.stop() }
}
