import Foundation
import NIOConcurrencyHelpers

/// A local stand-in for Slack's Web API: records every request it receives and
/// answers from a script (e.g. 500, then 429 with Retry-After, then 200).
public final class FakeSlack: Sendable {
    public struct Received: Sendable {
        public var path: String
        public var authorization: String?
        public var json: [String: String]
    }

    let server: FixtureHTTPServer
    public let received = NIOLockedValueBox<[Received]>([])
    /// Statuses to answer with, in order; once used up, 200.
    public let script = NIOLockedValueBox<[(status: Int, retryAfter: Int?)]>([])
    /// Channels whose messages Slack refuses with 200 {"ok": false, "error": "channel_not_found"}.
    public let missingChannels = NIOLockedValueBox<Set<String>>([])

    public var url: String { server.url }

    public init() throws {
        let received = self.received, script = self.script, missingChannels = self.missingChannels
        server = try FixtureHTTPServer { request in
            let next = script.withLockedValue { $0.isEmpty ? (status: 200, retryAfter: nil) : $0.removeFirst() }
            var json = (try? JSONSerialization.jsonObject(with: Data(request.body.utf8)) as? [String: Any])?
                .compactMapValues { $0 as? String } ?? [:]
            let missing = json["channel"].map { channel in missingChannels.withLockedValue { $0.contains(channel) } } ?? false
            // A revoked token: every message is refused with invalid_auth.
            let revoked = request.header("authorization") == "Bearer xoxb-revoked"
            json["_status"] = revoked ? "invalid_auth" : missing ? "channel_not_found" : String(next.status)
            received.withLockedValue { $0.append(.init(path: request.uri, authorization: request.header("authorization"), json: json)) }
            let answer = revoked ? #"{"ok":false,"error":"invalid_auth"}"# : missing ? #"{"ok":false,"error":"channel_not_found"}"#
                : next.status == 200 ? #"{"ok":true}"# : #"{"ok":false,"error":"fake"}"#
            var headers = [("content-type", "application/json")]
            if let retryAfter = next.retryAfter { headers.append(("retry-after", String(retryAfter))) }
            return .respond(status: next.status, headers: headers, body: answer)
        }
    }

    /// The texts Slack accepted (answered 200), in arrival order.
    public var delivered: [Received] { received.withLockedValue { $0.filter { $0.json["_status"] == "200" } } }

    public func stop() { server.stop() }
}
