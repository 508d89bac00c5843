import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleEdges

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Work with rollout policy files.",
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check policy files; every mistake is reported as file:line: field: reason.")

        @Argument(help: "Policy files to check.") var files: [String]
        @OptionGroup var format: FormatOptions

        struct Result: Encodable {
            var file: String
            var ok: Bool
            var error: String?
            var steps: [Double]?
        }

        func validate() throws {
            if files.isEmpty { throw ValidationError("name at least one policy file") }
        }

        func run() throws {
            var results: [Result] = []
            var lines: [String] = []
            for file in files {
                do throws(GrayscaleError) {
                    let policy = try RolloutPolicy.load(path: file)
                    results.append(Result(file: file, ok: true, error: nil, steps: policy.steps.map { Double($0) / 100 }))
                    let steps = policy.steps.map { formatHundredths($0) + "%" }.joined(separator: " → ")
                    lines.append("\(file): ok (\(policy.name): steps \(steps), window \(policy.window.summary))")
                } catch {
                    results.append(Result(file: file, ok: false, error: error.message, steps: nil))
                    lines.append(error.message)
                }
            }
            try format.emit(results) { lines.joined(separator: "\n") }
            if results.contains(where: { !$0.ok }) { throw ExitCode(1) }
        }
    }
}
