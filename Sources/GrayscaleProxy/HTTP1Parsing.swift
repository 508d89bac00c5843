import Foundation
import NIOCore
import NIOHTTP1

/// The proxy's own HTTP/1.1 reading: strict, and only as much as forwarding needs. Heads
/// are parsed whole once their blank line has arrived; bodies are framed (a length, or
/// chunks decoded here and encoded again) and passed on as slices of the bytes read,
/// never copied into parts. Anything a peer could read two ways (a bare CR or LF, folded
/// lines, a space before a colon, a control byte) is an error, never a guess.
enum HTTP1 {
    struct ParseError: Error, Equatable, CustomStringConvertible {
        var reason: String
        var description: String { reason }
    }

    /// Where the head in `bytes` ends (the length up to and with its blank line), or nil when
    /// it has not all arrived. `from`: how much was searched before (a slow client's head is
    /// not searched again from its start at every read).
    static func headEnd(_ bytes: ByteBuffer, from: Int = 0) -> Int? {
        bytes.withUnsafeReadableBytes { raw -> Int? in
            var index = max(3, from)
            while index < raw.count {
                if raw[index] == 10, raw[index - 1] == 13, raw[index - 2] == 10, raw[index - 3] == 13 { return index + 1 }
                index += 1
            }
            return nil
        }
    }

    /// A token character (RFC 9110 §5.6.2): method and header names.
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// A byte a field value may hold: visible ASCII, space, tab, and obs-text; never a control byte.
    @inline(__always)
    static func isValueByte(_ byte: UInt8) -> Bool { byte == 9 || (byte >= 0x20 && byte != 0x7F) }

    /// Whether any of the 8 bytes in `word` is below 0x20 or is 0x7F: exact for "any" (a byte
    /// below 0x20 borrows only into those above it; bytes from 0x80 never match); which one it
    /// is, is found byte by byte.
    @inline(__always)
    static func hasControlByte(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let below20 = (word &- ones &* 0x20) & ~word & highs
        let del = word ^ (ones &* 0x7F)
        return (below20 | ((del &- ones) & ~del & highs)) != 0
    }

    /// Lines of a head, each without its CRLF. A CR or LF anywhere else is an error, and so
    /// is any other control byte but a tab (0x00–0x1F, 0x7F): no part of a head may hold one
    /// (field values allow tabs, visible ASCII and obs-text; the rest of a head is stricter).
    fileprivate struct Lines {
        let raw: UnsafeRawBufferPointer
        var position = 0

        /// The next line's bounds, or nil at the blank line that ends the head. Eight bytes at a
        /// time while none is a control byte; byte by byte in a word that holds one.
        mutating func next() throws(ParseError) -> Range<Int>? {
            let start = position
            var index = start
            let count = raw.count
            while index < count {
                if index + 8 <= count, !HTTP1.hasControlByte(raw.loadUnaligned(fromByteOffset: index, as: UInt64.self)) {
                    index += 8
                    continue
                }
                let byte = raw[index]
                if byte < 0x20 || byte == 0x7F {
                    if byte == 13 {
                        guard index + 1 < count, raw[index + 1] == 10 else { throw ParseError(reason: "a CR not followed by LF") }
                        position = index + 2
                        return index == start ? nil : start..<index
                    }
                    if byte == 10 { throw ParseError(reason: "a line ended by a bare LF") }
                    if byte != 9 { throw ParseError(reason: "a control byte in the head") }
                }
                index += 1
            }
            throw ParseError(reason: "the head does not end with an empty line")
        }
    }

    static func string(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        String(decoding: bytes(raw, range), as: UTF8.self)
    }

