import GrayscaleTestSupport
import NIOCore
import NIOHTTP1
import Testing

@testable import GrayscaleProxy

/// The proxy's own HTTP/1.1 reader, alone: what it accepts, what it refuses, and that
/// reading a body in pieces gives what reading it whole gives.
@Suite("HTTP/1.1 reading")
struct HTTP1ParsingTests {
    static func request(_ text: String) throws -> RequestHead {
        try HTTP1.requestHead(ByteBuffer(string: text))
    }

    static func response(_ text: String) throws -> HTTP1.ResponseHead {
        try HTTP1.responseHead(ByteBuffer(string: text))
    }

    @Test("a request head: method, target, version and fields, values trimmed, order and repeats kept")
    func requestHead() throws {
        let head = try Self.request("POST /v1/deploy?x=1 HTTP/1.1\r\nHost: engine\r\nX-A:  one \t\r\nx-a: two\r\nEmpty:\r\n\r\n")
        #expect(head.method == .POST)
        #expect(head.uri == "/v1/deploy?x=1")
        #expect(head.version == .http1_1)
        #expect(head.values("x-a") == ["one", "two"])
        #expect(head.first("empty") == "")
        #expect(head.withBytes { raw in head.fields.map { HTTP1.string(raw, $0.name) } } == ["Host", "X-A", "x-a", "Empty"])
        #expect(try Self.request("GET / HTTP/1.0\r\n\r\n").version == .http1_0)
        #expect(try Self.request("PURGE * HTTP/1.1\r\n\r\n").method == .RAW(value: "PURGE"))
    }

    static let refusedRequests: [(String, String)] = [
        ("a bare LF ending a line", "GET / HTTP/1.1\nHost: x\r\n\r\n"),
        ("a bare LF ending a field", "GET / HTTP/1.1\r\nHost: x\n\r\n"),
        ("a bare CR in a value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"),
        ("obsolete line folding", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"),
        ("a space before the colon", "GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n"),
        ("a field with no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n"),
        ("an empty field name", "GET / HTTP/1.1\r\n: x\r\n\r\n"),
        ("a NUL in a value", "GET / HTTP/1.1\r\nX-A: a\u{0}b\r\n\r\n"),
        ("DEL in a value", "GET / HTTP/1.1\r\nX-A: a\u{7F}b\r\n\r\n"),
        ("a control byte in a value", "GET / HTTP/1.1\r\nX-A: a\u{1B}b\r\n\r\n"),
        ("a space in the target", "GET /a b HTTP/1.1\r\n\r\n"),
        ("a tab in the target", "GET /a\tb HTTP/1.1\r\n\r\n"),
        ("DEL in the target", "GET /a\u{7F} HTTP/1.1\r\n\r\n"),
        ("a byte above 0x7F in the target", "GET /caf\u{E9} HTTP/1.1\r\n\r\n"),
        ("two spaces after the method", "GET  / HTTP/1.1\r\n\r\n"),
        ("no target", "GET HTTP/1.1\r\n\r\n"),
        ("HTTP/2.0", "GET / HTTP/2.0\r\n\r\n"),
        ("a lowercase version", "GET / http/1.1\r\n\r\n"),
        ("HTTP/1.10", "GET / HTTP/1.10\r\n\r\n"),
        ("a method with a slash", "GE/T / HTTP/1.1\r\n\r\n"),
        ("an empty request line", "\r\n\r\n"),
        ("a head without its blank line", "GET / HTTP/1.1\r\nHost: x\r\n"),
    ]

    @Test("refused request heads", arguments: refusedRequests)
    func refusedRequest(_ name: String, _ text: String) {
        #expect(throws: HTTP1.ParseError.self, "\(name) was accepted") { try Self.request(text) }
    }

    @Test("eight bytes at a time: a word holds a control byte exactly when one of its bytes is below 0x20 or 0x7F (every byte value at every place, and seeded words)")
    func controlBytesInWords() {
        func byByte(_ word: UInt64) -> Bool {
            (0..<8).contains { let byte = UInt8(truncatingIfNeeded: word >> ($0 * 8)); return byte < 0x20 || byte == 0x7F }
        }
        var random = SeededRandom(seed: 0x5EED_0F_8B17E5)
        for _ in 0..<20_000 {
            // Mostly visible bytes and obs-text, as heads are; the place under test gets every value.
            var word: UInt64 = 0
            for index in 0..<8 {
                let byte = UInt8(random.int(0x20...0xFF))
                word |= UInt64(byte == 0x7F ? 0x41 : byte) << (index * 8)
            }
            let place = random.int(0...7)
            for value in 0...255 {
                let changed = (word & ~(0xFF << (UInt64(place) * 8))) | UInt64(value) << (UInt64(place) * 8)
                if HTTP1.hasControlByte(changed) != byByte(changed) {
                    Issue.record("word \(String(changed, radix: 16)): \(HTTP1.hasControlByte(changed)) byte by byte \(byByte(changed))")
                    return
                }
            }
            let any = random.next()
            #expect(HTTP1.hasControlByte(any) == byByte(any))
        }
    }

    @Test("a control byte (but a tab) anywhere in a head is refused, wherever it falls in the eight-byte words; without it the head is read")
    func controlByteAnywhere() throws {
        let head = "POST /v1/deploy?x=1 HTTP/1.1\r\nHost: engine.example.com\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln\r\n"
            + "X-Tab:\tyes\r\nX-Obs: caf\u{E9}\r\n\r\n"
        let good = try Self.request(head)
        #expect(good.first("x-tab") == "yes")
        #expect(good.first("x-obs") == "caf\u{E9}")
        let bytes = Array(head.utf8)
        // Every place before the final CRLF CRLF, with a NUL, an ESC, DEL, a bare CR or LF (a tab in a value is allowed).
        for place in 0..<(bytes.count - 4) where bytes[place] != 13 && bytes[place] != 10 {
            for control: UInt8 in [0x00, 0x1B, 0x7F, 0x0D, 0x0A, 0x01, 0x1F] {
                var changed = bytes
                changed[place] = control
                #expect(throws: HTTP1.ParseError.self, "a 0x\(String(control, radix: 16)) at \(place) was accepted") {
                    try HTTP1.requestHead(ByteBuffer(bytes: changed))
                }
            }
        }
    }

