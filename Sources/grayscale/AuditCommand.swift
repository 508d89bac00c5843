import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleStore

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "The audit trail: who changed what, when, and why; refused changes too.")

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Only this service.") var service: String?
    @Option(help: "The newest N entries.") var limit: Int = 50
    @OptionGroup var format: FormatOptions

    func run() throws {
        let entries = try database.open().auditLog(service: service, limit: limit)
        try format.emit(entries) {
            table(["ID", "WHEN", "WHO", "SERVICE", "ACTION", "OUTCOME", "BEFORE", "AFTER", "DETAIL"], entries.map {
                [String($0.id ?? 0), $0.at.shortISO, $0.actor, $0.service ?? "-", $0.action, $0.outcome,
                 $0.splitBefore.map(brief) ?? "-", $0.splitAfter.map(brief) ?? "-", $0.detail ?? $0.reason ?? ""]
            })
        }
    }

    private func brief(_ split: TrafficSplit) -> String {
        guard let canary = split.canary else { return "\(split.stable.number) only" }
        return "\(split.stable.number)|\(canary.release.number)\(canary.range)"
    }
}
