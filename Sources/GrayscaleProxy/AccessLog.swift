import Foundation
import Synchronization

/// One JSON line per request, appended to a file by a background thread so the
/// event loops never block on disk. Lines are buffered for at most `flushInterval`.
public final class AccessLog: Sendable {
    public let path: String
    private let pending = Mutex<[UInt8]>([])
    private let state = Mutex<(running: Bool, thread: Thread?)>((true, nil))
    private let handle: FileHandle
    private let flushInterval: Double

    public init(path: String, flushInterval: Double = 0.05) throws {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw AccessLogError(message: "\(path): cannot create the access log")
            }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw AccessLogError(message: "\(path): cannot open the access log for writing")
        }
        handle.seekToEndOfFile()
        self.path = path
        self.handle = handle
        self.flushInterval = flushInterval
        let thread = Thread { [self] in self.run() }
        thread.name = "grayscale-access-log"
        state.withLock { $0.thread = thread }
        thread.start()
    }

    public func append(_ line: AccessLogLine) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(320)
        line.encode(into: &bytes)
        pending.withLock { $0.append(contentsOf: bytes) }
    }

    /// Writes what is buffered now.
    public func flush() {
        let bytes = pending.withLock { buffer -> [UInt8] in
            defer { buffer.removeAll(keepingCapacity: true) }
            return buffer
        }
        if !bytes.isEmpty { handle.write(Data(bytes)) }
    }

    /// Flushes and stops the writer thread.
    public func close() {
        state.withLock { $0.running = false }
        flush()
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

    func encode(into out: inout [UInt8]) {
        func key(_ name: StaticString, first: Bool = false) {
            if !first { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            out.append(contentsOf: "\":".utf8)
        }
        func string(_ value: String?) {
            guard let value else { return out.append(contentsOf: "null".utf8) }
            out.append(UInt8(ascii: "\""))
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
        out.append(UInt8(ascii: "{"))
        key("time", first: true); Self.appendTime(time, to: &out)
        key("service"); string(service)
        key("release"); number(release)
        key("label"); string(label)
        key("route"); string(route)
        key("appId"); string(appId ?? "anonymous")
        key("bucket"); number(bucket)
        key("method"); string(method)
        key("path"); string(path)
        key("status"); number(status)
        key("latencyMs"); Self.appendMillis(latencyMs, to: &out)
        key("upstream"); string(upstream)
        key("bytesIn"); number(bytesIn)
        key("bytesOut"); number(bytesOut)
        key("error"); string(error)
        out.append(contentsOf: "}\n".utf8)
    }

    private func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// RFC 3339 UTC with milliseconds, e.g. "2026-11-25T06:00:00.123Z", written digit by digit.
    static func appendTime(_ date: Date, to out: inout [UInt8]) {
        let totalMillis = Int((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(totalMillis / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8((value / divisor) % 10))
                divisor /= 10
            }
        }
        out.append(UInt8(ascii: "\""))
        digits(Int(parts.tm_year) + 1900, 4); out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2); out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2); out.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2); out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2); out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2); out.append(UInt8(ascii: "."))
        digits(totalMillis % 1000, 3)
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
