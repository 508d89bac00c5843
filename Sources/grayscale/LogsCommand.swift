import ArgumentParser
import Foundation
import GrayscaleCore
#if canImport(Glibc)
import Glibc
#endif

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Filter the proxy's access log by service, version, time, status and user.",
        discussion: """
            Streams the file: memory stays small whatever its size, and matches are printed as \
            they are found. --format json prints one JSON object per line (JSON lines), as the \
            log itself stores them.
            """)

    @Option(help: "The access log file.") var file = "grayscale-access.log"
    @Option(help: "Only this service.") var service: String?
    @Option(help: "Only this release number.") var version: Int?
    @Option(help: "Only lines newer than this (e.g. 15m, 1h).") var since: String?
    @Option(help: "Only this status (e.g. 502) or class (5xx, 4xx).") var status: String?
    @Option(name: .customLong("app-id"), help: "Only this appId ('anonymous' for requests without one).") var appId: String?
    @Flag(help: "Also read the rotated files (FILE.N … FILE.1, gzip-compressed ones too), oldest first.") var rotated = false
    @Flag(help: "Keep reading as the file grows, as tail -f (follows rotation and truncation).") var follow = false
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
        if follow {
            // Following ends with SIGINT or SIGTERM, even when the parent started us with them blocked.
            var signals = sigset_t()
            sigemptyset(&signals)
            sigaddset(&signals, SIGINT)
            sigaddset(&signals, SIGTERM)
            pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        }
        let cutoff = since.flatMap(parseDuration).map { Date().addingTimeInterval(-Double($0)) }
        let filter = AccessLogFilter(service: service, version: version, appId: appId, status: status, cutoff: cutoff)
        var output = LogOutput(format: format.format)
        var files = rotated ? Self.rotatedFiles(of: file) : []
        files.append(file)
        for (index, path) in files.enumerated() {
            let isLast = index == files.count - 1
            let reader = try LineSource.open(path, follow: follow && isLast)
            var lineNumber = 0
            try reader.forEachLine { line in
                lineNumber += 1
                switch filter.check(line) {
                case .no: return
                case .yes(let decoded): output.write(line, decoded: decoded)
                case .unreadable:
                    output.flush()
                    FileHandle.standardError.write(Data("\(path):\(lineNumber): not an access-log line, skipped\n".utf8))
                }
            } idle: {
                output.flush()
            }
        }
        output.finish()
    }

    /// FILE.N … FILE.1 (or .gz), the oldest first, for those that exist.
    static func rotatedFiles(of path: String) -> [String] {
        var found: [String] = []
        var number = 1
        while true {
            let candidates = ["\(path).\(number)", "\(path).\(number).gz"]
            guard let existing = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else { break }
            found.append(existing)
            number += 1
        }
        return found.reversed()
    }
}

/// Decides on a line from its bytes where it can. The proxy writes every line with the
/// same keys in the same order and escapes quotes inside values, so `,"release":8,` can
/// only be the release field: a line that lacks a filter's exact bytes cannot match, and
/// is passed over without being decoded. Lines that have them (or come from another
/// writer) are decoded and checked field by field.
struct AccessLogFilter {
    enum Verdict {
        case no
        case yes(LogsCommand.Line?)
        case unreadable
    }

