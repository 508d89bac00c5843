import Foundation

/// Runs the built `grayscale` binary as a separate process, as a user would.
struct CLIRunner {
    let database: String
    let directory: URL

    static let binary: URL = {
        if let explicit = ProcessInfo.processInfo.environment["GRAYSCALE_BIN"] { return URL(fileURLWithPath: explicit) }
        // The test bundle and the executable are built into the same folder.
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("grayscale")
    }()

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        database = directory.appendingPathComponent("grayscale.sqlite").path
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    /// Starts `grayscale ARGS` in the background, its output appended to `log`.
    static func launch(_ arguments: [String], log: URL, environment: [String: String] = [:]) throws -> Process {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `grayscale ARGS --db DATABASE` and waits for it.
    @discardableResult
    func run(_ arguments: [String], database: Bool = true) throws -> Output {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments + (database ? ["--db", self.database] : [])
        process.currentDirectoryURL = directory
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "GRAYSCALE_DB")
        environment["USER"] = "cli-test"
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// `run` on a thread of its own: a test that runs many commands does not hold the
    /// cooperative pool's few threads while each one runs.
    @discardableResult
    func runOffThePool(_ arguments: [String], database: Bool = true) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try self.run(arguments, database: database) }) }.start()
        }
    }

    /// Runs a command that must succeed and decodes its `--format json` output.
    func json(_ arguments: [String]) throws -> Any {
        let output = try run(arguments + ["--format", "json"])
        guard output.status == 0 else { throw CLIFailure(arguments: arguments, output: output) }
        return try JSONSerialization.jsonObject(with: Data(output.stdout.utf8))
    }
}

struct CLIFailure: Error, CustomStringConvertible {
    var arguments: [String]
    var output: CLIRunner.Output
    var description: String { "grayscale \(arguments.joined(separator: " ")) exited \(output.status): \(output.stderr)" }
}
