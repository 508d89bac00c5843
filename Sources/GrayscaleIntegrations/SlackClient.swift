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

    public func post(channel: String, text: String) async -> Result {
        let payload: [String: String]
        let request: OutboundRequest
        switch target {
        case .botToken(let token, let apiBase):
            payload = ["channel": channel, "text": text]
            request = OutboundRequest(method: "POST", url: "\(apiBase)/chat.postMessage",
                                      headers: [("Content-Type", "application/json; charset=utf-8"), ("Authorization", "Bearer \(token)")],
                                      body: try? JSONSerialization.data(withJSONObject: payload), timeout: 10)
        case .webhook(let url):
            payload = ["text": text]
            request = OutboundRequest(method: "POST", url: url, headers: [("Content-Type", "application/json")],
                                      body: try? JSONSerialization.data(withJSONObject: payload), timeout: 10)
        }
        let response: OutboundResponse
        do { response = try await client.send(request) } catch {
            return .failed("Slack unreachable: \(error.message)")
        }
        switch response.status {
        case 200..<300:
            // chat.postMessage answers 200 with {"ok": false, "error": …} on failure.
            if case .botToken = target, let object = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any],
               object["ok"] as? Bool == false {
                let error = object["error"] as? String ?? "unknown error"
                if Self.messageErrors.contains(error) { return .rejected("Slack refused the message for good: \(error)") }
                if Self.credentialErrors.contains(error) { return .unauthorized("Slack refuses the bot token: \(error)") }
                return .failed("Slack refused the message: \(error)")
            }
            return .delivered
        case 429:
            return .retryAfter(response.header("retry-after").flatMap(Double.init) ?? 30)
        case 400:
            // A webhook's word for this message (invalid_payload, no_text, …).
            let word = String(decoding: response.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return .rejected("Slack answered HTTP 400\(word.isEmpty ? "" : ": \(word)")")
        case 401, 403, 404, 410:
            // The token or the webhook itself (invalid_token, no_service, channel_is_archived): every message would get it.
            let word = String(decoding: response.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return .unauthorized("Slack answered HTTP \(response.status)\(word.isEmpty ? "" : ": \(word)")")
        default:
            return .failed("Slack answered HTTP \(response.status)")
        }
    }

    /// Replies to a slash command through its `response_url`.
    public func respond(to responseURL: String, text: String) async -> Result {
        let body = try? JSONSerialization.data(withJSONObject: ["response_type": "in_channel", "text": text])
        do {
            let response = try await client.send(OutboundRequest(method: "POST", url: responseURL,
                                                                 headers: [("Content-Type", "application/json")], body: body, timeout: 10))
            return (200..<300).contains(response.status) ? .delivered : .failed("response_url answered HTTP \(response.status)")
        } catch {
            return .failed("response_url unreachable: \(error.message)")
        }
    }
}
