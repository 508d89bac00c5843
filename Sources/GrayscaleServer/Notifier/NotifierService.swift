import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleStore
import Logging
import ServiceLifecycle
import Synchronization

/// Delivers the outbox to Slack: each service's messages in order (a message waits
/// for the one before it), retried with exponential backoff, `Retry-After` honoured.
/// A message Slack refuses for good is set aside (dashboard, audit) and the next goes on;
/// each service's backlog is read on its own, so one service cannot starve the others.
/// The outbox is in SQLite, so nothing is lost while Slack is down or across restarts.
public struct NotifierService: Service {
    public let database: GrayscaleDatabase
    public let slack: SlackClient
    public let poll: Duration
    /// The first retry's delay in seconds; it doubles each attempt up to `maxBackoff`.
    public let baseBackoff: Double
    public let maxBackoff: Double
    let now: @Sendable () -> Date
    let logger: Logger
    /// Set for replicas sharing one database: only the holder of the notifier lease delivers,
    /// so a message goes out once however many replicas run.
    public var exclusive: (holder: String, period: Double)?
    /// Messages Slack took whose delivery could not be written yet (the database was locked
    /// or down): they are marked delivered first thing, never sent again.
    private let sentUnmarked = SentUnmarked()

    final class SentUnmarked: Sendable {
        let ids = Mutex<Set<Int64>>([])
    }

    public init(database: GrayscaleDatabase, slack: SlackClient, poll: Duration = .milliseconds(500), baseBackoff: Double = 2,
                maxBackoff: Double = 300, now: @escaping @Sendable () -> Date = { Date() }, logger: Logger) {
        self.database = database
        self.slack = slack
        self.poll = poll
        self.baseBackoff = baseBackoff
        self.maxBackoff = maxBackoff
        self.now = now
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    _ = try await deliverDue(while: mayDeliver)
                } catch {
                    logger.warning("outbox unavailable", metadata: ["problem": "\(error)"])
                }
                try? await Task.sleep(for: poll)
            }
        }
    }

    /// True when this notifier may send now: always alone; among replicas only while it
    /// holds the notifier lease with at least half of it left (more than a Slack call's timeout).
    public func mayDeliver() throws(GrayscaleError) -> Bool {
        guard let exclusive else { return true }
        let standing = try database.claimLease(holder: exclusive.holder, period: exclusive.period, at: now(),
                                               name: GrayscaleDatabase.notifierLeaseName)
        if case .leading(let lease) = standing {
            // Deliver only with a good part of the lease left: a send must not outlast it.
            return lease.expiresAt.timeIntervalSince(now()) > exclusive.period / 2
        }
        return false
    }

    /// Sends every service's oldest undelivered message that is due; returns how many went out.
    /// `mayContinue` is asked before each message (replicas: the notifier lease is renewed and checked).
    @discardableResult
    public func deliverDue(while mayContinue: () throws -> Bool = { true }) async throws -> Int {
        var delivered = 0
        var blocked = Set<String>()
        for message in try database.outboxHeads() {
            guard try mayContinue() else { break }
            guard let id = message.id else { continue }
            if sentUnmarked.ids.withLock({ $0.contains(id) }) {
                // Slack has it already: only the outbox does not know yet.
                try database.markDelivered(id, at: now())
                sentUnmarked.ids.withLock { _ = $0.remove(id) }
                continue
            }
            // A slash command's reply goes to its own URL (no bot token, 30 minutes to live):
            // it waits for nothing else, and nothing waits for it.
            let key = message.responseUrl != nil ? "response-url:\(id)" : message.service ?? ""
            guard !blocked.contains(key) else { continue }
            guard message.nextAttemptAt <= now() else {
                blocked.insert(key)  // later messages of this service wait for it
                continue
            }
            let result = if let responseUrl = message.responseUrl {
                await slack.respond(to: responseUrl, text: message.text)
            } else {
                await slack.post(channel: message.channel, text: message.text, threadTs: message.threadTs)
            }
            switch result {
            case .delivered:
                delivered += 1
                do {
                    try database.markDelivered(id, at: now())
                } catch {
                    // Sent, not recorded: remembered, so the next pass records it instead of sending it again.
                    sentUnmarked.ids.withLock { _ = $0.insert(id) }
                    throw error
                }
            case .retryAfter(let seconds):
                try database.markFailed(id, error: "rate limited (Retry-After \(seconds)s)", retryAt: now().addingTimeInterval(seconds))
                blocked.insert(key)
            case .rejected(let problem):
                // No retry can fix it: set it aside (dashboard, audit) and let the service's next messages go.
                try database.markDead(id, error: problem, at: now())
                logger.error("notification set aside: Slack refused it for good", metadata: ["id": "\(id)", "problem": "\(problem)"])
            case .unauthorized(let problem):
                // Nothing this message can change: keep it, and everything behind it, and ask again much later.
                try database.markFailed(id, error: problem, retryAt: now().addingTimeInterval(maxBackoff))
                logger.error("Slack refuses Grayscale's credentials; messages wait until they are fixed", metadata: [
                    "problem": "\(problem)", "retryIn": "\(maxBackoff)s"])
                blocked.insert(key)
            case .failed(let problem):
                let delay = min(maxBackoff, baseBackoff * pow(2, Double(message.attempts)))
                try database.markFailed(id, error: problem, retryAt: now().addingTimeInterval(delay))
                logger.warning("notification not delivered", metadata: ["id": "\(id)", "problem": "\(problem)", "retryIn": "\(delay)s"])
                blocked.insert(key)
            }
        }
        return delivered
    }
}
