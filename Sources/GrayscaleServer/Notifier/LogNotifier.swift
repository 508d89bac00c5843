import Foundation
import GrayscaleStore
import Logging
import ServiceLifecycle

/// Without Slack, notifications go to the log (so the demo shows what Slack would get).
struct LogNotifier: Service {
    let database: GrayscaleDatabase
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if let due = try? database.undeliveredNotifications() {
                    for message in due {
                        guard let id = message.id else { continue }
                        logger.notice("slack \(message.channel): \(message.text)")
                        try? database.markDelivered(id, at: Date())
                    }
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}
