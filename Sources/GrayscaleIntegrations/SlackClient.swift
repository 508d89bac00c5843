import Foundation
import GrayscaleCore
import GrayscaleEdges

/// Posts messages to Slack through libcurl: `chat.postMessage` with a bot token, or an
/// incoming webhook. The token and webhook URL come from the environment or a file and
/// never appear in errors or logs.
public struct SlackClient: Sendable {
    public enum Target: Sendable {
        case botToken(String, apiBase: String)
        case webhook(String)
    }

    public enum Result: Sendable, Equatable {
        case delivered
        /// Slack asked to wait (`429 Retry-After`).
        case retryAfter(Double)
        /// Worth trying again later (Slack or the network down, a server error).
        case failed(String)
        /// This message is refused for good (`channel_not_found`, `msg_too_long`, …): sending
        /// it again cannot succeed until someone changes the configuration.
        case rejected(String)
        /// Every message is refused until someone fixes the token or the webhook
        /// (`invalid_auth`, `token_revoked`, a webhook gone): wait long, keep the messages.
        case unauthorized(String)
    }

    /// chat.postMessage errors that concern this message and that no retry can fix.
    /// https://api.slack.com/methods/chat.postMessage#errors
    static let messageErrors: Set<String> = [
        "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "invalid_blocks", "invalid_arguments",
        "invalid_arg_name", "restricted_action", "cannot_reply_to_message", "too_many_attachments", "as_user_not_supported",
        "invalid_charset", "invalid_form_data", "invalid_post_type", "missing_post_type", "posting_to_general_channel_denied",
        "action_prohibited",
    ]

    /// Errors of the token or the app itself: every message would get them.
    static let credentialErrors: Set<String> = [
        "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission", "missing_scope",
        "org_login_required", "ekm_access_denied", "team_access_not_granted", "team_disabled", "invalid_token", "no_team",
    ]

    public let target: Target
    public let client: CurlHTTPClient

    public init(target: Target, client: CurlHTTPClient = CurlHTTPClient()) {
        self.target = target
        self.client = client
    }

