import ArgumentParser
import Foundation
import GrayscaleCore

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Filter the proxy's access log by service, version, time, status and user.")

    @Option(help: "The access log file.") var file = "grayscale-access.log"
    @Option(help: "Only this service.") var service: String?
    @Option(help: "Only this release number.") var version: Int?
    @Option(help: "Only lines newer than this (e.g. 15m, 1h).") var since: String?
    @Option(help: "Only this status (e.g. 502) or class (5xx, 4xx).") var status: String?
    @Option(name: .customLong("app-id"), help: "Only this appId ('anonymous' for requests without one).") var appId: String?
    @OptionGroup var format: FormatOptions

    struct Line: Codable {
        var time: String
        var service: String
        var release: Int
        var label: String
        var route: String
        var appId: String
        var bucket: Int?
        var method: String
        var path: String
        var status: Int
        var latencyMs: Double
        var upstream: String
        var bytesIn: Int
        var bytesOut: Int
        var error: String?
    }

    func validate() throws {
        if let since, parseDuration(since) == nil { throw ValidationError("--since: expected a duration such as 15m or 1h (got '\(since)')") }
        if let status, Int(status) == nil, !(status.count == 3 && status.hasSuffix("xx") && status.first!.isNumber) {
            throw ValidationError("--status: expected a code such as 502 or a class such as 5xx (got '\(status)')")
        }
    }

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw GrayscaleError("\(file): cannot read the access log")
        }
        let cutoff = since.flatMap(parseDuration).map { Date().addingTimeInterval(-Double($0)) }
        let parser = ISO8601DateFormatter()
        parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let decoder = JSONDecoder()
        var lines: [Line] = []
        for (index, raw) in data.split(separator: UInt8(ascii: "\n")).enumerated() {
            guard let line = try? decoder.decode(Line.self, from: raw) else {
                FileHandle.standardError.write(Data("\(file):\(index + 1): not an access-log line, skipped\n".utf8))
                continue
            }
            if let service, line.service != service { continue }
            if let version, line.release != version { continue }
            if let appId, line.appId != appId { continue }
            if let status {
                if let code = Int(status) { if line.status != code { continue } }
                else if String(line.status).first != status.first { continue }
            }
            if let cutoff, let time = parser.date(from: line.time), time < cutoff { continue }
            lines.append(line)
        }
        try format.emit(lines) {
            table(["TIME", "SERVICE", "VERSION", "ROUTE", "APPID", "BUCKET", "METHOD", "PATH", "STATUS", "MS", "ERROR"], lines.map {
                [$0.time, $0.service, "\($0.release) (\($0.label))", $0.route, $0.appId, $0.bucket.map(String.init) ?? "-",
                 $0.method, $0.path, String($0.status), String(format: "%.1f", $0.latencyMs), $0.error ?? ""]
            })
        }
    }
}
