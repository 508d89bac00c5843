import Foundation
import NIOCore
import NIOHTTP1

extension ProxyStatistics {
    /// `GET /stats[?since=UNIX_SECONDS|ISO8601]`: the statistics snapshot as JSON.
    public func response(to head: HTTPRequestHead) -> HTTPEndpointServer.Response {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard head.method == .GET, path == "/stats" else {
            return .text(.notFound, "not found: GET /stats[?since=UNIX_SECONDS|ISO8601]\n")
        }
        var since: Date?
        if let raw = queryValue("since", uri: head.uri) {
            let text = raw.removingPercentEncoding ?? String(raw)
            guard let parsed = Double(text).map({ Date(timeIntervalSince1970: $0) }) ?? ISO8601DateFormatter().date(from: text) else {
                return .text(.badRequest, "since: expected unix seconds or an ISO 8601 time (got '\(text)')\n")
            }
            since = parsed
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(snapshot(since: since)) else {
            return .text(.internalServerError, "cannot encode statistics\n")
        }
        return HTTPEndpointServer.Response(status: .ok, contentType: "application/json", body: String(decoding: data, as: UTF8.self))
    }
}

extension HTTPEndpointServer.Response {
    public static func text(_ status: HTTPResponseStatus, _ text: String) -> Self {
        Self(status: status, contentType: "text/plain; charset=utf-8", body: text)
    }
}
