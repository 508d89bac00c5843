import Foundation
import NIOCore
import NIOHTTP1

/// A request's head as the proxy reads it: its method and version, and where its target and
/// each field lie in its bytes. Nothing is decoded into strings on the way through: the
/// proxy looks at a few fields (the token, the framing, `Connection`) as bytes and copies
/// the others to the upstream as they came.
public struct RequestHead: HTTP1.Head, Sendable {
    public var version: HTTPVersion
    public var method: HTTPMethod
    /// Where the request target is in `bytes`.
    var target: Range<Int>
    /// The head's bytes, request line to blank line.
    var bytes: ByteBuffer
    var fields: [HTTP1.Field]

    init(version: HTTPVersion, method: HTTPMethod, target: Range<Int>, bytes: ByteBuffer, fields: [HTTP1.Field]) {
        self.version = version
        self.method = method
        self.target = target
        self.bytes = bytes
        self.fields = fields
    }

    /// Parses a whole head (request line to blank line), as the proxy does.
    public init(parsing bytes: ByteBuffer) throws {
        self = try HTTP1.requestHead(bytes)
    }

    /// The same request from NIO's form (tests, tools): written out as the proxy would read it.
    /// Values are taken as given, unchecked.
    public init(_ head: HTTPRequestHead) {
        var bytes = ByteBuffer()
        bytes.writeString(head.method.rawValue)
        bytes.writeStaticString(" ")
        let targetStart = bytes.writerIndex
        bytes.writeString(head.uri)
        let target = targetStart..<bytes.writerIndex
        bytes.writeStaticString(head.version.minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
        var fields: [HTTP1.Field] = []
        for (name, value) in head.headers {
            let nameStart = bytes.writerIndex
            bytes.writeString(name)
            let nameEnd = bytes.writerIndex
            bytes.writeStaticString(": ")
            let valueStart = bytes.writerIndex
            bytes.writeString(value)
            fields.append(HTTP1.Field(name: nameStart..<nameEnd, value: valueStart..<bytes.writerIndex))
            bytes.writeStaticString("\r\n")
        }
        bytes.writeStaticString("\r\n")
        self.init(version: head.version, method: head.method, target: target, bytes: bytes, fields: fields)
    }

    /// The request target, as a string.
    public var uri: String { withBytes { HTTP1.string($0, target) } }

    /// Whether the target starts with `prefix`, compared as bytes.
    func targetHasPrefix(_ prefix: String) -> Bool {
        var prefix = prefix
        return prefix.withUTF8 { wanted in
            withBytes { raw in
                wanted.count <= target.count
                    && (wanted.isEmpty || memcmp(raw.baseAddress! + target.lowerBound, wanted.baseAddress!, wanted.count) == 0)
            }
        }
    }
}

/// Writes bytes straight into memory, with one access to the buffer per head or log line
/// instead of one per piece: the proxy's heads are a handful of pieces per field.
/// `capacity` must bound what is written; the bound is checked on every write.
struct ByteWriter {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private(set) var count = 0

    init(_ buffer: UnsafeMutableRawBufferPointer) {
        base = buffer.baseAddress!
        capacity = buffer.count
    }

    @inline(__always)
    private mutating func reserve(_ length: Int) -> UnsafeMutableRawPointer {
        precondition(count + length <= capacity, "a head's bound was short")
        defer { count += length }
        return base + count
    }

    @inline(__always)
    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    @inline(__always)
    mutating func write(_ literal: StaticString) {
        reserve(literal.utf8CodeUnitCount).copyMemory(from: literal.utf8Start, byteCount: literal.utf8CodeUnitCount)
    }

    @inline(__always)
    mutating func write(_ string: String) {
        var string = string
        string.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    /// An integer in decimal (at most 20 bytes).
    mutating func write(decimal value: Int) {
        if value < 0 { write("-") }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, written from the end
        withUnsafeMutableBytes(of: &digits) { scratch in
            var value = value.magnitude
            var index = scratch.count
            repeat {
                index -= 1
                scratch[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            } while value > 0
            write(UnsafeRawBufferPointer(rebasing: scratch[index...]))
        }
    }

    /// `value` as a JSON string, quoted and escaped (at most 2 + 6 × its UTF-8 length bytes).
    mutating func write(json value: String) {
        write("\"")
        var value = value
        value.withUTF8 { bytes in
            var start = 0
            for index in 0..<bytes.count {
                let byte = bytes[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                write(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start..<index]))
                start = index + 1
                if byte >= 0x20 {
                    write("\\")
                    reserve(1).storeBytes(of: byte, as: UInt8.self)
                } else {
                    write("\\u00")
                    reserve(1).storeBytes(of: Self.hexDigit(byte >> 4), as: UInt8.self)
                    reserve(1).storeBytes(of: Self.hexDigit(byte & 0xF), as: UInt8.self)
                }
            }
            write(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start...]))
        }
        write("\"")
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// `value` as `width` digits, leading zeros kept (its magnitude's lowest `width` digits).
    mutating func write(_ value: Int, digits width: Int) {
        let value = value.magnitude
        var divisor: UInt = 1
        for _ in 1..<width { divisor *= 10 }
        let out = reserve(width)
        for index in 0..<width {
            out.storeBytes(of: UInt8(ascii: "0") + UInt8((value / divisor) % 10), toByteOffset: index, as: UInt8.self)
            divisor /= 10
        }
    }

    /// `name: value CRLF`.
    @inline(__always)
    mutating func field(_ name: StaticString, _ value: String) {
        write(name)
        write(": ")
        write(value)
        write("\r\n")
    }
}

extension ByteBuffer {
    /// Appends a head written by `body`, which writes at most `capacity` bytes.
    @inline(__always)
    mutating func writeHead(capacity: Int, _ body: (inout ByteWriter) -> Void) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { memory in
            var writer = ByteWriter(memory)
            body(&writer)
            return writer.count
        }
    }
}
