import Foundation
import Synchronization

/// One JSON line per request, appended to a file by a background thread so the
/// event loops never block on disk. Lines are buffered for at most `flushInterval`.
///
/// The log never stops the proxy: a write that fails (disk full, file size limit, I/O
/// error) drops that batch, counts its lines and says why once; the next batch tries
/// again, so logging resumes by itself when space returns. The buffer is bounded: lines
/// beyond `maxPendingBytes` are dropped and counted, never queued without limit. The file
/// is rotated by size (`path.1`, `path.2`, … up to `keep`), and `reopen()` (SIGUSR1 in
/// `serve` and `proxy`, as nginx does for logrotate) opens the path again.
public final class AccessLog: Sendable {
    public struct Limits: Sendable {
        /// Rotate when the file would grow past this; nil: never rotate.
        public var maxFileBytes: Int?
        /// Rotated files kept (`path.1` is the newest).
        public var keep: Int
        /// Lines waiting for the writer beyond this are dropped.
        public var maxPendingBytes: Int

        public init(maxFileBytes: Int? = 256 << 20, keep: Int = 5, maxPendingBytes: Int = 16 << 20) {
            self.maxFileBytes = maxFileBytes
            self.keep = keep
            self.maxPendingBytes = maxPendingBytes
        }
    }

    /// What the log could not write, for `/metrics`, `/stats` and the operator.
    public struct Health: Sendable, Equatable {
        public var writtenLines = 0
        public var droppedLines = 0
        public var rotations = 0
        /// The last write or open error, cleared by the next successful write.
        public var problem: String?
    }

    public let path: String
    public let limits: Limits
    /// Lines waiting for the writer; after `close`, what arrives is counted as dropped.
    private let pending = Mutex<(bytes: [UInt8], lines: Int, dropped: Int, closed: Bool, clock: AccessLogLine.Clock)>(([], 0, 0, false, .init()))
    private let state = Mutex<(running: Bool, reopen: Bool)>((true, false))
    /// The writer's own state; only `flush` (one at a time) touches it.
    private struct FileState {
        var fd: Int32 = -1
        var size = 0
        var health = Health()
        /// A failed write left part of a line: the next write starts on a new line.
        var torn = false
        /// `close` ran: nothing opens the file again.
        var closed = false
    }
    private let file = Mutex(FileState())
    private let flushInterval: Double
    private let onProblem: @Sendable (String) -> Void

    public init(path: String, flushInterval: Double = 0.05, limits: Limits = Limits(),
                onProblem: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.path = path
        self.limits = limits
        self.flushInterval = flushInterval
        self.onProblem = onProblem
        // A file size limit must fail the write (EFBIG), not kill the process.
        signal(SIGXFSZ, SIG_IGN)
        let (fd, size) = try Self.open(path)
        file.withLock { $0.fd = fd; $0.size = size }
        let thread = Thread { [self] in self.run() }
        thread.name = "grayscale-access-log"
        thread.start()
    }

