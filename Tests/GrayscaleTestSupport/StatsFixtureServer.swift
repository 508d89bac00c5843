import Foundation
import NIOConcurrencyHelpers

/// Answers `GET /stats` like a proxy whose releases (7 and 8 unless told) are healthy:
/// one-second windows of the last minute, 100 requests each, no errors. Any other path
/// answers 200 after 400 ms (a release's health check). While `failing` is set it answers 503 (a
/// metrics source down).
public final class StatsFixtureServer: Sendable {
    let server: FixtureHTTPServer
    public let releases = NIOLockedValueBox<[Int]>([7, 8])
    public let failing = NIOLockedValueBox(false)

    public var url: String { server.url }

    public init() throws {
        let releases = self.releases, failing = self.failing
        server = try FixtureHTTPServer { request in
            // A health check takes a moment, as a cold function would.
            guard request.path.hasPrefix("/stats") else { return .json("{}", delay: .milliseconds(400)) }
            guard !failing.withLockedValue({ $0 }) else { return .json(#"{"error":"down"}"#, status: 503) }
            let now = Int(Date().timeIntervalSince1970)
            let formatter = ISO8601DateFormatter()
            func windows() -> String {
                (now - 60..<now).map { start in
                    #"{"start":"\#(formatter.string(from: Date(timeIntervalSince1970: TimeInterval(start))))","requests":100,"errors":0,"errorsByClass":{},"affectedUsers":0,"affectedUserIds":[],"anonymousErrors":0,"latencyMs":{"p50":20,"p90":30,"p99":40,"max":50}}"#
                }.joined(separator: ",")
            }
            func version(_ release: Int) -> String {
                #"{"service":"engine","release":\#(release),"label":"v\#(release)","totals":{"start":"\#(formatter.string(from: Date()))","requests":0,"errors":0,"errorsByClass":{},"affectedUsers":0,"affectedUserIds":[],"anonymousErrors":0,"latencyMs":{"p50":0,"p90":0,"p99":0,"max":0}},"windows":[\#(windows())]}"#
            }
            let versions = releases.withLockedValue { $0 }.map(version).joined(separator: ",")
            return .json(#"{"windowSeconds":1,"versions":[\#(versions)]}"#)
        }
    }

    public func stop() { server.stop() }
}
