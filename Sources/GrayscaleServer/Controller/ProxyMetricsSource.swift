import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleProxy

/// The embedded proxy's statistics, read in process.
public struct InProcessProxyMetrics: MetricsSource {
    public let statistics: ProxyStatistics

    public init(statistics: ProxyStatistics) { self.statistics = statistics }

    /// Every window, as soon as it is complete.
    public var cadence: Double? { Double(statistics.windowSeconds) }

    public func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        let (canaryObservation, covered) = statistics.observation(service: service, release: canary.number, from: from, to: to)
        let (stableObservation, _) = statistics.observation(service: service, release: stable.number, from: from, to: to)
        return IntervalObservation(from: from, to: covered, canary: canaryObservation, stable: stableObservation)
    }
}

/// `GET /stats` of one or more proxies, through libcurl, summed per version.
///
/// A proxy that does not answer (a replica killed, a zone cut off) is left out of the
/// interval as long as another one answered: its windows are gone or unreachable, and
/// judging the rest keeps a bad canary from being kept for as long as it is down. That
/// stays valid: which proxy answers does not depend on whether canary requests fail, so
/// the evidence is still a sample the statistic may stop on. Its windows inside the
/// interval are never read later (the cursor moves past them), so nothing counts twice.
/// When no proxy answers, the interval is not judged.
public struct HTTPStatsMetrics: MetricsSource {
    public let endpoints: [String]
    public let client: CurlHTTPClient
    public let timeout: Double
    /// The proxies' statistics window: how often there is something new to read.
    public let windowSeconds: Int?
    /// Told about each proxy left out of an interval, with why.
    public var onUnreachable: (@Sendable (_ endpoint: String, _ problem: String) -> Void)?

    public init(endpoints: [String], client: CurlHTTPClient = CurlHTTPClient(), timeout: Double = 5, windowSeconds: Int? = nil) {
        self.endpoints = endpoints
        self.client = client
        self.timeout = timeout
        self.windowSeconds = windowSeconds
    }

    public var cadence: Double? { windowSeconds.map(Double.init) }

    public func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        var windows: [(release: Int, window: WindowStatistics, length: Int)] = []
        var answered = 0
        var firstProblem: (any Error)?
        for endpoint in endpoints {
            let base = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
            let url = "\(base)/stats?since=\(Int(from.timeIntervalSince1970.rounded(.up)))"
            let response: OutboundResponse
            do {
                response = try await client.send(OutboundRequest(url: url, timeout: timeout))
            } catch {
                // No answer at all: left out of this interval (see above).
                onUnreachable?(base, "\(error)")
                firstProblem = firstProblem ?? error
                continue
            }
            answered += 1
            guard response.status == 200 else {
                throw GrayscaleError("GET \(base)/stats: HTTP \(response.status)")
            }
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            let snapshot: StatisticsSnapshot
            do { snapshot = try decoder.decode(StatisticsSnapshot.self, from: response.body) } catch {
                throw GrayscaleError("GET \(base)/stats: not a statistics snapshot (\(error))")
            }
            for version in snapshot.versions where version.service == service {
                windows += version.windows.map { (version.release, $0, snapshot.windowSeconds) }
            }
        }
        if answered == 0, let firstProblem { throw firstProblem }
        let end = Int(to.timeIntervalSince1970.rounded(.down)), start = Int(from.timeIntervalSince1970.rounded(.up))
        let complete = windows.filter {
            let windowStart = Int($0.window.start.timeIntervalSince1970)
            return windowStart >= start && windowStart + $0.length <= end
        }
        let covered = complete.map { Int($0.window.start.timeIntervalSince1970) + $0.length }.max() ?? start
        func sum(_ release: Int) -> VersionObservation {
            // Windows merged (each unit keeps its earliest failure by `at`); histograms add up,
            // percentiles are read off the sum (never averaged).
            let mine = complete.filter { $0.release == release }.map(\.window).sorted { $0.start < $1.start }
            // A window without evidence (a proxy older than it) adds no evidence: its traffic
            // may include allow-listed and opted-in users, who are never evidence.
            var evidence = VersionEvidence()
            for window in mine {
                if let more = window.evidence { evidence.merge(more) }
            }
            // Sockets: clamped per window, as a hostile proxy's counts must not overflow the sum.
            func count(_ value: Int?) -> Int { min(max(value ?? 0, 0), VersionEvidence.countLimit) }
            return VersionObservation(requests: mine.reduce(0) { $0 + $1.requests }, errors: mine.reduce(0) { $0 + $1.errors },
                                      evidence: evidence, p50Ms: evidence.percentileMs(0.5), p99Ms: evidence.percentileMs(0.99),
                                      webSocketsOpened: mine.reduce(0) { min(VersionEvidence.countLimit, $0 + count($1.webSocketsOpened)) },
                                      // Drops only from proxies that count the sockets they open: drops with no exposure behind them would skew the gate.
                                      webSocketsDropped: mine.filter { $0.webSocketsOpened != nil }.reduce(0) {
                                          min(VersionEvidence.countLimit, $0 + count($1.errorsByClass[ErrorClass.webSocketDropped.rawValue]))
                                      })
        }
        return IntervalObservation(from: from, to: Date(timeIntervalSince1970: TimeInterval(covered)),
                                   canary: sum(canary.number), stable: sum(stable.number))
    }
}
