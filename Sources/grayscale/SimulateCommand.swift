import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleSimulation

struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Replay incidents against a rollout policy and report how many users it would have hurt.",
        discussion: """
            Each scenario runs under its policy (grayscale), and on the same traffic without grayscale and with fixed
            steps and no analysis. Exits 1 if any scenario's expect fails. Paths in a scenario are relative to the
            working directory.
            """)

    @Argument(help: "Scenario files, or folders of them.") var paths: [String]
    @Option(help: "Use this policy instead of each scenario's.") var policy: String?
    @Option(help: "Override each scenario's seed.") var seed: UInt64?
    @Option(help: "Monte Carlo: run each scenario this many times with consecutive seeds.") var runs: Int?
    @Option(help: "Write the timeline as SVG: a file for one scenario, a folder for several.") var chart: String?
    @OptionGroup var format: FormatOptions

    func validate() throws {
        if paths.isEmpty { throw ValidationError("name at least one scenario file or folder") }
        if let runs, runs < 1 { throw ValidationError("--runs must be at least 1") }
    }

    func files() throws -> [String] {
        try paths.flatMap { path -> [String] in
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw GrayscaleError("\(path): no such scenario file or folder")
            }
            guard isDirectory.boolValue else { return [path] }
            return try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".yaml") }.sorted()
                .map { (path as NSString).appendingPathComponent($0) }
        }
    }

    func run() throws {
        let all = try files()
        // Platform scenarios (issue 16: several services released as one) run beside the incidents.
        let platformFiles = all.filter(PlatformScenario.isPlatform(path:))
        let platforms = try platformFiles.map { file throws in try PlatformScenario.load(path: file, policyOverride: policy) }
        let scenarios = try all.filter { !platformFiles.contains($0) }.map { file throws in try Scenario.load(path: file, policyOverride: policy) }
        if runs != nil, !platforms.isEmpty {
            throw ValidationError("--runs does not take platform scenarios yet (\(platformFiles.joined(separator: ", ")))")
        }
        let started = Date()
        if let runs {
            let reports = scenarios.map { MonteCarloReport.make($0, runs: runs) }
            let seconds = Date().timeIntervalSince(started)
            try format.emit(reports) {
                reports.map { report in
                    let rollback = report.rolledBackAfter.map { "mean \(formatDuration(Int($0.mean))), p50 \(formatDuration(Int($0.p50))), p95 \(formatDuration(Int($0.p95)))" } ?? "never"
                    return """
                        \(report.scenario): \(report.runs) runs
                          users hurt: mean \(report.usersHurt.mean), p50 \(Int(report.usersHurt.p50)), p95 \(Int(report.usersHurt.p95))\(report.faultRuns < report.runs && report.faultRuns > 0 ? " (over the \(report.faultRuns) runs whose fault began)" : "")
                          time to rollback: \(rollback)
                          rolled back in \(Int((report.rollbackRate * 100).rounded()))% of runs; false rollbacks \(String(format: "%.1f", report.falseRollbackRate * 100))%
                        """
                }.joined(separator: "\n") + String(format: "\n%d simulated requests in %.2f s (%.1f million/s)",
                                                   reports.reduce(0) { $0 + $1.simulatedRequests }, seconds,
                                                   Double(reports.reduce(0) { $0 + $1.simulatedRequests }) / seconds / 1e6)
            }
            return
        }
        let reports = scenarios.map { SimulationReport.make($0, seed: seed) }
        let platformReports = platforms.map { PlatformReport.make($0, seed: seed) }
        if let chart {
            for report in reports {
                let path = reports.count == 1 && chart.hasSuffix(".svg") ? chart : (chart as NSString).appendingPathComponent("\(report.scenario).svg")
                if reports.count > 1 { try FileManager.default.createDirectory(atPath: chart, withIntermediateDirectories: true) }
                try SimulationChart.svg(report).write(toFile: path, atomically: true, encoding: .utf8)
            }
        }
        let documents = reports.map { $0.json() } + platformReports.map { $0.json() }
        let outcomes = reports.map { ($0.scenario, $0.passed) } + platformReports.map { ($0.scenario, $0.passed) }
        switch format.format {
        case .json:
            print(documents.count == 1 ? documents[0] : "[\n" + documents.joined(separator: ",\n") + "\n]")
        case .table:
            print((reports.map(\.text) + platformReports.map(\.text)).joined(separator: "\n\n"))
            let failed = outcomes.filter { !$0.1 }.map(\.0)
            print("\n\(outcomes.count - failed.count) passed, \(failed.count) failed" + (failed.isEmpty ? "" : ": \(failed.joined(separator: ", "))"))
        }
        if outcomes.contains(where: { !$0.1 }) { throw ExitCode(1) }
    }
}
