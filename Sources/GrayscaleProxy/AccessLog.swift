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

    /// The last second written, as `2026-11-25T06:00:00.` (RFC 3339 UTC, the milliseconds
    /// follow): lines of the same second reuse it.
    struct Clock {
        var second = Int.min
        var text: [UInt8] = []

        init() {}

        init(_ second: Int) {
            self.second = second
            var seconds = time_t(second)
            var parts = tm()
            gmtime_r(&seconds, &parts)
            var text = [UInt8](repeating: 0, count: 20)
            text.withUnsafeMutableBytes { memory in
                var out = ByteWriter(memory)
                out.write(Int(parts.tm_year) + 1900, digits: 4); out.write("-")
                out.write(Int(parts.tm_mon) + 1, digits: 2); out.write("-")
                out.write(Int(parts.tm_mday), digits: 2); out.write("T")
                out.write(Int(parts.tm_hour), digits: 2); out.write(":")
                out.write(Int(parts.tm_min), digits: 2); out.write(":")
                out.write(Int(parts.tm_sec), digits: 2); out.write(".")
            }
            self.text = text
        }
    }

    func encode(into out: inout [UInt8], clock: inout Clock) {
        let millis = Int((time.timeIntervalSince1970 * 1000).rounded(.down))
        let second = millis >= 0 ? millis / 1000 : (millis - 999) / 1000  // the second it falls in, before 1970 too
        if second != clock.second { clock = Clock(second) }
        // Each string at most six bytes per byte escaped; the keys, the time and the numbers under 512 bytes.
        var strings = service.utf8.count + label.utf8.count + route.utf8.count + (appId?.utf8.count ?? 9) + method.utf8.count
        strings += path.utf8.count + upstream.utf8.count + (error?.utf8.count ?? 0)
        let bound = 512 + 6 * strings
        withUnsafeTemporaryAllocation(byteCount: bound, alignment: 1) { scratch in
            var writer = ByteWriter(scratch)
            encode(to: &writer, clock: clock, millis: millis)
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(scratch)[..<writer.count]))
        }
    }

    private func encode(to out: inout ByteWriter, clock: Clock, millis: Int) {
        func string(_ value: String?) {
            if let value { out.write(json: value) } else { out.write("null") }
        }
        func number(_ value: Int?) {
            if let value { out.write(decimal: value) } else { out.write("null") }
        }
        out.write(#"{"time":""#)
        clock.text.withUnsafeBytes { out.write($0) }
        out.write(millis - clock.second * 1000, digits: 3)
        out.write(#"Z","service":"#); string(service)
        out.write(#","release":"#); number(release)
        out.write(#","label":"#); string(label)
        out.write(#","route":"#); string(route)
        out.write(#","appId":"#); string(appId ?? "anonymous")
        out.write(#","bucket":"#); number(bucket)
        out.write(#","method":"#); string(method)
        out.write(#","path":"#); string(path)
        out.write(#","status":"#); number(status)
        // Milliseconds with three decimals, e.g. 12.345.
        let micros = latencyMs.isFinite ? Int(max(0, min(latencyMs * 1000, 1e15)).rounded()) : 0
        out.write(#","latencyMs":"#); out.write(decimal: micros / 1000); out.write("."); out.write(micros % 1000, digits: 3)
        out.write(#","upstream":"#); string(upstream)
        out.write(#","bytesIn":"#); number(bytesIn)
        out.write(#","bytesOut":"#); number(bytesOut)
        out.write(#","error":"#); string(error)
        out.write("}\n")
    }
}
