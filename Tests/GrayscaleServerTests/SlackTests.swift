import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleProxy
import GrayscaleServer
import GrayscaleStore
import GrayscaleTestSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Testing

@Suite("Slack request signatures")
struct SlackSignatureTests {
    static let secret = Array("8f742231b10e8888abcd99yyyzzz85a5".utf8)
    static let timestamp = "1531420618"
    static let body = Array("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c".utf8)
    static let expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    static let then = Date(timeIntervalSince1970: 1_531_420_618 + 30)

    @Test("Slack's published test vector")
    func vector() throws {
        let signature = SlackSignature(secret: Self.secret)
        #expect(signature.signature(timestamp: Self.timestamp, body: Self.body) == Self.expected)
        try signature.verify(timestamp: Self.timestamp, signature: Self.expected, body: Self.body, now: Self.then)
    }

    @Test("hostile signature headers are refused: wrong scheme, odd or non-hex digits, too short or long, one bit off; upper-case hex is the same code")
    func hostileSignatures() throws {
        let signature = SlackSignature(secret: Self.secret)
        let hex = String(Self.expected.dropFirst(3))
        let flipped: String = String(hex.dropLast()) + (hex.last == "3" ? "2" : "3")
        var hostile: [String] = ["", "v0=", "v1=" + hex, "v0=" + String(hex.dropLast()), "v0=" + String(hex.dropLast(2))]
        hostile += ["v0=" + hex + "00", "v0=" + flipped, "v0=" + hex.replacingOccurrences(of: "a", with: "g")]
        hostile += ["v0= " + String(hex.dropLast()), "V0=" + hex, "v0=" + String(repeating: "0", count: 64)]
        hostile.append("v0=" + String(repeating: "ab", count: 5000))
        for bad in hostile {
            #expect(throws: SlackSignature.Failure.badSignature, "\(bad.prefix(80))") {
                try signature.verify(timestamp: Self.timestamp, signature: bad, body: Self.body, now: Self.then)
            }
        }
        try signature.verify(timestamp: Self.timestamp, signature: "v0=" + hex.uppercased(), body: Self.body, now: Self.then)
    }

    @Test("a tampered body, a stale timestamp or a missing header is refused")
    func refusals() {
        let signature = SlackSignature(secret: Self.secret)
        #expect(throws: SlackSignature.Failure.badSignature) {
            try signature.verify(timestamp: Self.timestamp, signature: Self.expected, body: Self.body + Array("&x=1".utf8), now: Self.then)
        }
        #expect(throws: SlackSignature.Failure.staleTimestamp) {
            try signature.verify(timestamp: Self.timestamp, signature: Self.expected, body: Self.body, now: Self.then.addingTimeInterval(600))
        }
        #expect(throws: SlackSignature.Failure.missingHeaders) {
            try signature.verify(timestamp: nil, signature: Self.expected, body: Self.body, now: Self.then)
        }
        #expect(throws: SlackSignature.Failure.missingHeaders) {
            try signature.verify(timestamp: Self.timestamp, signature: nil, body: Self.body, now: Self.then)
        }
        #expect(throws: SlackSignature.Failure.badSignature) {
            try signature.verify(timestamp: Self.timestamp, signature: "v0=00", body: Self.body, now: Self.then)
        }
    }
}

/// A database with engine 7 (stable) and 8 (canary) and a policy naming U0OPERATOR as operator.
struct SlackFixture {
    let directory: URL
    let database: GrayscaleDatabase
    let policies: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-slack-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("policies"), withIntermediateDirectories: true)
        policies = directory.appendingPathComponent("policies").path
        try """
            service: engine
            slack: {channel: "#serverless-tencent", operators: [U0OPERATOR]}
            """.write(toFile: policies + "/engine.yaml", atomically: true, encoding: .utf8)
        database = try GrayscaleDatabase.open(path: directory.appendingPathComponent("grayscale.sqlite").path)
        let who = Attribution(actor: "test")
        try database.publish(ReleaseDraft(service: "engine", number: 7, label: "v2.1.0", upstream: "http://127.0.0.1:1"), salt: "a", by: who, at: Date())
        try database.publish(ReleaseDraft(service: "engine", number: 8, label: "v2.1.1", upstream: "http://127.0.0.1:2"), salt: "b", by: who, at: Date())
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    /// The engine's policy for controller tests: steps 5, 50, 100, the window always open, and `extra` lines.
    func writeEnginePolicy(stepMinimum: String, extra: String = "") throws {
        try """
            service: engine
            steps: [5, 50, 100]
            stepMinimum: \(stepMinimum)
            analysis: {interval: 1s, minRequests: 10}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            \(extra)
            """.write(toFile: policies + "/engine.yaml", atomically: true, encoding: .utf8)
    }

    func bot() -> ReleaseBot {
        let controller = ControllerService(database: database, policiesFolder: policies, metrics: NoMetrics(), logger: Logger(label: "test"))
        return ReleaseBot(database: database, controller: controller, policiesFolder: policies)
    }
}