    let patterns: [[UInt8]]
    let service: String?, version: Int?, appId: String?, status: String?
    let statusCode: Int?
    let cutoff: Date?
    let cutoffText: [UInt8]?
    /// For the lines that are decoded: made once, not per line.
    let decoder = JSONDecoder()
    let timeParser: ISO8601DateFormatter = {
        let parser = ISO8601DateFormatter()
        parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return parser
    }()
    static let ours = Array(#"{"time":""#.utf8)

    init(service: String?, version: Int?, appId: String?, status: String?, cutoff: Date?) {
        self.service = service
        self.version = version
        self.appId = appId
        self.status = status
        self.cutoff = cutoff
        statusCode = status.flatMap { Int($0) }
        var patterns: [[UInt8]] = []
        func json(_ text: String) -> String {
            String(decoding: (try? JSONEncoder().encode(text)) ?? Data(), as: UTF8.self).replacingOccurrences(of: "\\/", with: "/")
        }
        if let service { patterns.append(Array(#","service":\#(json(service)),"release":"#.utf8)) }
        if let version { patterns.append(Array(#","release":\#(version),"label":"#.utf8)) }
        if let appId { patterns.append(Array(#","appId":\#(json(appId)),"bucket":"#.utf8)) }
        if let statusCode { patterns.append(Array(#","status":\#(statusCode),"latencyMs":"#.utf8)) }
        self.patterns = patterns
        cutoffText = cutoff.map { date in
            var bytes: [UInt8] = []
            var seconds = time_t(Int(date.timeIntervalSince1970.rounded(.down)))
            var parts = tm()
            gmtime_r(&seconds, &parts)
            let millis = Int((date.timeIntervalSince1970 * 1000).rounded(.down)) % 1000
            let text = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                              Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), millis)
            bytes.append(contentsOf: text.utf8)
            return bytes
        }
    }

    func check(_ line: UnsafeRawBufferPointer) -> Verdict {
        guard line.count > 0 else { return .no }
        // The proxy's own lines: `{"time":"2026-11-25T06:00:00.123Z",` and the keys in its order.
        if line.starts(with: Self.ours), line.count > 34, line[28] == UInt8(ascii: "."), line[32] == UInt8(ascii: "Z"),
           line[33] == UInt8(ascii: "\""), line[34] == UInt8(ascii: ","), line[line.count - 1] == UInt8(ascii: "}") {
            for pattern in patterns {
                guard Self.contains(line, pattern) else { return .no }
            }
            if let cutoffText {
                // The time is the first value: 24 bytes after `{"time":"`, compared as text (fixed width, UTC).
                let time = UnsafeRawBufferPointer(rebasing: line[9..<33])
                if time.lexicographicallyPrecedes(cutoffText) { return .no }
            }
            if let status, statusCode == nil {
                // A status class: exactly three digits, the first the class's, after the status key.
                let key = Array(#","status":"#.utf8)
                guard let at = Self.position(of: key, in: line) else { return .no }
                let digits = at + key.count
                guard digits + 4 <= line.count, line[digits] == status.utf8.first,
                      (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(line[digits + 1]),
                      (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(line[digits + 2]), line[digits + 3] == UInt8(ascii: ",")
                else { return .no }
            }
            return .yes(nil)
        }
        return decodedCheck(line)
    }

    /// Whether `pattern` occurs in `line`.
    static func contains(_ line: UnsafeRawBufferPointer, _ pattern: [UInt8]) -> Bool { position(of: pattern, in: line) != nil }

    /// Where `pattern` first occurs in `line`: memchr for its first byte, memcmp for the rest.
    static func position(of pattern: [UInt8], in line: UnsafeRawBufferPointer) -> Int? {
        guard let first = pattern.first, let base = line.baseAddress, pattern.count <= line.count else { return pattern.isEmpty ? 0 : nil }
        return pattern.withUnsafeBytes { needle -> Int? in
            var start = 0
            let last = line.count - pattern.count
            while start <= last, let found = memchr(base + start, Int32(first), last - start + 1) {
                let at = base.distance(to: UnsafeRawPointer(found))
                if memcmp(base + at, needle.baseAddress!, pattern.count) == 0 { return at }
                start = at + 1
            }
            return nil
        }
    }

    private func decodedCheck(_ line: UnsafeRawBufferPointer) -> Verdict {
        guard let decoded = try? decoder.decode(LogsCommand.Line.self, from: Data(line)) else { return .unreadable }
        if let service, decoded.service != service { return .no }
        if let version, decoded.release != version { return .no }
        if let appId, decoded.appId != appId { return .no }
        if let status {
            if let statusCode { if decoded.status != statusCode { return .no } }
            else if decoded.status / 100 != Int(String(status.prefix(1))) ?? -1 { return .no }
        }
        if let cutoff, let time = timeParser.date(from: decoded.time), time < cutoff { return .no }
        return .yes(decoded)
    }
}

/// Where matches go: JSON lines copied as the log has them, or table rows (fixed widths,
/// so nothing has to be held to align them). Buffered, flushed in 256 KiB writes.
struct LogOutput {
    let format: OutputFormat
    var buffer: [UInt8] = []
    var wroteHeader = false
    let decoder = JSONDecoder()
    static let columns: [(String, Int)] = [("TIME", 24), ("SERVICE", 10), ("VERSION", 14), ("ROUTE", 6), ("APPID", 16), ("BUCKET", 6),
                                           ("METHOD", 6), ("PATH", 24), ("STATUS", 6), ("MS", 8), ("ERROR", 0)]

    init(format: OutputFormat) {
        self.format = format
        buffer.reserveCapacity(1 << 18)
    }

    mutating func write(_ line: UnsafeRawBufferPointer, decoded: LogsCommand.Line?) {
        switch format {
        case .json:
            buffer.append(contentsOf: line)
            buffer.append(UInt8(ascii: "\n"))
        case .table:
            guard let row = decoded ?? (try? decoder.decode(LogsCommand.Line.self, from: Data(line))) else { return }
            if !wroteHeader {
                wroteHeader = true
                append(Self.columns.map(\.0))
            }
            append([row.time, row.service, "\(row.release) (\(row.label))", row.route, row.appId, row.bucket.map(String.init) ?? "-",
                    row.method, row.path, String(row.status), String(format: "%.1f", row.latencyMs), row.error ?? ""])
        }
        if buffer.count >= 1 << 18 { flush() }
    }

    private mutating func append(_ cells: [String]) {
        let text = zip(cells, Self.columns).map { cell, column in
            column.1 > 0 && cell.count < column.1 ? cell.padding(toLength: column.1, withPad: " ", startingAt: 0) : cell
        }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        buffer.append(contentsOf: text.utf8)
        buffer.append(UInt8(ascii: "\n"))
    }

    mutating func flush() {
        guard !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(1, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    if errno == EPIPE { exit(0) }  // the reader went away (a pipe into head)
                    FileHandle.standardError.write(Data("grayscale logs: cannot write the output (errno \(errno))\n".utf8))
                    exit(1)
                }
                offset += written
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }

    mutating func finish() {
        if format == .table, !wroteHeader { append(Self.columns.map(\.0)) }
        flush()
    }
}

/// An access log's lines, read in 1 MiB blocks (a gzip-compressed file through `gzip -dc`);
/// with `follow`, waits at the end for more, as `tail -f`, and starts over when the file
/// is replaced (rotated) or truncated.
struct LineSource {
    let path: String
    let follow: Bool
    let compressed: Bool

    /// The longest line read whole; longer ones are reported unreadable.
    static let maxLine = 16 << 20

    static func open(_ path: String, follow: Bool) throws -> LineSource {
        guard FileManager.default.isReadableFile(atPath: path) else { throw GrayscaleError("\(path): cannot read the access log") }
        return LineSource(path: path, follow: follow, compressed: path.hasSuffix(".gz"))
    }

    func forEachLine(_ body: (UnsafeRawBufferPointer) -> Void, idle: () -> Void) throws {
        var process: Process?
        var fd: Int32
        if compressed {
            let gzip = Process()
            gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
            gzip.arguments = ["-dc", "--", path]
            let pipe = Pipe()
            gzip.standardOutput = pipe
            try gzip.run()
            try? pipe.fileHandleForWriting.close()  // only gzip writes: its exit is the end of the stream
            process = gzip
            fd = pipe.fileHandleForReading.fileDescriptor
        } else {
            fd = Glibc.open(path, O_RDONLY)
            guard fd >= 0 else { throw GrayscaleError("\(path): cannot read the access log") }
        }
        defer { if process == nil { close(fd) } }
        let blockSize = 1 << 20
        var block = [UInt8](repeating: 0, count: blockSize * 2)
        var kept = 0  // bytes of an unfinished line at the start of `block`
        var offset = 0
        var replaced = false  // the path names another file now: read this one to its end first
        while true {
            if kept == block.count { block += [UInt8](repeating: 0, count: block.count) }  // a line longer than the block (up to maxLine)
            let count = block.withUnsafeMutableBytes { bytes in read(fd, bytes.baseAddress! + kept, bytes.count - kept) }
            if count < 0 { if errno == EINTR { continue }; throw GrayscaleError("\(path): read failed (errno \(errno))") }
            if count == 0 {
                guard follow else { break }
                idle()
                usleep(200_000)
                // Rotated (another file at the path) or truncated: start over with the file now there.
                var now = stat(), open = stat()
                if stat(path, &now) == 0, fstat(fd, &open) == 0, now.st_ino != open.st_ino || now.st_size < offset {
                    // Lines written to the old file since the last read come first: one more pass to its end.
                    if now.st_ino != open.st_ino, !replaced {
                        replaced = true
                        continue
                    }
                    replaced = false
                    close(fd)
                    fd = Glibc.open(path, O_RDONLY)
                    guard fd >= 0 else { throw GrayscaleError("\(path): cannot read the access log") }
                    kept = 0
                    offset = 0
                }
                continue
            }
            offset += count
            let filled = kept + count
            kept = block.withUnsafeMutableBytes { bytes -> Int in
                var start = 0
                while start < filled, let newline = memchr(bytes.baseAddress! + start, 0x0A, filled - start) {
                    let end = UnsafeRawPointer(bytes.baseAddress!).distance(to: UnsafeRawPointer(newline))
                    body(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                    start = end + 1
                }
                let rest = filled - start
                if rest > 0, start > 0 { memmove(bytes.baseAddress!, bytes.baseAddress! + start, rest) }
                return rest
            }
            // No access-log line is this long: hand over what there is (it is reported unreadable) and go on.
            if kept >= Self.maxLine {
                block.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<min(kept, 1024)])) }
                kept = 0
            }
        }
        if kept > 0 { block.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<kept])) } }
        if let process {
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw GrayscaleError("\(path): gzip could not read it whole (exit \(process.terminationStatus))") }
        }
    }
}