    private static func open(_ path: String) throws(AccessLogError) -> (Int32, Int) {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AccessLogError(message: "\(path): cannot open the access log for writing (\(String(cString: strerror(errno))))") }
        var info = stat()
        return (fd, fstat(fd, &info) == 0 ? Int(info.st_size) : 0)
    }

    public func append(_ line: AccessLogLine) {
        // Encoded straight into the pending bytes: no buffer of its own, no copy. The writer
        // holds the lock only to swap the bytes out.
        pending.withLock { pending in
            // Full (the writer is stuck): dropped before any encoding under the lock.
            guard !pending.closed, pending.bytes.count < limits.maxPendingBytes else {
                pending.dropped += 1
                return
            }
            let before = pending.bytes.count
            line.encode(into: &pending.bytes, clock: &pending.clock)
            guard pending.bytes.count <= limits.maxPendingBytes else {
                pending.bytes.removeSubrange(before...)
                pending.dropped += 1
                return
            }
            pending.lines += 1
        }
    }

    /// Opens the path again at the next flush: after logrotate moved the file away.
    public func reopen() { state.withLock { $0.reopen = true } }

    /// Reopens the file whenever the process receives `signal` (SIGUSR1, as nginx). Keep the source.
    public func reopenOnSignal(_ signal: Int32 = SIGUSR1) -> any DispatchSourceSignal {
        Glibc.signal(signal, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
        source.setEventHandler { [self] in self.reopen() }
        source.resume()
        return source
    }

    /// The log's health in Prometheus' text format, for `/metrics`.
    public var prometheusText: String {
        let health = health
        return """
            # HELP grayscale_access_log_dropped_lines_total Access-log lines not written (disk full, file size limit, buffer full).
            # TYPE grayscale_access_log_dropped_lines_total counter
            grayscale_access_log_dropped_lines_total \(health.droppedLines)
            # HELP grayscale_access_log_rotations_total Times the access log was rotated by size.
            # TYPE grayscale_access_log_rotations_total counter
            grayscale_access_log_rotations_total \(health.rotations)
            # HELP grayscale_access_log_failing 1 while the access log cannot be written.
            # TYPE grayscale_access_log_failing gauge
            grayscale_access_log_failing \(health.problem == nil ? 0 : 1)

            """
    }

    public var health: Health {
        let dropped = pending.withLock { $0.dropped }
        var health = file.withLock { $0.health }
        health.droppedLines += dropped
        return health
    }

    /// Writes what is buffered now. One flush at a time, so batches keep their order.
    public func flush() {
        let reopen = state.withLock { state -> Bool in
            defer { state.reopen = false }
            return state.reopen
        }
        file.withLock { file in
            guard !file.closed else { return }
            let (bytes, lines) = pending.withLock { pending -> ([UInt8], Int) in
                defer { pending.bytes.removeAll(keepingCapacity: true); pending.lines = 0 }
                return (pending.bytes, pending.lines)
            }
            if reopen || file.fd < 0 { reopenFile(&file) }
            guard !bytes.isEmpty else { return }
            if let max = limits.maxFileBytes, file.fd >= 0, file.size > 0, file.size + bytes.count > max { rotate(&file) }
            guard file.fd >= 0 else {
                file.health.droppedLines += lines
                return
            }
            if file.torn, write(file.fd, [UInt8(ascii: "\n")]).problem == nil {
                file.torn = false
                file.size += 1
            }
            let (written, problem) = file.torn ? (0, "the last line is still torn") : write(file.fd, bytes)
            if let problem {
                file.size += written
                file.torn = file.torn || written > 0
                file.health.droppedLines += lines
                if file.health.problem == nil { onProblem("\(path): access log lines dropped: \(problem)") }
                file.health.problem = problem
            } else {
                if file.health.problem != nil { onProblem("\(path): access log writes again") }
                file.health.problem = nil
                file.health.writtenLines += lines
                file.size += bytes.count
            }
        }
    }

    private func reopenFile(_ file: inout FileState) {
        if file.fd >= 0 { Glibc.close(file.fd) }
        file.torn = false  // a new file starts clean
        do {
            (file.fd, file.size) = try Self.open(path)
        } catch {
            file.fd = -1
            if file.health.problem == nil { onProblem(error.message) }
            file.health.problem = error.message
        }
    }

    /// path.(keep-1) → path.keep, …, path → path.1, then a new file at path.
    private func rotate(_ file: inout FileState) {
        guard limits.keep > 0 else {
            if ftruncate(file.fd, 0) == 0 {
                file.size = 0
                file.torn = false
                file.health.rotations += 1
            }
            return
        }
        unlink("\(path).\(limits.keep)")
        for index in stride(from: limits.keep - 1, through: 1, by: -1) { rename("\(path).\(index)", "\(path).\(index + 1)") }
        rename(path, "\(path).1")
        file.health.rotations += 1
        reopenFile(&file)
    }

    /// Writes all of `bytes`, or says how much went out before the error.
    private func write(_ fd: Int32, _ bytes: [UInt8]) -> (written: Int, problem: String?) {
        bytes.withUnsafeBytes { buffer -> (Int, String?) in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return (offset, String(cString: strerror(errno)))
                }
                offset += written
            }
            return (offset, nil)
        }
    }

    /// Flushes, closes the file and stops the writer thread; lines appended afterwards are
    /// counted as dropped. Closing twice is harmless.
    public func close() {
        state.withLock { $0.running = false }
        pending.withLock { $0.closed = true }
        flush()
        file.withLock { file in
            if file.fd >= 0 { Glibc.close(file.fd) }
            file.fd = -1
            file.closed = true
        }
    }

    private func run() {
        while state.withLock({ $0.running }) {
            Thread.sleep(forTimeInterval: flushInterval)
            flush()
        }
    }
}

public struct AccessLogError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The fields of one access-log line, in the order they are written.
public struct AccessLogLine: Sendable {
    public var time: Date
    public var service: String
    public var release: Int
    public var label: String
    /// stable, canary, optIn, allowList…: the route and the rule that chose it.
    public var route: String
    public var appId: String?
    public var bucket: Int?
    public var method: String
    public var path: String
    public var status: Int
    public var latencyMs: Double
    public var upstream: String
    public var bytesIn: Int
    public var bytesOut: Int
    public var error: String?

