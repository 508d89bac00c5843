import Foundation
import GrayscaleTestSupport
import Testing

@testable import GrayscaleProxy

/// An access-log line is JSON that reads back as what was logged, whatever its strings hold:
/// quotes, backslashes, control bytes, any UTF-8 (a token's claim, an upstream's error).
@Suite("Access log lines")
struct AccessLogLineTests {
    static func decode(_ bytes: [UInt8]) throws -> [String: Any] {
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().contains(UInt8(ascii: "\n")) == false, "one line")
        return try #require(JSONSerialization.jsonObject(with: Data(bytes.dropLast())) as? [String: Any])
    }

    @Test("seeded random strings (ASCII, control bytes, quotes, backslashes, multi-byte UTF-8) read back as written; numbers and times too")
    func roundTrip() throws {
        var random = SeededRandom(seed: 20261207)
        let alphabet: [Character] = ["a", "Z", "0", " ", "\"", "\\", "/", "\u{0}", "\u{1}", "\t", "\n", "\r", "\u{1F}", "\u{7F}", "é", "€", "😀", "\u{2028}"]
        func text() -> String { String((0..<random.int(0...24)).map { _ in alphabet[random.int(0...(alphabet.count - 1))] }) }
        var clock = AccessLogLine.Clock()
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for step in 0..<2_000 {
            let millis = 1_700_000_000_000 + random.int(0...100_000_000_000)
            let latencyMicros = random.int(0...5_000_000)
            let line = AccessLogLine(
                time: Date(timeIntervalSince1970: Double(millis) / 1000 + 0.0001), service: text(), release: random.int(0...1_000_000),
                label: text(), route: text(), appId: step % 3 == 0 ? nil : text(), bucket: step % 4 == 0 ? nil : random.int(0...9_999),
                method: text(), path: text(), status: random.int(100...599), latencyMs: Double(latencyMicros) / 1000, upstream: text(),
                bytesIn: random.int(0...Int(Int32.max)), bytesOut: random.int(0...Int(Int32.max)), error: step % 2 == 0 ? nil : text())
            var out: [UInt8] = []
            line.encode(into: &out, clock: &clock)
            let object = try Self.decode(out)
            #expect(object["service"] as? String == line.service)
            #expect(object["label"] as? String == line.label)
            #expect(object["route"] as? String == line.route)
            #expect(object["appId"] as? String == (line.appId ?? "anonymous"))
            #expect(object["method"] as? String == line.method)
            #expect(object["path"] as? String == line.path)
            #expect(object["upstream"] as? String == line.upstream)
            #expect((object["error"] as? String) == line.error)
            if line.error == nil { #expect(object["error"] is NSNull) }
            #expect((object["release"] as? NSNumber)?.intValue == line.release)
            #expect((object["status"] as? NSNumber)?.intValue == line.status)
            #expect((object["bytesIn"] as? NSNumber)?.intValue == line.bytesIn)
            #expect((object["bytesOut"] as? NSNumber)?.intValue == line.bytesOut)
            if let bucket = line.bucket { #expect((object["bucket"] as? NSNumber)?.intValue == bucket) } else { #expect(object["bucket"] is NSNull) }
            // Three decimals, exactly the microseconds given.
            let latency = String(decoding: out, as: UTF8.self).split(separator: "\"latencyMs\":")[1].prefix { $0 != "," }
            #expect(latency == "\(latencyMicros / 1000).\(String(format: "%03d", latencyMicros % 1000))")
            let time = try #require(object["time"] as? String)
            #expect(formatter.date(from: time).map { Int(($0.timeIntervalSince1970 * 1000).rounded()) } == millis, "\(time)")
        }
    }

    @Test("a latency that is not a number, or past any clock, is logged as a number, never a crash")
    func oddLatencies() throws {
        for latency in [Double.nan, .infinity, -.infinity, -1, 1e300, -1e300, .greatestFiniteMagnitude, -.greatestFiniteMagnitude] {
            let line = AccessLogLine(time: Date(), service: "engine", release: 8, label: "v", route: "canary", appId: nil, bucket: nil,
                                     method: "GET", path: "/", status: 200, latencyMs: latency, upstream: "u", bytesIn: 0, bytesOut: 0, error: nil)
            var out: [UInt8] = []
            var clock = AccessLogLine.Clock()
            line.encode(into: &out, clock: &clock)
            #expect((try Self.decode(out))["latencyMs"] is NSNumber)
        }
    }
}
