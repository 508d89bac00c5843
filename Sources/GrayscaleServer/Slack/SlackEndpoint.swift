import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleProxy
import GrayscaleStore
import Logging
import HTTPTypes

/// `POST /slack/events` (Events API: `url_verification`, `app_mention`) and
/// `POST /slack/commands` (slash commands). Every request must carry a valid, recent
/// signature; the command runs after the acknowledgement, and its reply goes to the
/// channel through the outbox (mentions) or to the slash command's `response_url`.
public struct SlackEndpoint: Sendable {
    public let signature: SlackSignature
    public let bot: ReleaseBot
    public let slack: SlackClient?
    public let now: @Sendable () -> Date
    public let logger: Logger

    public init(signature: SlackSignature, bot: ReleaseBot, slack: SlackClient?, now: @escaping @Sendable () -> Date = { Date() },
                logger: Logger) {
        self.signature = signature
        self.bot = bot
        self.slack = slack
        self.now = now
        self.logger = logger
    }

    /// What an endpoint answers.
    public struct Answer: Sendable {
        public var status: HTTPResponse.Status
        public var contentType: String
        public var body: String

        public init(status: HTTPResponse.Status, contentType: String = "application/json", body: String = "") {
            self.status = status
            self.contentType = contentType
            self.body = body
        }

        /// An empty 200: Slack stops retrying.
        static let acknowledged = Answer(status: .ok, contentType: "text/plain; charset=utf-8")

        static func problem(_ status: HTTPResponse.Status, _ message: String) -> Answer {
            Answer(status: status, body: AdminProblem(status, message).json)
        }
    }

    /// Refuses (401) a request Slack did not sign, or signed too long ago. The admin
    /// server runs it as middleware before either endpoint reads the body.
    public func verify(headers: HTTPFields, body: [UInt8]) throws {
        do {
            try signature.verify(timestamp: headers[HTTPField.Name("X-Slack-Request-Timestamp")!],
                                 signature: headers[HTTPField.Name("X-Slack-Signature")!], body: body, now: now())
        } catch {
            logger.warning("rejected an unsigned or badly signed Slack request", metadata: ["why": "\(error)"])
            throw AdminProblem(.unauthorized, "\(error)")
        }
    }

    /// A signed request to `/slack/events` or `/slack/commands`.
    public func handle(path: String, headers: HTTPFields, body: [UInt8]) async -> Answer {
        path == "/slack/events" ? await event(headers: headers, body: body) : await slashCommand(body)
    }

    /// What the Events API posts (the fields the bot reads): `url_verification` with its
    /// challenge, or an `event_callback` wrapping one event.
    struct EventEnvelope: Decodable {
        var type: String
        var challenge: String?
        var event_id: String?
        var event: Event?

        /// Other event types carry other shapes (`user_change` has an object as `user`):
        /// a field that is not a string reads as absent, and such an event is ignored.
        struct Event: Decodable {
            var type: String
            var user: String?
            var channel: String?
            var text: String?
            /// Set when the message is inside a thread: the thread's first message.
            var thread_ts: String?

            enum CodingKeys: String, CodingKey { case type, user, channel, text, thread_ts }

            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                type = try container.decode(String.self, forKey: .type)
                user = try? container.decodeIfPresent(String.self, forKey: .user)
                channel = try? container.decodeIfPresent(String.self, forKey: .channel)
                text = try? container.decodeIfPresent(String.self, forKey: .text)
                thread_ts = try? container.decodeIfPresent(String.self, forKey: .thread_ts)
            }
        }
    }

    struct Challenge: Encodable {
        var challenge: String
    }

    private func event(headers: HTTPFields, body: [UInt8]) async -> Answer {
        guard let envelope = try? JSONDecoder().decode(EventEnvelope.self, from: Data(body)) else {
            return .problem(.badRequest, "body: expected a JSON event with a type")
        }
        if envelope.type == "url_verification", let challenge = envelope.challenge {
            let body = (try? JSONEncoder().encode(Challenge(challenge: challenge))) ?? Data()
            return .init(status: .ok, body: String(decoding: body, as: UTF8.self))
        }
        guard envelope.type == "event_callback", let event = envelope.event, let eventId = envelope.event_id else { return .acknowledged }
        guard event.type == "app_mention", let text = event.text, let user = event.user, let channel = event.channel else {
            return .acknowledged
        }
        do {
            guard try bot.database.markSlackEventHandled(eventId, at: now()) else {
                logger.info("Slack retry of an event already handled", metadata: ["event": "\(eventId)",
                            "retry": "\(headers[HTTPField.Name("X-Slack-Retry-Num")!] ?? "-")"])
                return .acknowledged
            }
        } catch {
            return .problem(.internalServerError, "\(error)")  // Slack retries; nothing ran
        }
        // A mention inside a thread is answered in that thread.
        let thread = event.thread_ts
        // Slack sends message text with &, < and > escaped; the bot reads it as typed.
        let typed = SlackText.unescape(text)
        let bot = self.bot, logger = self.logger, now = self.now
        Task {
            let reply = await bot.handle(typed, executor: user, commandId: "slack-event:\(eventId)")
            do {
                try bot.database.enqueue(channel: channel, text: reply, service: try? BotCommand.parse(typed).service, at: now(),
                                         threadTs: thread)
            } catch {
                logger.error("reply not queued", metadata: ["problem": "\(error)"])
            }
        }
        return .acknowledged
    }

    private func slashCommand(_ body: [UInt8]) async -> Answer {
        let fields = Self.formFields(body)
        guard let user = fields["user_id"] else { return .problem(.badRequest, "body: user_id: missing") }
        let text = fields["text"] ?? ""
        // Slack names each invocation: a resent request runs the command once.
        let commandId = fields["trigger_id"].map { "slack-trigger:\($0)" }
        let bot = self.bot, logger = self.logger, now = self.now
        if let responseURL = fields["response_url"], slack != nil {
            // The reply goes through the outbox, like notifications: a Slack outage or a 500 delays it, never loses it.
            Task {
                let reply = await bot.handle(text, executor: user, commandId: commandId)
                do {
                    try bot.database.enqueue(channel: fields["channel_id"] ?? "", text: reply, service: try? BotCommand.parse(text).service,
                                             at: now(), responseUrl: responseURL)
                } catch {
                    logger.error("slash command reply not queued", metadata: ["problem": "\(error)"])
                }
            }
            return .init(status: .ok, body: #"{"response_type":"ephemeral","text":"Working on it…"}"#)
        }
        // No way to answer later: answer now.
        let reply = await bot.handle(text, executor: user, commandId: commandId)
        return .init(status: .ok, body: String(decoding: SlackClient.commandResponseBody(reply), as: UTF8.self))
    }

    public static func formFields(_ body: [UInt8]) -> [String: String] { FormFields.parse(String(decoding: body, as: UTF8.self)) }
}

/// `application/x-www-form-urlencoded` fields, as a query string or a form body carries
/// them: one reader for both, so the admin API and the Slack endpoint agree (`+` is a
/// space, then percent-decoding; a field without `=` or that does not decode is left out;
/// the first of repeated names wins).
enum FormFields {
    static func parse(_ text: some StringProtocol) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            func decoded(_ part: Substring) -> String? { String(part).replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let name = decoded(Substring(pair[..<equals])), let value = decoded(Substring(pair[pair.index(after: equals)...])),
                  fields[name] == nil
            else { continue }
            fields[name] = value
        }
        return fields
    }
}
