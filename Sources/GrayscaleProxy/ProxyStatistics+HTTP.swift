import Foundation

extension ProxyStatistics {
    /// `GET /stats[?since=UNIX_SECONDS|ISO8601]`: the statistics snapshot as JSON.
    /// Throws, naming the parameter, when `since` is neither.
    public func statsJSON(since text: String?) throws -> String {
        var since: Date?
        if let text {
            guard let parsed = Double(text).flatMap({ $0.isFinite ? Date(timeIntervalSince1970: $0) : nil }) ?? ISO8601DateFormatter().date(from: text) else {
                throw GrayscaleStatsQueryError(description: "query: since: expected unix seconds or an ISO 8601 time (got '\(text)')")
            }
            since = parsed
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return String(decoding: try encoder.encode(snapshot(since: since)), as: UTF8.self)
    }
}

/// A `/stats` query that does not read.
public struct GrayscaleStatsQueryError: Error, CustomStringConvertible {
    public var description: String
}