    /// From `GRAYSCALE_SLACK_BOT_TOKEN` (and `GRAYSCALE_SLACK_API`, default https://slack.com/api)
    /// or `GRAYSCALE_SLACK_WEBHOOK_URL`; each may instead name a file with `_FILE`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> SlackClient? {
        func secret(_ name: String) -> String? { Secret.read(name, environment: environment) }
        if let token = secret("GRAYSCALE_SLACK_BOT_TOKEN") {
            return SlackClient(target: .botToken(token, apiBase: environment["GRAYSCALE_SLACK_API"] ?? "https://slack.com/api"))
        }
        if let webhook = secret("GRAYSCALE_SLACK_WEBHOOK_URL") { return SlackClient(target: .webhook(webhook)) }
        return nil
    }

    /// `chat.postMessage`'s body (a webhook takes `text` alone; `thread_ts` answers inside a thread).
    struct PostMessage: Encodable {
        var channel: String?
        var text: String
        var thread_ts: String?
    }

    /// A slash command's reply to its `response_url`.
    struct CommandResponse: Encodable {
        var response_type = "in_channel"
        var text: String
    }

    /// What the Web API answers: `{"ok": false, "error": "…"}` on failure.
    struct APIAnswer: Decodable {
        var ok: Bool?
        var error: String?
    }

    /// Posts `text` (plain text: it is escaped for Slack here, see `SlackText`) to `channel`,
    /// inside the thread `threadTs` when given (a webhook cannot: it posts to its own channel).
    public func post(channel: String, text: String, threadTs: String? = nil) async -> Result {
        let request: OutboundRequest
        let text = SlackText.render(text)
        switch target {
        case .botToken(let token, let apiBase):
            request = OutboundRequest(method: "POST", url: "\(apiBase)/chat.postMessage",
                                      headers: [("Content-Type", "application/json; charset=utf-8"), ("Authorization", "Bearer \(token)")],
                                      body: Self.encode(PostMessage(channel: channel, text: text, thread_ts: threadTs)), timeout: 10)
        case .webhook(let url):
            request = OutboundRequest(method: "POST", url: url, headers: [("Content-Type", "application/json")],
                                      body: Self.encode(PostMessage(text: text)), timeout: 10)
        }
        let response: OutboundResponse
        do { response = try await client.send(request) } catch {
            return .failed("Slack unreachable: \(Self.hidingURL(request.url, in: error.message))")
        }
        switch response.status {
        case 200..<300:
            // chat.postMessage answers 200 with {"ok": false, "error": …} on failure.
            if case .botToken = target, let answer = try? JSONDecoder().decode(APIAnswer.self, from: response.body), answer.ok == false {
                let error = answer.error ?? "unknown error"
                if Self.messageErrors.contains(error) { return .rejected("Slack refused the message for good: \(error)") }
                if Self.credentialErrors.contains(error) { return .unauthorized("Slack refuses the bot token: \(error)") }
                return .failed("Slack refused the message: \(error)")
            }
            return .delivered
        case 429:
            return .retryAfter(response.header("retry-after").flatMap(Double.init) ?? 30)
        case 400:
            // A webhook's word for this message (invalid_payload, no_text, …).
            return .rejected("Slack answered HTTP 400\(Self.word(response))")
        case 401, 403, 404, 410:
            // The token or the webhook itself (invalid_token, no_service, channel_is_archived): every message would get it.
            return .unauthorized("Slack answered HTTP \(response.status)\(Self.word(response))")
        default:
            return .failed("Slack answered HTTP \(response.status)")
        }
    }

    /// Replies to a slash command through its `response_url` (plain text, escaped here).
    /// The URL is good for 30 minutes and five replies: once Slack calls it gone (404, 410)
    /// or refuses the reply (400), no retry can help.
    public func respond(to responseURL: String, text: String) async -> Result {
        let body = Self.encode(CommandResponse(text: SlackText.render(text)))
        let response: OutboundResponse
        do {
            response = try await client.send(OutboundRequest(method: "POST", url: responseURL,
                                                             headers: [("Content-Type", "application/json")], body: body, timeout: 10))
        } catch {
            return .failed("response_url unreachable: \(Self.hidingURL(responseURL, in: error.message))")
        }
        switch response.status {
        case 200..<300: return .delivered
        case 429: return .retryAfter(response.header("retry-after").flatMap(Double.init) ?? 30)
        case 400, 403, 404, 410: return .rejected("response_url answered HTTP \(response.status)\(Self.word(response))")
        default: return .failed("response_url answered HTTP \(response.status)")
        }
    }

    /// The body of an immediate slash-command answer: `text` escaped, shown in the channel.
    public static func commandResponseBody(_ text: String) -> Data { encode(CommandResponse(text: SlackText.render(text))) }

    static func encode(_ payload: some Encodable) -> Data {
        // Strings and optionals only: encoding cannot fail.
        (try? JSONEncoder().encode(payload)) ?? Data("{}".utf8)
    }

    /// `message` with `url` shown as its scheme and host only: a webhook's or a response_url's
    /// path is its secret, and errors reach logs and the outbox's lastError.
    static func hidingURL(_ url: String, in message: String) -> String {
        let shown = URLComponents(string: url).map { "\($0.scheme ?? "https")://\($0.host ?? "?")/…" } ?? "(a Slack URL)"
        return message.replacingOccurrences(of: CurlEasy.redacted(url), with: shown).replacingOccurrences(of: url, with: shown)
    }

    /// The start of an error answer's body, for the log.
    static func word(_ response: OutboundResponse) -> String {
        let word = String(decoding: response.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return word.isEmpty ? "" : ": \(word)"
    }
}

/// Plain text made ready for Slack's message markup: `&`, `<` and `>` escaped as Slack
/// asks (https://api.slack.com/reference/surfaces/formatting#escaping), so a usage line's
/// `<service>` is shown and never taken for a link, and `@U0LAN0Z89` (a Slack user id,
/// as the bot's replies name the executor) written `<@U0LAN0Z89>`, which Slack shows as
/// the person's name.
public enum SlackText {
    /// Text as Slack sends it (`&amp;`, `&lt;`, `&gt;`) back to what was typed.
    public static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&amp;", with: "&")
    }

    public static func render(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            default: escaped.append(character)
            }
        }
        return mentioningUsers(escaped)
    }

    /// `@` followed by a user id (U or W, then 8 to 20 capital letters and digits, as Slack
    /// issues them), at the start or after a character that is not a letter or digit.
    static func mentioningUsers(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 8)
        func isIdByte(_ byte: UInt8) -> Bool { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
        func isWordByte(_ byte: UInt8) -> Bool { isIdByte(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || byte == UInt8(ascii: "_") }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "@"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "U") || bytes[index + 1] == UInt8(ascii: "W"),
               index == 0 || !isWordByte(bytes[index - 1]) {
                var end = index + 2
                while end < bytes.count, isIdByte(bytes[end]) { end += 1 }
                let length = end - index - 2
                if (8...20).contains(length), end == bytes.count || !isWordByte(bytes[end]) {
                    out += Array("<".utf8) + bytes[index..<end] + Array(">".utf8)
                    index = end
                    continue
                }
            }
            out.append(byte)
            index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
