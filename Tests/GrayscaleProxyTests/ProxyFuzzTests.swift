import Foundation
import GrayscaleProxy
import GrayscaleTestSupport
import Testing

/// A seeded byte-level mutator over a corpus of valid and hostile requests, run against
/// the proxy for a bounded time. The invariant: the upstream parses only requests the
/// proxy logged (nothing hidden reaches it), each with the proxy's own framing; and the
/// proxy keeps serving. `GRAYSCALE_FUZZ_SEED=n` replays, `GRAYSCALE_FUZZ_SECONDS=n` runs longer.
@Suite("Request path fuzzing", .serialized)
struct ProxyFuzzTests {
    static let token = SmugglingTests.token

    static let corpus: [String] = SmugglingTests.cases.map(\.request) + [
        "GET /plain HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: close\r\n\r\n",
        "GET /anonymous HTTP/1.1\r\nHost: x\r\nCookie: grayscale_sticky=abc\r\n\r\n",
        "POST /body HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        "POST /chunks HTTP/1.1\r\nHost: x\r\n\(token)\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
        "GET /one HTTP/1.1\r\nHost: x\r\n\(token)\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: close\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        "GET /h2c HTTP/1.1\r\nHost: x\r\n\(token)\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        "GET /old HTTP/1.0\r\n\(token)\r\n\r\n",
        "PUT /empty HTTP/1.1\r\nHost: x\r\n\(token)\r\nContent-Length: 0\r\n\r\n",
    ]

    static let tokens: [String] = ["\r\n", "\n", "\r", " ", "\t", ",", ":", ";", "0", "f", "-", "\u{0}", "chunked", "Chunked",
                                   "Transfer-Encoding: chunked\r\n", "Transfer-Encoding: identity\r\n", "Content-Length: 7\r\n",
                                   "Content-Length: -1\r\n", "Connection: upgrade, content-length\r\n", "Upgrade: h2c\r\n",
                                   "GET /hidden HTTP/1.1\r\nHost: y\r\n\r\n", "ffffffffffffffffff", "HTTP/1.1", "\r\n\r\n"]

    static func mutate(_ input: [UInt8], _ random: inout SeededRandom) -> [UInt8] {
        var bytes = input
        for _ in 0..<random.int(1...4) {
            switch random.int(0...4) {
            case 0 where !bytes.isEmpty:
                bytes[random.int(0...(bytes.count - 1))] = Array(tokens[random.int(0...(tokens.count - 1))].utf8).first ?? 0
            case 1:
                bytes.insert(contentsOf: Array(tokens[random.int(0...(tokens.count - 1))].utf8), at: random.int(0...bytes.count))
            case 2 where bytes.count > 1:
                let start = random.int(0...(bytes.count - 1))
                bytes.removeSubrange(start..<min(bytes.count, start + random.int(1...8)))
            case 3:
                let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                guard lines.count > 1 else { continue }
                let index = random.int(0...(lines.count - 1))
                var copy = Array(lines.map(Array.init))
                copy.insert(copy[index], at: index)
                bytes = Array(copy.joined(separator: [UInt8(ascii: "\n")]))
            default:
                let other = Array(corpus[random.int(0...(corpus.count - 1))].utf8)
                bytes = Array(bytes.prefix(random.int(0...bytes.count))) + other.suffix(random.int(0...other.count))
            }
        }
        return bytes
    }

    @Test("mutated requests: the upstream parses only what the proxy logged, each with the proxy's framing; the proxy keeps serving")
    func fuzz() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["GRAYSCALE_FUZZ_SEED"].flatMap(UInt64.init) ?? 20_261_128
        let seconds = environment["GRAYSCALE_FUZZ_SECONDS"].flatMap(Double.init) ?? 15
        var random = SeededRandom(seed: seed)
        try await SmugglingTests.run { harness, upstream in
            let deadline = Date().addingTimeInterval(seconds)
            var iterations = 0
            var statuses: [String: Int] = [:]
            while Date() < deadline {
                let input = Self.mutate(Array(Self.corpus[random.int(0...(Self.corpus.count - 1))].utf8), &random)
                let socket = try RawSocket(port: harness.port, timeout: 0.2)
                try? socket.send(input)
                socket.receive()
                let status = socket.text.hasPrefix("HTTP/1.") ? String(socket.text.dropFirst(9).prefix(3)) : "none"
                statuses[status, default: 0] += 1
                iterations += 1
            }
            // The proxy still serves.
            let check = try SmugglingTests.exchange(harness, "GET /still HTTP/1.1\r\nHost: x\r\n\(Self.token)\r\nConnection: close\r\n\r\n")
            #expect(check.text.contains("answer for /still"), "the proxy stopped serving after fuzzing: '\(check.text)'")
            let plain = try SmugglingTests.exchange(harness, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(plain.text.hasPrefix("HTTP/1.1 "), "an anonymous request got no answer either: '\(plain.text)'")
            try await Task.sleep(for: .milliseconds(500))
            harness.accessLog.flush()

            // What the proxy logged as routed to this upstream, by method and path.
            var logged: [String: Int] = [:]
            for line in try String(contentsOfFile: harness.accessLogPath, encoding: .utf8).split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      object["upstream"] as? String == upstream.url.replacingOccurrences(of: "http://", with: ""), let method = object["method"] as? String, let path = object["path"] as? String
                else { continue }
                logged["\(method) \(path)", default: 0] += 1
            }
            var parsed: [String: Int] = [:]
            for request in upstream.requests.withLockedValue({ $0 }) { parsed[request, default: 0] += 1 }
            let hidden = parsed.filter { $0.value > (logged[$0.key] ?? 0) }
            #expect(hidden.isEmpty, "the upstream parsed requests the proxy never logged: \(hidden)")
            for framing in upstream.framings.withLockedValue({ $0 }) {
                #expect(framing.transferEncoding.isEmpty || framing.transferEncoding == ["chunked"], "forwarded \(framing.transferEncoding)")
                #expect(framing.transferEncoding.isEmpty || framing.contentLength.isEmpty, "forwarded CL and TE together")
                #expect(framing.contentLength.count <= 1)
            }
            print("fuzz seed \(seed): \(iterations) mutated requests in \(Int(seconds)) s; statuses \(statuses.sorted { $0.key < $1.key }); "
                  + "\(parsed.values.reduce(0, +)) requests reached the upstream, all logged")
        }
    }
}
