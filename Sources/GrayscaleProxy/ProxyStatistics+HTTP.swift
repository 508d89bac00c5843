import Foundation

extension ProxyStatistics {
    /// `GET /stats[?since=UNIX_SECONDS|ISO8601]`: the statistics snapshot as JSON.
    /// Throws, naming the parameter, when `since` is neither.
    public func statsJSON(since text: String?) throws -> String {
        var since: Date?
        if let text {
            // A '+' of an offset (…T10:00:00+01:00) that was not percent-encoded reads as a space in a query.
            let iso = text.replacingOccurrences(of: " ", with: "+")
            guard let parsed = Double(text).flatMap({ abs($0) < 1e11 ? Date(timeIntervalSince1970: $0) : nil }) ?? ISO8601DateFormatter().date(from: iso) else {
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