@Suite("Slack endpoint and notifier", .serialized)
struct SlackEndpointTests {
    static let secret = Array("test-signing-secret".utf8)

    func post(_ port: Int, _ path: String, body: String, signed: Bool = true, timestamp: Date = Date(),
              headers extra: [(String, String)] = []) async throws -> OutboundResponse {
        let stamp = String(Int(timestamp.timeIntervalSince1970))
        var headers: [(name: String, value: String)] = [("Content-Type", path.hasSuffix("events") ? "application/json" : "application/x-www-form-urlencoded")]
        headers.append(("X-Slack-Request-Timestamp", stamp))
        if signed { headers.append(("X-Slack-Signature", SlackSignature(secret: Self.secret).signature(timestamp: stamp, body: Array(body.utf8)))) }
        headers += extra.map { (name: $0.0, value: $0.1) }
        // 60 s, not 20: the endpoint answers from Swift's cooperative pool, which has two threads on
        // this 2-core machine and is shared with the whole parallel suite (the Monte Carlo tests
        // keep it busy for minutes). One CI run of three on 2026-12-07 timed out at 20 s.
        return try await CurlHTTPClient().send(OutboundRequest(method: "POST", url: "http://127.0.0.1:\(port)\(path)", headers: headers,
                                                               body: Data(body.utf8), timeout: 60))
    }

    /// The Slack endpoint for `fixture`'s bot on a loopback port, for the length of `body`.
    func withEndpoint(_ fixture: SlackFixture, slack: SlackClient?, _ body: (Int) async throws -> Void) async throws {
        let bot = fixture.bot()
        let endpoint = SlackEndpoint(signature: SlackSignature(secret: Self.secret), bot: bot, slack: slack, logger: Logger(label: "test"))
        let api = AdminAPI(database: fixture.database, statistics: ProxyStatistics(windowSeconds: 1), registry: PrometheusCollectorRegistry(),
                           bot: bot, slack: endpoint, adminToken: nil)
        try await withAdminServer(api, body)
    }

    static func mention(_ id: String, _ text: String, user: String = "U0OPERATOR") -> String {
        #"{"type":"event_callback","event_id":"\#(id)","event":{"type":"app_mention","user":"\#(user)","channel":"C0RELEASE","text":"\#(text)"}}"#
    }

