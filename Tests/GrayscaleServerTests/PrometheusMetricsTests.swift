import Foundation
import GrayscaleCore
import GrayscaleServer
import NIOCore
import NIOHTTP1
import NIOPosix
import GrayscaleTestSupport
import Testing

/// A real Prometheus from Debian's package, on a loopback port, scraping the fixture every second.
final class PrometheusServer {
    let process = Process()
    let directory: URL
    let port: Int

    init(scraping target: Int) throws {
        guard let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first(where: FileManager.default.isExecutableFile) else {
            throw PrometheusMissing()
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-prometheus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try Self.freePort()
        let config = directory.appendingPathComponent("prometheus.yml")
        try """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: fixture
                static_configs: [{targets: ["127.0.0.1:\(target)"]}]
            """.write(to: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--config.file=\(config.path)", "--storage.tsdb.path=\(directory.appendingPathComponent("data").path)",
                             "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }

    static func freePort() throws -> Int {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }
}

struct PrometheusMissing: Error, CustomStringConvertible {
    var description: String { "prometheus is not installed: make test installs the Debian package 'prometheus'" }
}

@Suite("Prometheus metrics source", .serialized)
struct PrometheusMetricsTests {
    @Test("per-version rates from a real Prometheus, through libcurl, feed the judge")
    func realPrometheus() async throws {
        let exporter = try FixtureExporter()
        defer { exporter.stop() }
        let prometheus = try PrometheusServer(scraping: exporter.port)
        defer { prometheus.stop() }
        let source = PrometheusMetrics(baseURL: prometheus.url, queries: .init(
            requests: #"sum(increase(http_requests_total{service="{{service}}",version="{{version}}"}[{{window}}]))"#,
            errors: #"sum(increase(http_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}[{{window}}]))"#))

        // Wait until Prometheus has a few scrapes of both versions.
        var observation: IntervalObservation?
        for _ in 0..<60 {
            try await Task.sleep(for: .seconds(1))
            let now = Date()
            if let observed = try? await source.observe(service: "engine", canary: ReleaseRef(number: 8, label: "v8"),
                                                        stable: ReleaseRef(number: 7, label: "v7"),
                                                        from: now.addingTimeInterval(-5), to: now),
               observed.canary.requests >= 200, observed.stable.requests >= 1000 {
                observation = observed
                break
            }
        }
        let observed = try #require(observation, "Prometheus never returned both versions")
        #expect(observed.canary.evidence == nil, "Prometheus cannot tell users apart")
        #expect(abs(observed.canary.errorRate - 0.10) < 0.03, "canary error rate \(observed.canary.errorRate)")
        #expect(abs(observed.stable.errorRate - 0.01) < 0.006, "stable error rate \(observed.stable.errorRate)")

        var evidence = CanaryEvidence(policy: .standard)
        let verdict = CanaryJudge.judge(observed, analysis: RolloutPolicy.standard.analysis, evidence: &evidence, share: 0.2,
                                        stepRequests: observed.canary.requests)
        #expect(verdict.outcome == .fail)
        #expect(verdict.critical)

        // A policy's own metric, per version, from the same Prometheus: 503s per second.
        let metric = RolloutPolicy.CustomMetric(
            name: "unavailable", query: #"sum(rate(http_requests_total{service="{{service}}",version="{{version}}",code="503"}[{{window}}]))"#,
            direction: .lower, minEffect: 1)
        let sample = try await source.sample(metric, service: "engine", canary: ReleaseRef(number: 8, label: "v8"),
                                             stable: ReleaseRef(number: 7, label: "v7"), window: 5, at: Date())
        // The fixture serves 10 per second for the canary and 5 for stable; young series' rates are extrapolated, the ratio holds.
        let ratio = sample.canary / max(sample.stable, 1e-9)
        #expect(sample.canary > 1 && ratio > 1.5 && ratio < 2.5, "\(sample)")

        // A query Prometheus rejects is an error naming it, which the controller turns into "inconclusive".
        await #expect(throws: (any Error).self) { try await source.instant("sum(rate(", at: Date()) }
    }
}

@Suite("Generated files")
struct GeneratedFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("dashboards/grafana.json is what `grayscale dashboard grafana` writes (`make dashboards` renews it)")
    func grafanaDashboardIsCurrent() throws {
        let file = try String(contentsOf: Self.root.appendingPathComponent("dashboards/grafana.json"), encoding: .utf8)
        #expect(file == GrafanaDashboard.json, "dashboards/grafana.json is stale: run make dashboards")
        // Valid JSON with six panels, each showing every version and all of them together (or the rollout's own series).
        let object = try #require(try JSONSerialization.jsonObject(with: Data(file.utf8)) as? [String: Any])
        let panels = try #require(object["panels"] as? [[String: Any]])
        #expect(panels.count == 6)
        #expect(Set(panels.compactMap { $0["id"] as? Int }).count == 6, "panel ids are unique")
        #expect(panels.allSatisfy { (($0["targets"] as? [[String: Any]])?.count ?? 0) >= 2 })
    }
}

@Suite("Prometheus answers")
struct PrometheusAnswerTests {
    func value(_ json: String, status: Int = 200) throws(GrayscaleError) -> Double? {
        try PrometheusMetrics.value(of: Data(json.utf8), status: status, source: "prometheus test", query: "q")
    }

    @Test("instant answers as Prometheus writes them: vectors summed, empty is 0, NaN is nil, scalars, errors in Prometheus's words")
    func answers() throws {
        #expect(try value(#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"release":"7"},"value":[1700000000.123,"1.5"]},{"metric":{},"value":[1700000000.123,"2"]}]}}"#) == 3.5)
        #expect(try value(#"{"status":"success","data":{"resultType":"vector","result":[]}}"#) == 0)
        #expect(try value(#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#) == nil)
        #expect(try value(#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"0.25"]}}"#) == 0.25)
        #expect(try value(#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#) == .infinity)
        #expect(throws: GrayscaleError("prometheus test: parse error: unexpected end of input for query q")) {
            try value(#"{"status":"error","errorType":"bad_data","error":"parse error: unexpected end of input"}"#, status: 400)
        }
        for hostile in ["", "<html>502</html>", #"{"status":"success"}"#, #"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,2]}]}}"#,
                        #"{"status":"success","data":{"resultType":"vector","result":{"a":1}}}"#, "[]", #"{"status":7}"#] {
            #expect(throws: GrayscaleError.self, "\(hostile)") { try value(hostile) }
        }
    }
}