    /// The bytes of `range` in `raw` (a field's name or value, a reason phrase).
    @inline(__always)
    static func bytes(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: raw[range])
    }

    /// The header fields after the start line, up to the blank line: each name and trimmed value's bounds.
    private static func fieldRanges(_ lines: inout Lines, raw: UnsafeRawBufferPointer,
                                    _ field: (Range<Int>, Range<Int>) -> Void) throws(ParseError) {
        while let line = try lines.next() {
            let first = raw[line.lowerBound]
            guard first != 32, first != 9 else { throw ParseError(reason: "obsolete line folding") }
            var colon = line.lowerBound
            while colon < line.upperBound, isTokenByte(raw[colon]) { colon += 1 }
            guard colon > line.lowerBound, colon < line.upperBound, raw[colon] == UInt8(ascii: ":") else {
                throw ParseError(reason: "a header line that is not name: value")
            }
            var valueStart = colon + 1, valueEnd = line.upperBound
            while valueStart < valueEnd, raw[valueStart] == 32 || raw[valueStart] == 9 { valueStart += 1 }
            while valueEnd > valueStart, raw[valueEnd - 1] == 32 || raw[valueEnd - 1] == 9 { valueEnd -= 1 }
            // The value's bytes were checked as the line was found (no control byte but a tab).
            field(line.lowerBound..<colon, valueStart..<valueEnd)
        }
    }

    private static func version(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) throws(ParseError) -> HTTPVersion {
        guard range.count == 8 else { throw ParseError(reason: "not HTTP/1.0 or HTTP/1.1") }
        let b = range.lowerBound
        guard raw[b] == UInt8(ascii: "H"), raw[b + 1] == UInt8(ascii: "T"), raw[b + 2] == UInt8(ascii: "T"), raw[b + 3] == UInt8(ascii: "P"),
              raw[b + 4] == UInt8(ascii: "/"), raw[b + 5] == UInt8(ascii: "1"), raw[b + 6] == UInt8(ascii: "."),
              raw[b + 7] == UInt8(ascii: "0") || raw[b + 7] == UInt8(ascii: "1")
        else { throw ParseError(reason: "not HTTP/1.0 or HTTP/1.1") }
        return raw[b + 7] == UInt8(ascii: "1") ? .http1_1 : .http1_0
    }

    /// A request head: `METHOD SP target SP HTTP/1.x CRLF`, fields, CRLF. `bytes` holds the
    /// head alone; it is kept for the fields to be read and copied from.
    static func requestHead(_ bytes: ByteBuffer) throws(ParseError) -> RequestHead {
        try bytes.withUnsafeReadableBytes { raw throws(ParseError) -> RequestHead in
            var lines = Lines(raw: raw)
            guard let line = try lines.next() else { throw ParseError(reason: "an empty request line") }
            var index = line.lowerBound
            while index < line.upperBound, isTokenByte(raw[index]) { index += 1 }
            guard index > line.lowerBound, index < line.upperBound, raw[index] == 32 else { throw ParseError(reason: "a bad method") }
            let method = Self.method(HTTP1.bytes(raw, line.lowerBound..<index))
            let targetStart = index + 1
            index = targetStart
            // The target: visible ASCII only (no space, no control byte, no raw UTF-8, which a
            // strict upstream such as NIO's own parser refuses: such a request would hang there).
            while index < line.upperBound, raw[index] > 32, raw[index] < 0x7F { index += 1 }
            guard index > targetStart, index < line.upperBound, raw[index] == 32 else { throw ParseError(reason: "a bad request target") }
            let target = targetStart..<index
            let version = try version(raw, index + 1..<line.upperBound)
            var fields: [Field] = []
            fields.reserveCapacity(8)
            try Self.fieldRanges(&lines, raw: raw) { fields.append(Field(name: $0, value: $1)) }
            return RequestHead(version: version, method: method, target: target, bytes: bytes, fields: fields)
        }
    }

    /// A method's bytes: the usual ones without a string (methods are case-sensitive, as `HTTPMethod(rawValue:)` reads them).
    static func method(_ raw: UnsafeRawBufferPointer) -> HTTPMethod {
        switch raw.count {
        case 3:
            if isEqual(raw, "GET") { return .GET }
            if isEqual(raw, "PUT") { return .PUT }
        case 4:
            if isEqual(raw, "POST") { return .POST }
            if isEqual(raw, "HEAD") { return .HEAD }
        case 5:
            if isEqual(raw, "PATCH") { return .PATCH }
            if isEqual(raw, "TRACE") { return .TRACE }
        case 6:
            if isEqual(raw, "DELETE") { return .DELETE }
        case 7:
            if isEqual(raw, "OPTIONS") { return .OPTIONS }
            if isEqual(raw, "CONNECT") { return .CONNECT }
        default:
            break
        }
        return HTTPMethod(rawValue: String(decoding: raw, as: UTF8.self))
    }

    @inline(__always)
    static func isEqual(_ raw: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        raw.count == literal.utf8CodeUnitCount && memcmp(raw.baseAddress!, literal.utf8Start, raw.count) == 0
    }

    /// Where a field's name and value lie in its head's bytes.
    struct Field {
        var name: Range<Int>
        var value: Range<Int>
    }

    /// A head read into field bounds: a request's or an answer's.
    protocol Head {
        /// The head's bytes, start line to blank line.
        var bytes: ByteBuffer { get }
        var fields: [Field] { get }
    }

    /// An answer's head as read: its status, and where each field lies in its bytes. Nothing
    /// is decoded into strings: the proxy looks at a few fields and copies the others whole.
    struct ResponseHead: Head {
        var version: HTTPVersion
        var code: Int
        /// Where the reason phrase is (empty when there is none).
        var reason: Range<Int>
        /// The head's bytes, status line to blank line.
        var bytes: ByteBuffer
        var fields: [Field]

        var reasonPhrase: String { withBytes { HTTP1.string($0, reason) } }

        var status: HTTPResponseStatus { HTTPResponseStatus(statusCode: code) }
    }

    /// A response head: `HTTP/1.x SP 3DIGIT [SP reason] CRLF`, fields, CRLF. `bytes` holds the
    /// head alone; it is kept (a slice, not a copy) for the fields to be copied from.
    static func responseHead(_ bytes: ByteBuffer) throws(ParseError) -> ResponseHead {
        try bytes.withUnsafeReadableBytes { raw throws(ParseError) -> ResponseHead in
            var lines = Lines(raw: raw)
            guard let line = try lines.next(), line.count >= 12 else { throw ParseError(reason: "a bad status line") }
            let start = line.lowerBound
            let version = try version(raw, start..<start + 8)
            guard raw[start + 8] == 32 else { throw ParseError(reason: "a bad status line") }
            var code = 0
            for index in start + 9..<start + 12 {
                let digit = raw[index] &- UInt8(ascii: "0")
                guard digit < 10 else { throw ParseError(reason: "a bad status code") }
                code = code * 10 + Int(digit)
            }
            guard code >= 100 else { throw ParseError(reason: "a bad status code") }
            var reason = line.upperBound..<line.upperBound
            if line.count > 12 {
                guard raw[start + 12] == 32 else { throw ParseError(reason: "a bad status line") }
                for index in start + 13..<line.upperBound where !isValueByte(raw[index]) { throw ParseError(reason: "a control byte in the reason") }
                reason = start + 13..<line.upperBound
            }
            var fields: [Field] = []
            fields.reserveCapacity(8)
            try Self.fieldRanges(&lines, raw: raw) { fields.append(Field(name: $0, value: $1)) }
            return ResponseHead(version: version, code: code, reason: reason, bytes: bytes, fields: fields)
        }
    }

    /// A request or trailer's fields, as strings.
    fileprivate static func fields(_ lines: inout Lines, raw: UnsafeRawBufferPointer) throws(ParseError) -> HTTPHeaders {
        var headers = HTTPHeaders()
        try fieldRanges(&lines, raw: raw) { name, value in headers.add(name: string(raw, name), value: string(raw, value)) }
        return headers
    }

    /// Reads a chunked body (RFC 9112 §7.1) incrementally: the data of each chunk is handed
    /// on as slices; extensions are checked and dropped, trailers are checked and dropped.
    struct ChunkedDecoder {
        enum State: Equatable {
            case size(value: UInt64, digits: Int)
            case extensions(UInt64)
            case sizeLF(UInt64)
            case data(remaining: Int)
            case dataCR
            case dataLF
            case trailerStart
            case trailer
            case trailerLF
            case lastLF
            case done
        }

        var state = State.size(value: 0, digits: 0)
        /// Trailer bytes allowed in all.
        var trailerBudget: Int
        /// The trailer lines read, when they are kept (an answer's, for the client); a request's are dropped as read.
        var trailerBytes: ByteBuffer?

        init(maxTrailerBytes: Int, keepingTrailers: Bool = false) {
            trailerBudget = maxTrailerBytes
            trailerBytes = keepingTrailers ? ByteBuffer() : nil
        }

        /// The trailer fields kept, checked as header fields are.
        func trailers() throws(ParseError) -> HTTPHeaders? {
            guard var bytes = trailerBytes, bytes.readableBytes > 0 else { return nil }
            bytes.writeStaticString("\r\n")
            return try bytes.withUnsafeReadableBytes { raw throws(ParseError) in
                var lines = Lines(raw: raw)
                return try HTTP1.fields(&lines, raw: raw)
            }
        }

        /// Consumes what it can of `buffer`; each chunk's data goes to `data`. True once the
        /// last chunk and its trailers have been read (what follows stays in `buffer`).
        mutating func decode(_ buffer: inout ByteBuffer, data: (ByteBuffer) -> Void) throws(ParseError) -> Bool {
            while buffer.readableBytes > 0 {
                if case .data(let remaining) = state {
                    let take = min(remaining, buffer.readableBytes)
                    data(buffer.readSlice(length: take)!)
                    state = remaining == take ? .dataCR : .data(remaining: remaining - take)
                    continue
                }
                let byte = buffer.readInteger(as: UInt8.self)!
                switch state {
                case .size(let value, let digits):
                    if let digit = Self.hexValue(byte) {
                        guard digits < 16 else { throw ParseError(reason: "a chunk size over 64 bits") }
                        state = .size(value: value << 4 | UInt64(digit), digits: digits + 1)
                    } else if digits > 0, byte == UInt8(ascii: ";") {
                        state = .extensions(value)
                    } else if digits > 0, byte == 13 {
                        state = .sizeLF(value)
                    } else {
                        throw ParseError(reason: "a chunk size that is not hexadecimal")
                    }
                case .extensions(let size):
                    if byte == 13 {
                        state = .sizeLF(size)
                    } else if !isValueByte(byte) {
                        throw ParseError(reason: "a control byte in a chunk extension")
                    }
                case .sizeLF(let size):
                    guard byte == 10 else { throw ParseError(reason: "a CR not followed by LF after a chunk size") }
                    guard size <= UInt64(Int.max) else { throw ParseError(reason: "a chunk size over 63 bits") }
                    state = size == 0 ? .trailerStart : .data(remaining: Int(size))
                case .dataCR:
                    guard byte == 13 else { throw ParseError(reason: "chunk data longer than its size") }
                    state = .dataLF
                case .dataLF:
                    guard byte == 10 else { throw ParseError(reason: "a CR not followed by LF after chunk data") }
                    state = .size(value: 0, digits: 0)
                case .trailerStart:
                    if byte == 13 {
                        state = .lastLF
                    } else {
                        guard isTokenByte(byte) else { throw ParseError(reason: "a bad trailer line") }
                        state = .trailer
                        trailerBytes?.writeInteger(byte)
                    }
                    trailerBudget -= 1
                case .trailer:
                    trailerBudget -= 1
                    if byte == 13 {
                        state = .trailerLF
                    } else if !isValueByte(byte) {
                        throw ParseError(reason: "a control byte in a trailer")
                    }
                    trailerBytes?.writeInteger(byte)
                case .trailerLF:
                    guard byte == 10 else { throw ParseError(reason: "a CR not followed by LF in the trailers") }
                    state = .trailerStart
                    trailerBytes?.writeInteger(byte)
                case .lastLF:
                    guard byte == 10 else { throw ParseError(reason: "a CR not followed by LF after the last chunk") }
                    state = .done
                    return true
                case .data, .done:
                    break
                }
                guard trailerBudget >= 0 else { throw ParseError(reason: "trailers over the header limit") }
            }
            return state == .done
        }

        private static func hexValue(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
    }

    /// `bytes` without the spaces and tabs around them.
    static func trimmed(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0, end = bytes.count
        while start < end, bytes[start] == 32 || bytes[start] == 9 { start += 1 }
        while end > start, bytes[end - 1] == 32 || bytes[end - 1] == 9 { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// Each item of a comma-separated field value (`Connection`, a `Content-Length` list),
    /// without the spaces and tabs around it; empty items too.
    static func forEachListItem(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        var start = 0
        for index in 0...value.count where index == value.count || value[index] == UInt8(ascii: ",") {
            body(trimmed(UnsafeRawBufferPointer(rebasing: value[start..<index])))
            start = index + 1
        }
    }

    /// A decimal length: 1 to 18 digits, nothing else (no sign, no space).
    static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 18 else { return nil }
        var value = 0
        for byte in bytes {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
        }
        return value
    }

    // MARK: - Writing

    /// Appends `name: value CRLF`.
    @inline(__always)
    static func writeField(_ name: String, _ value: String, to buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        buffer.writeString(value)
        buffer.writeStaticString("\r\n")
    }

    /// The size line of a chunk of `count` bytes.
    static func chunkSize(_ count: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var line = allocator.buffer(capacity: 24)
        line.writeString(String(count, radix: 16))
        line.writeStaticString("\r\n")
        return line
    }

    static func writeStatusLine(_ version: HTTPVersion, _ status: HTTPResponseStatus, to buffer: inout ByteBuffer) {
        buffer.writeStaticString(version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
    }
}

extension HTTP1.Head {
    func withBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try bytes.withUnsafeReadableBytes(body)
    }

    @inline(__always)
    static func isName(_ raw: UnsafeRawBufferPointer, _ field: HTTP1.Field, _ name: StaticString) -> Bool {
        isASCIICaseInsensitiveEqual(HTTP1.bytes(raw, field.name), name)
    }

    /// The value of the first field called `name`: its bytes within `raw`, this head's bytes.
    func firstValue(_ name: StaticString, in raw: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        fields.first { Self.isName(raw, $0, name) }.map { HTTP1.bytes(raw, $0.value) }
    }

    /// The value of the first field called `name`, as a string (for tests and rare fields).
    func first(_ name: StaticString) -> String? {
        withBytes { raw in firstValue(name, in: raw).map { String(decoding: $0, as: UTF8.self) } }
    }

    /// Whether a list item of a field called `name` is `item`, in any case (`Connection: keep-alive, Upgrade`).
    func hasItem(_ name: StaticString, _ item: StaticString) -> Bool {
        var found = false
        forEachItem(name) { if isASCIICaseInsensitiveEqual($0, item) { found = true } }
        return found
    }

    /// The value of the first field called `name` (any case), as a string.
    func first(named name: String) -> String? {
        withBytes { raw in
            fields.first { isASCIICaseInsensitiveEqual(HTTP1.bytes(raw, $0.name), substring: Substring(name)) }.map { HTTP1.string(raw, $0.value) }
        }
    }

    /// Whether a field called `name` is there.
    func contains(_ name: StaticString) -> Bool {
        withBytes { raw in fields.contains { Self.isName(raw, $0, name) } }
    }

    /// The values of every field called `name`, as strings.
    func values(_ name: StaticString) -> [String] {
        withBytes { raw in fields.filter { Self.isName(raw, $0, name) }.map { HTTP1.string(raw, $0.value) } }
    }

    /// The `Cookie` fields' values, each split at its commas and trimmed, as NIO's `canonicalForm` reads them.
    var cookies: [String] {
        var items: [String] = []
        forEachItem("cookie") { items.append(String(decoding: $0, as: UTF8.self)) }
        return items
    }

    /// Each list item (comma-separated, trimmed, empty ones too) of every field called `name`.
    func forEachItem(_ name: StaticString, _ body: (UnsafeRawBufferPointer) -> Void) {
        withBytes { raw in
            for field in fields where Self.isName(raw, field, name) { HTTP1.forEachListItem(HTTP1.bytes(raw, field.value), body) }
        }
    }
}