    @Test("a signed app_mention changes the split; the reply reaches Slack through the outbox; bad requests change nothing")
    func endToEnd() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let fake = try FakeSlack()
        defer { fake.stop() }
        let slack = SlackClient(target: .botToken("xoxb-test-token", apiBase: fake.url))
        try await withEndpoint(fixture, slack: slack) { port in
            let notifier = NotifierService(database: fixture.database, slack: slack, baseBackoff: 0.05, logger: Logger(label: "test"))

            // url_verification answers the challenge.
            let challenge = try await post(port, "/slack/events", body: #"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#)
            #expect(challenge.status == 200)
            #expect(String(decoding: challenge.body, as: UTF8.self).contains("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"))

            // Unsigned, badly signed and replayed requests: 401, nothing changes.
            let text = "<@U0LAN0Z89> -g -m engine -p 20:55"
            #expect(try await post(port, "/slack/events", body: Self.mention("Ev1", text), signed: false).status == 401)
            #expect(try await post(port, "/slack/events", body: Self.mention("Ev1", text), signed: false, headers: [("X-Slack-Signature", "v0=deadbeef")]).status == 401)
            #expect(try await post(port, "/slack/events", body: Self.mention("Ev1", text), timestamp: Date().addingTimeInterval(-600)).status == 401)
            #expect(try fixture.database.split("engine").range.isEmpty)

            // The signed mention: acknowledged at once, then carried out.
            #expect(try await post(port, "/slack/events", body: Self.mention("Ev1", text)).status == 200)
            for _ in 0..<100 where try fixture.database.split("engine").range.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            #expect(try fixture.database.split("engine").range.description == "[20 - 55]")
            // Slack retries the same event: acknowledged, not run again.
            #expect(try await post(port, "/slack/events", body: Self.mention("Ev1", text), headers: [("X-Slack-Retry-Num", "1")]).status == 200)
            // A non-operator may only list.
            #expect(try await post(port, "/slack/events", body: Self.mention("Ev2", "<@U0LAN0Z89> -r -m engine", user: "U0VISITOR")).status == 200)

            for _ in 0..<100 {
                try await notifier.deliverDue()
                if fake.delivered.filter({ $0.json["channel"] == "C0RELEASE" }).count >= 2 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let replies = fake.delivered.filter { $0.json["channel"] == "C0RELEASE" }.compactMap { $0.json["text"] }
            #expect(replies.count == 2)
            // The executor as Slack shows a person (<@U…>), the rest escaped for Slack's markup.
            #expect(replies.first?.contains("Executor: <@U0OPERATOR>\nGrayScale Status: Done") == true)
            #expect(replies.first?.contains("Canary Version 8(v 2.1.1) appid range: [20 - 55]\nNon-Auth GrayScale Weight: 36%") == true)
            #expect(replies.last?.contains("GrayScale Status: Refused: <@U0VISITOR> may only list") == true)
            #expect(fake.received.withLockedValue { $0 }.allSatisfy { $0.path == "/chat.postMessage" && $0.authorization == "Bearer xoxb-test-token" })
            #expect(try fixture.database.split("engine").canary != nil, "the visitor's rollback must not run")
            let audit = try fixture.database.auditLog(service: "engine")
            #expect(audit.contains { $0.actor == "U0OPERATOR" && $0.command == text && $0.splitAfter?.range.description == "[20 - 55]" })
            #expect(audit.contains { $0.actor == "U0VISITOR" && $0.outcome == "refused" })
            #expect(audit.filter { $0.actor == "U0OPERATOR" && $0.action == "manual" }.count == 1, "the retried event ran twice")
            // Nothing arrives later either (a detached task running the retry would).
            for _ in 0..<10 {
                try await notifier.deliverDue()
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(fake.delivered.filter { $0.json["channel"] == "C0RELEASE" }.count == 2)
            #expect(try fixture.database.auditLog(service: "engine").filter { $0.actor == "U0OPERATOR" && $0.action == "manual" }.count == 1)

        }
    }

    @Test("a mention in a thread is answered in the thread; a slash command's reply goes through the outbox to its response_url, surviving a 500")
    func threadsAndSlashReplies() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let fake = try FakeSlack()
        defer { fake.stop() }
        let slack = SlackClient(target: .botToken("xoxb-test-token", apiBase: fake.url))
        try await withEndpoint(fixture, slack: slack) { port in
            let notifier = NotifierService(database: fixture.database, slack: slack, baseBackoff: 0.05, logger: Logger(label: "test"))

            let threaded = #"{"type":"event_callback","event_id":"EvT","event":{"type":"app_mention","user":"U0OPERATOR","channel":"C0RELEASE","#
                + #""ts":"1700000002.000200","thread_ts":"1700000001.000100","text":"<@U0LAN0Z89> -l -m engine"}}"#
            #expect(try await post(port, "/slack/events", body: threaded).status == 200)
            for _ in 0..<200 where fake.delivered.isEmpty {
                try await notifier.deliverDue()
                try await Task.sleep(for: .milliseconds(20))
            }
            // The response_url answers 500 first: the reply waits in the outbox and is sent again.
            fake.script.withLockedValue { $0 = [(status: 500, retryAfter: nil)] }
            let form = "token=x&team_id=T1&channel_id=C0RELEASE&user_id=U0OPERATOR&command=%2Fgray&text=-l+-m+engine"
                + "&response_url=\(fake.url.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)%2Fcommands%2FT1%2F42%2Fsecret&trigger_id=13345224609.7"
            let ack = try await post(port, "/slack/commands", body: form)
            #expect(ack.status == 200)
            for _ in 0..<200 {
                try await notifier.deliverDue()
                if fake.delivered.count >= 2 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let delivered = fake.delivered
            #expect(delivered.count == 2)
            let inThread = delivered.first { $0.path == "/chat.postMessage" }
            #expect(inThread?.json["thread_ts"] == "1700000001.000100")
            #expect(inThread?.json["channel"] == "C0RELEASE")
            let slash = fake.received.withLockedValue { $0 }.filter { $0.path == "/commands/T1/42/secret" }
            #expect(slash.map { $0.json["_status"] } == ["500", "200"], "tried again after the 500, delivered once")
            #expect(slash.last?.json["response_type"] == "in_channel")
            #expect(slash.last?.json["text"]?.hasPrefix("Executor: <@U0OPERATOR>\nGrayScale Status: Done") == true)
        }
    }

    @Test("hostile signed Events API bodies are refused or ignored, never run, never crash the endpoint")
    func hostileEvents() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        try await withEndpoint(fixture, slack: nil) { port in
            let refused = ["", "not json", "[]", "{}", #"{"type":7}"#, #"{"type":"event_callback","event":{"text":"-r -m engine"}}"#,
                           #"{"type":"url_verification","challenge":{"x":1}}"#, String(repeating: "[", count: 10_000)]
            for body in refused {
                #expect(try await post(port, "/slack/events", body: body).status == 400, "\(body.prefix(60))")
            }
            let ignored = [#"{"type":"event_callback","event_id":"Ev9","event":{"type":"message","text":"-r -m engine","user":"U0OPERATOR","channel":"C1"}}"#,
                           #"{"type":"event_callback","event":{"type":"app_mention","text":"-r -m engine","user":"U0OPERATOR","channel":"C1"}}"#,
                           #"{"type":"event_callback","event_id":"Ev8","event":{"type":"app_mention","text":"-r -m engine","channel":"C1"}}"#,
                           #"{"type":"url_verification"}"#,
                           // Other event types have other shapes: acknowledged (Slack would retry a 400), not run.
                           #"{"type":"event_callback","event_id":"Ev7","event":{"type":"user_change","user":{"id":"U1","name":"x"}}}"#,
                           #"{"type":"event_callback","event_id":"Ev6","event":{"type":"app_mention","text":5,"user":"U0OPERATOR","channel":"C1"}}"#]
            for body in ignored {
                #expect(try await post(port, "/slack/events", body: body).status == 200, "\(body.prefix(60))")
            }
            try await Task.sleep(for: .milliseconds(200))
            #expect(try fixture.database.auditLog(service: "engine").filter { $0.action == "rollback" }.isEmpty, "nothing ran")
        }
    }

    @Test("one form reader for query strings and form bodies: + is a space, percent-escapes decode, broken fields are left out")
    func formFields() {
        #expect(SlackEndpoint.formFields(Array("text=-g+-m+engine+-p+20%3A55&user_id=U1&x&=v&bad=%E0%A4%A".utf8))
                == ["text": "-g -m engine -p 20:55", "user_id": "U1", "": "v"])
        #expect(SlackEndpoint.formFields(Array("a=1&a=2&plus=%2B&amp=%26".utf8)) == ["a": "1", "plus": "+", "amp": "&"])
        #expect(SlackEndpoint.formFields([]) == [:])
    }

    @Test("replies are escaped for Slack's markup: usage text shows its <placeholders>, & < > are entities, user ids become mentions")
    func escaping() {
        #expect(SlackText.render("usage: -g -m <service> -p <percent|low:high> & more") == "usage: -g -m &lt;service&gt; -p &lt;percent|low:high&gt; &amp; more")
        #expect(SlackText.render("Executor: @U0LAN0Z89\nRefused: @W012A3CDE4F may only list") == "Executor: <@U0LAN0Z89>\nRefused: <@W012A3CDE4F> may only list")
        // Not user ids: too short, lower case, inside a word or an e-mail address, a local name.
        for plain in ["@U12", "@Uabcdefgh", "me@U0LAN0Z89", "@U0LAN0Z89x", "@kaiyuzeng", "@"] {
            #expect(SlackText.render(plain) == plain)
        }
        #expect(SlackText.render("") == "")
        #expect(SlackText.render("e-value ≥ 1/α: <b>") == "e-value ≥ 1/α: &lt;b&gt;")
    }

    @Test("a message Slack refuses for good is set aside (audit, dead letters) and later messages flow; a blocked service starves no other")
    func deadLetters() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let fake = try FakeSlack()
        defer { fake.stop() }
        fake.missingChannels.withLockedValue { $0 = ["#gone"] }
        let slack = SlackClient(target: .botToken("xoxb-test", apiBase: fake.url))
        let notifier = NotifierService(database: fixture.database, slack: slack, baseBackoff: 0.05, logger: Logger(label: "test"))
        try fixture.database.enqueue(channel: "#gone", text: "engine to a deleted channel", service: "engine", at: Date())
        try fixture.database.enqueue(channel: "#releases", text: "engine after it", service: "engine", at: Date())
        // Another service whose head is waiting an hour for its retry, with a long backlog behind it.
        let blocked = try fixture.database.enqueue(channel: "#releases", text: "events blocked", service: "events", at: Date())
        try fixture.database.markFailed(blocked.id!, error: "Slack answered HTTP 500", retryAt: Date().addingTimeInterval(3600))
        for index in 0..<1_100 { try fixture.database.enqueue(channel: "#releases", text: "events \(index)", service: "events", at: Date()) }
        try fixture.database.enqueue(channel: "#releases", text: "registry message", service: "registry", at: Date())

        for _ in 0..<20 {
            try await notifier.deliverDue()
            if fake.delivered.count == 2 { break }
        }
        #expect(Set(fake.delivered.compactMap { $0.json["text"] }) == ["engine after it", "registry message"])
        #expect(fake.received.withLockedValue { $0 }.filter { $0.json["channel"] == "#gone" }.count == 1, "a permanent refusal is not retried")
        let dead = try fixture.database.deadNotifications()
        #expect(dead.map(\.text) == ["engine to a deleted channel"])
        #expect(dead.first?.lastError?.contains("channel_not_found") == true)
        let audit = try fixture.database.auditLog(service: "engine").filter { $0.action == "notification-dead" }
        #expect(audit.count == 1)
        #expect(audit.first?.detail?.contains("#gone") == true)

        // A revoked token refuses every message: none is set aside, all wait for the token to be fixed.
        let revoked = NotifierService(database: fixture.database, slack: SlackClient(target: .botToken("xoxb-revoked", apiBase: fake.url)),
                                      baseBackoff: 0.05, maxBackoff: 300, logger: Logger(label: "test"))
        try fixture.database.enqueue(channel: "#releases", text: "registry while the token is revoked", service: "registry", at: Date())
        try await revoked.deliverDue()
        #expect(try fixture.database.deadNotifications().count == 1, "an auth error is not the message's fault")
        let waiting = try #require(try fixture.database.outboxHeads().first { $0.text == "registry while the token is revoked" })
        #expect(waiting.nextAttemptAt > Date().addingTimeInterval(200))
        #expect(waiting.lastError?.contains("invalid_auth") == true)
    }

    @Test("with Slack failing (500, then 429) every notification is delivered once, in order per service, across a restart")
    func outboxSurvivesOutage() async throws {
        let fixture = try SlackFixture()
        defer { fixture.remove() }
        let fake = try FakeSlack()
        defer { fake.stop() }
        fake.script.withLockedValue { $0 = [(500, nil), (500, nil), (500, nil), (429, 1), (500, nil)] }
        let slack = SlackClient(target: .botToken("xoxb-test", apiBase: fake.url))
        for index in 1...6 {
            try fixture.database.enqueue(channel: "#releases", text: "engine message \(index)", service: "engine", at: Date())
            try fixture.database.enqueue(channel: "#releases", text: "events message \(index)", service: "events", at: Date())
        }
        var notifier = NotifierService(database: fixture.database, slack: slack, baseBackoff: 0.05, logger: Logger(label: "test"))
        for round in 0..<400 {
            if round == 5 {
                // A restart: a new process, a new connection to the same file.
                notifier = NotifierService(database: try GrayscaleDatabase.open(path: fixture.database.path), slack: slack,
                                           baseBackoff: 0.05, logger: Logger(label: "test"))
            }
            try await notifier.deliverDue()
            if fake.delivered.count == 12 { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        let texts = fake.delivered.compactMap { $0.json["text"] }
        #expect(texts.count == 12)
        #expect(Set(texts).count == 12, "a message was delivered twice")
        #expect(texts.filter { $0.hasPrefix("engine") } == (1...6).map { "engine message \($0)" })
        #expect(texts.filter { $0.hasPrefix("events") } == (1...6).map { "events message \($0)" })
        #expect(fake.received.withLockedValue { $0.count } > 12, "Slack's failures were not exercised")
        #expect(try fixture.database.undeliveredNotifications().isEmpty)
    }
}
