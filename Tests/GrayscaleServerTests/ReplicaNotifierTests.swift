import Foundation
import GrayscaleIntegrations
import GrayscaleServer
import GrayscaleStore
import GrayscaleTestSupport
import Logging
import Testing

/// Replicas on one PostgreSQL each run a notifier; the outbox still reaches Slack once.
@Suite("Replica notifiers")
struct ReplicaNotifierTests {
    @Test("three replicas' notifiers on one PostgreSQL outbox: every message delivered once, in order per service")
    func onceAcrossReplicas() async throws {
        let url = try PostgresServer.shared.get().createDatabase("notifier")
        let slack = try FakeSlack()
        defer { slack.stop() }
        let writer = try GrayscaleDatabase.open(path: url)
        var expected: [String] = []
        for index in 0..<30 {
            let service = index % 2 == 0 ? "engine" : "registry"
            let text = "\(service) message \(index)"
            try writer.enqueue(channel: "#releases", text: text, service: service, at: Date())
            expected.append(text)
        }
        let notifiers = try (0..<3).map { replica in
            var notifier = NotifierService(database: try GrayscaleDatabase.open(path: url),
                                           slack: SlackClient(target: .botToken("xoxb-test", apiBase: slack.url)),
                                           poll: .milliseconds(20), logger: Logger(label: "replica-\(replica)"))
            notifier.exclusive = (holder: "replica-\(replica)", period: 30)
            return notifier
        }
        let running = notifiers.map { notifier in Task { try await notifier.run() } }
        defer { for task in running { task.cancel() } }
        let deadline = ContinuousClock.now + .seconds(180)
        while try !writer.undeliveredNotifications().isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let delivered = slack.delivered.compactMap { $0.json["text"] }
        #expect(delivered.sorted() == expected.sorted(), "each message once")
        for service in ["engine", "registry"] {
            #expect(delivered.filter { $0.hasPrefix(service) } == expected.filter { $0.hasPrefix(service) }, "\(service) in order")
        }
    }
}