    public init(time: Date, service: String, release: Int, label: String, route: String, appId: String?, bucket: Int?,
                method: String, path: String, status: Int, latencyMs: Double, upstream: String, bytesIn: Int, bytesOut: Int,
                error: String?) {
        self.time = time
        self.service = service
        self.release = release
        self.label = label
        self.route = route
        self.appId = appId
        self.bucket = bucket
        self.method = method
        self.path = path
        self.status = status
        self.latencyMs = latencyMs
        self.upstream = upstream
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.error = error
    }

    /// The last second written, as `"2026-11-25T06:00:00.`: lines of the same second reuse it.
    struct Clock {
        var second = Int.min
        var text: [UInt8] = []
    }

    func encode(into out: inout [UInt8], clock: inout Clock) {
        /// A key written whole: its comma, quotes and colon are in the literal.
        func key(_ literal: StaticString) {
            out.append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
        }
        func string(_ value: String?) {
            guard let value else { return out.append(contentsOf: "null".utf8) }
            out.append(UInt8(ascii: "\""))
            // Most values need no escaping: checked, then copied whole.
            let copied = value.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
                guard !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else { return false }
                out.append(contentsOf: bytes)
                return true
            }
            if copied == true { return out.append(UInt8(ascii: "\"")) }
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                    out.append(UInt8(ascii: "\\"))
                    out.append(byte)
                case 0..<0x20:
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hexDigit(byte >> 4))
                    out.append(hexDigit(byte & 0xF))
                default:
                    out.append(byte)
                }
            }
            out.append(UInt8(ascii: "\""))
        }
        func number(_ value: Int?) {
            guard let value else { return out.append(contentsOf: "null".utf8) }
            out.append(contentsOf: String(value).utf8)
        }
        key(#"{"time":"#); Self.appendTime(time, to: &out, clock: &clock)
        key(#","service":"#); string(service)
        key(#","release":"#); number(release)
        key(#","label":"#); string(label)
        key(#","route":"#); string(route)
        key(#","appId":"#); string(appId ?? "anonymous")
        key(#","bucket":"#); number(bucket)
        key(#","method":"#); string(method)
        key(#","path":"#); string(path)
        key(#","status":"#); number(status)
        key(#","latencyMs":"#); Self.appendMillis(latencyMs, to: &out)
        key(#","upstream":"#); string(upstream)
        key(#","bytesIn":"#); number(bytesIn)
        key(#","bytesOut":"#); number(bytesOut)
        key(#","error":"#); string(error)
        key("}\n")
    }

    private func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// RFC 3339 UTC with milliseconds, e.g. "2026-11-25T06:00:00.123Z", written digit by digit.
    static func appendTime(_ date: Date, to out: inout [UInt8], clock: inout Clock) {
        let totalMillis = Int((date.timeIntervalSince1970 * 1000).rounded(.down))
        let second = totalMillis >= 0 ? totalMillis / 1000 : (totalMillis - 999) / 1000
        func digits(_ value: Int, _ width: Int, to out: inout [UInt8]) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8((value / divisor) % 10))
                divisor /= 10
            }
        }
        if second != clock.second {
            var seconds = time_t(second)
            var parts = tm()
            gmtime_r(&seconds, &parts)
            var text: [UInt8] = [UInt8(ascii: "\"")]
            digits(Int(parts.tm_year) + 1900, 4, to: &text); text.append(UInt8(ascii: "-"))
            digits(Int(parts.tm_mon) + 1, 2, to: &text); text.append(UInt8(ascii: "-"))
            digits(Int(parts.tm_mday), 2, to: &text); text.append(UInt8(ascii: "T"))
            digits(Int(parts.tm_hour), 2, to: &text); text.append(UInt8(ascii: ":"))
            digits(Int(parts.tm_min), 2, to: &text); text.append(UInt8(ascii: ":"))
            digits(Int(parts.tm_sec), 2, to: &text); text.append(UInt8(ascii: "."))
            clock = Clock(second: second, text: text)
        }
        out.append(contentsOf: clock.text)
        digits(totalMillis - second * 1000, 3, to: &out)
        out.append(contentsOf: "Z\"".utf8)
    }

    /// Milliseconds with three decimals, e.g. 12.345.
    static func appendMillis(_ millis: Double, to out: inout [UInt8]) {
        let micros = max(0, Int((millis * 1000).rounded()))
        out.append(contentsOf: String(micros / 1000).utf8)
        out.append(UInt8(ascii: "."))
        let fraction = micros % 1000
        out.append(UInt8(ascii: "0") + UInt8(fraction / 100))
        out.append(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        out.append(UInt8(ascii: "0") + UInt8(fraction % 10))
    }
}