    @Test("a response head, with or without a reason; status lines that are not one are refused")
    func responseHead() throws {
        let head = try Self.response("HTTP/1.1 404 Nothing Here\r\nContent-Length:  0 \r\nX-A: b\r\n\r\n")
        #expect(head.code == 404 && head.reasonPhrase == "Nothing Here")
        #expect(head.first("content-length") == "0" && head.first("x-a") == "b" && head.first("x-b") == nil)
        #expect(try Self.response("HTTP/1.1 200\r\n\r\n").code == 200)
        #expect(try Self.response("HTTP/1.1 200\r\n\r\n").reasonPhrase == "")
        #expect(try Self.response("HTTP/1.0 200 \r\n\r\n").version == .http1_0)
        for bad in ["HTTP/1.1 99 Low\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 20x OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n",
                    "HTTP/1.1 200OK\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nX: a\u{0}\r\n\r\n", "HTTP/1.1 200 O\u{1}K\r\n\r\n"] {
            #expect(throws: HTTP1.ParseError.self, "\(bad.debugDescription) was accepted") { try Self.response(bad) }
        }
    }

    @Test("the end of a head is found the same fed whole or a byte at a time")
    func headEnd() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\nX-A: \r\n\r\nGET /next HTTP/1.1\r\n\r\n"
        let whole = HTTP1.headEnd(ByteBuffer(string: text))
        #expect(whole == text.utf8.count - "GET /next HTTP/1.1\r\n\r\n".utf8.count)
        var buffer = ByteBuffer()
        var searched = 0
        var found: Int?
        for byte in text.utf8 {
            buffer.writeInteger(byte)
            if let end = HTTP1.headEnd(buffer, from: searched) {
                found = end
                break
            }
            searched = max(0, buffer.readableBytes - 3)
        }
        #expect(found == whole)
        #expect(HTTP1.headEnd(ByteBuffer(string: "GET / HTTP/1.1\r\n\n\r\n")) == nil)
    }

    /// Encodes `data` as chunks of random sizes, with extensions and trailers now and then.
    static func chunked(_ data: [UInt8], random: inout SeededRandom) -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        while offset < data.count {
            let size = min(data.count - offset, random.int(1...300))
            var line = String(size, radix: 16, uppercase: random.chance(0.5))
            if random.chance(0.2) { line += ";name=\"value\"" }
            out += Array((line + "\r\n").utf8) + data[offset..<offset + size] + Array("\r\n".utf8)
            offset += size
        }
        out += Array("0\r\n".utf8)
        if random.chance(0.3) { out += Array("X-Trailer: yes\r\n".utf8) }
        out += Array("\r\n".utf8)
        return out
    }

    @Test("chunked bodies decode to their data fed in any pieces, and stop exactly at their end (seeded)")
    func chunkedPieces() throws {
        var random = SeededRandom(seed: 20261207)
        for _ in 0..<300 {
            let data = (0..<random.int(0...2000)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let encoded = Self.chunked(data, random: &random) + Array("NEXT".utf8)
            var decoder = HTTP1.ChunkedDecoder(maxTrailerBytes: 1024)
            var decoded: [UInt8] = []
            var offset = 0
            var done = false
            var left = ByteBuffer()
            while offset < encoded.count, !done {
                let piece = min(encoded.count - offset, random.int(1...64))
                var buffer = ByteBuffer(bytes: encoded[offset..<offset + piece])
                offset += piece
                done = try decoder.decode(&buffer) { decoded += Array($0.readableBytesView) }
                left = buffer
            }
            #expect(done)
            #expect(decoded == data)
            // What follows the body is left unread, for the next message.
            let rest = Array(left.readableBytesView) + encoded[offset...]
            #expect(rest == Array("NEXT".utf8))
        }
    }

    static let refusedChunks: [(String, String)] = [
        ("a size that is not hexadecimal", "zz\r\nhello\r\n0\r\n\r\n"),
        ("an empty size", "\r\nhello\r\n0\r\n\r\n"),
        ("a size over 64 bits", "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("a bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        ("a space before the size's CRLF", "5 \r\nhello\r\n0\r\n\r\n"),
        ("data longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
        ("a bare LF after data", "5\r\nhello\n0\r\n\r\n"),
        ("a control byte in an extension", "5;a=\u{1}\r\nhello\r\n0\r\n\r\n"),
        ("a bare LF in the trailers", "0\r\nX-A: b\n\r\n"),
        ("a folded trailer", "0\r\n folded\r\n\r\n"),
        ("a bare CR ending the body", "0\r\n\rX"),
    ]

    @Test("refused chunked bodies", arguments: refusedChunks)
    func refusedChunk(_ name: String, _ text: String) {
        var decoder = HTTP1.ChunkedDecoder(maxTrailerBytes: 1024)
        var buffer = ByteBuffer(string: text)
        #expect(throws: HTTP1.ParseError.self, "\(name) was accepted") { _ = try decoder.decode(&buffer) { _ in } }
    }

    @Test("trailers beyond the header limit are refused, not buffered")
    func trailerBudget() {
        var decoder = HTTP1.ChunkedDecoder(maxTrailerBytes: 100)
        var buffer = ByteBuffer(string: "0\r\n" + String(repeating: "X-Pad: aaaaaaaaaa\r\n", count: 20) + "\r\n")
        #expect(throws: HTTP1.ParseError.self) { _ = try decoder.decode(&buffer) { _ in } }
    }

    @Test("an answer's framing: no body for HEAD, 204 and 304; a length, chunks, or the end of the connection; ambiguity refused")
    func responseFraming() throws {
        func framing(_ fields: String, status: Int = 200, method: HTTPMethod = .GET) throws -> UpstreamHandler.ResponseFraming {
            try UpstreamHandler.framing(of: Self.response("HTTP/1.1 \(status) X\r\n\(fields)\r\n"), method: method)
        }
        #expect(try framing("Content-Length: 10\r\n", method: .HEAD) == .none)
        #expect(try framing("Transfer-Encoding: chunked\r\n", status: 204) == .none)
        #expect(try framing("Content-Length: 99\r\n", status: 304) == .none)
        #expect(try framing("Content-Length: 10\r\n") == .length(10))
        #expect(try framing("Content-Length: 10, 10\r\nContent-Length: 10\r\n") == .length(10))
        #expect(try framing("Content-Length: 0\r\n") == .none)
        #expect(try framing("Transfer-Encoding:  Chunked \r\n") == .chunked)
        #expect(try framing("") == .untilClose)
        for bad in ["Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: gzip, chunked\r\n",
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "Content-Length: 10\r\nContent-Length: 11\r\n",
                    "Content-Length: +10\r\n", "Content-Length: -1\r\n", "Content-Length: 1 0\r\n", "Content-Length: \r\n",
                    "Content-Length: 10,\r\n", "Content-Length: 9999999999999999999\r\n"] {
            #expect(throws: HTTP1.ParseError.self, "\(bad.debugDescription) was accepted") { try framing(bad) }
        }
    }
}
