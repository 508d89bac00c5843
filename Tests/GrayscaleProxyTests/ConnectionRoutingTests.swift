import Foundation
import GrayscaleCore
import GrayscaleTestSupport
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GrayscaleProxy

/// A connection remembers its last token's user and bucket (`ConnectionRouting`): its
/// answers must be the ones the whole decision gives, whatever the connection sends next
/// (another user's token, as a front proxy that multiplexes users on one connection would),
/// whenever (a token that expires or becomes valid while it is remembered) and under
/// whichever split (a new release's salt, a moved range).
@Suite("A connection's routing memory")
struct ConnectionRoutingTests {
    static let start = 1_900_000_000.0
    static let secret = Array("memo-secret".utf8)

    static func head(_ authorization: String?) -> HTTPRequestHead {
        var headers = HTTPHeaders([("Host", "engine.example.com")])
        if let authorization { headers.add(name: "Authorization", value: authorization) }
        return HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)
    }

    /// Tokens whose answers differ by user, by time and by signature, as the memory could confuse them.
    static func tokens(signedWith secret: [UInt8]?) -> [String?] {
        let t = start
        let claims: [[String: Any]] = [
            ["appId": "app-1"],
            ["appId": "app-1", "exp": t + 100],                // expires during the run
            ["appId": "app-2", "nbf": t + 50],                 // becomes valid during the run
            ["appId": 12_345, "iat": t + 30],                  // issued "in the future" until t + 30 - 60
            ["appId": "app-3", "exp": t - 200],                // expired from the start
            ["appId": "app-4", "exp": t + 20.5, "nbf": t - 5.25],  // fractional times
            ["appId": "app-5", "exp": "soon"],                 // a time that is not a number
            ["appId": "app-6", "exp": t + 70, "nbf": t + 10],  // a window inside the run
            ["appId": ""],
            ["uid": "no-app-id"],
            ["appId": "app-a+"],                              // its payload's base64 has a K (below)
        ]
        var tokens: [String?] = claims.map { "Bearer " + makeJWT($0, hs256Secret: secret) }
        // Canonically equivalent text, different bytes: String == would take these for the first token.
        if let token = tokens.compactMap({ $0 }).last(where: { $0.contains("K") }), let k = token.lastIndex(of: "K") {
            tokens.append(token.replacingCharacters(in: k...k, with: "\u{212A}"))  // a Kelvin sign for a K
        } else {
            Issue.record("no token has a K to swap")
        }
        tokens.append("Bearer " + makeJWT(["appId": "caf\u{E9}"], hs256Secret: secret))   // é composed
        tokens.append("Bearer " + makeJWT(["appId": "cafe\u{301}"], hs256Secret: secret))  // e and a combining accent
        if secret != nil {
            tokens.append("Bearer " + makeJWT(["appId": "forged"], hs256Secret: Array("other".utf8)))  // a bad signature
        }
        tokens += [nil, "Bearer not.a.jwt", "Basic dXNlcjpwYXNz"]
        return tokens
    }

    static func split(salt: String, range: String) throws -> TrafficSplit {
        TrafficSplit(service: "engine", revision: 1, stable: ReleaseRef(number: 7, label: "v7"),
                     canary: .init(release: ReleaseRef(number: 8, label: "v8"), salt: salt, range: try CanaryRange.parse(percent: range)),
                     nonAuthWeight: 0)
    }

    @Test("over seeded random sequences of tokens, clock steps and splits, the remembered answer is the fresh one", arguments: [false, true])
    func sameAsFresh(signed: Bool) throws {
        let source = IdentitySource(kind: .bearerJWT(claim: "appId"), hs256Secret: signed ? Self.secret : nil)
        let tokens = Self.tokens(signedWith: signed ? Self.secret : nil)
        let splits = try [Self.split(salt: "salt-a", range: "0:50"), Self.split(salt: "salt-b", range: "0:50"),
                          Self.split(salt: "salt-a", range: "25:75"), Self.split(salt: "salt-c", range: "0:99")]
        var random = SeededRandom(seed: signed ? 20_261_207 : 7_120_262)
        var memos = [ConnectionRouting](repeating: ConnectionRouting(), count: 4)
        var now = Self.start - 120
        var last = [String?](repeating: nil, count: 4)
        var repeats = 0
        for step in 0..<20_000 {
            // Mostly the same token again on the same connection (keep-alive), sometimes another.
            let connection = random.int(0...3)
            let token = random.chance(0.7) ? tokens[(connection * 5 + step / 1000) % tokens.count] : tokens[random.int(0...(tokens.count - 1))]
            let split = splits[random.chance(0.9) ? 0 : random.int(0...(splits.count - 1))]
            now += Double(random.int(0...20)) / 10
            let head = Self.head(token)
            let date = Date(timeIntervalSince1970: now)
            let fresh = source.identify(in: head, now: date)
            let freshRoute = split.route(appId: fresh.appId, requestedChannel: nil, anonymousDraw: Bucket(0))
            let remembered = memos[connection].identify(head, source: source, now: date)
            let route = memos[connection].route(split, appId: remembered.appId, requestedChannel: nil, anonymousDraw: Bucket(0))
            guard remembered.appId == fresh.appId, remembered.problem == fresh.problem, route == freshRoute else {
                Issue.record("step \(step) at \(now): \(token ?? "none"): \(remembered), \(route) != \(fresh), \(freshRoute)")
                return
            }
            if remembered.appId != nil, last[connection] == token { repeats += 1 }  // answered from the memory
            last[connection] = token
            if now > Self.start + 300 { now = Self.start - 120 }  // back in time too: a clock stepped back
        }
        #expect(repeats > 2_000)  // the sequences did ask again for users the connection remembered
    }

    @Test("a token that expires while remembered stops naming its user at exp plus the leeway")
    func expiresWhileRemembered() {
        let source = IdentitySource()
        let head = Self.head("Bearer " + makeJWT(["appId": "app-1", "exp": Self.start]))
        var memo = ConnectionRouting()
        #expect(memo.identify(head, source: source, now: Date(timeIntervalSince1970: Self.start + 59)).appId == "app-1")
        let after = memo.identify(head, source: source, now: Date(timeIntervalSince1970: Self.start + 60))
        #expect(after.appId == nil)
        #expect(after.problem?.contains("expired") == true)
    }

    @Test("another user's token on the same connection is that user, and a new salt draws a new bucket")
    func anotherUserAnotherSalt() throws {
        let source = IdentitySource()
        var memo = ConnectionRouting()
        let now = Date(timeIntervalSince1970: Self.start)
        let first = memo.identify(Self.head("Bearer " + makeJWT(["appId": "app-1"])), source: source, now: now)
        let second = memo.identify(Self.head("Bearer " + makeJWT(["appId": "app-2"])), source: source, now: now)
        #expect(first.appId == "app-1")
        #expect(second.appId == "app-2")
        let a = try Self.split(salt: "salt-a", range: "0:50"), b = try Self.split(salt: "salt-b", range: "0:50")
        #expect(memo.route(a, appId: "app-2", requestedChannel: nil, anonymousDraw: Bucket(0)).bucket == Bucket.of(appId: "app-2", salt: "salt-a"))
        #expect(memo.route(b, appId: "app-2", requestedChannel: nil, anonymousDraw: Bucket(0)).bucket == Bucket.of(appId: "app-2", salt: "salt-b"))
    }
}

/// The per-loop sweep's list: connections leave it in any order (a swap in its array), one
/// may leave while the sweep runs, and the timer runs only while the list is not empty.
@Suite("The connections' sweep")
struct ConnectionSweepTests {
    final class Connection: SweptConnection {
        let name: String
        var sweepSlot = -1
        var swept = 0
        var onSweep: (() -> Void)?
        init(_ name: String) { self.name = name }
        func sweep(now: NIODeadline) {
            swept += 1
            onSweep?()
        }
    }

    static func counts(_ connections: Connection...) -> [Int] { connections.map(\.swept) }

    @Test("adds, swap-removes, a removal during the sweep, a stale removal, and the timer only while needed")
    func bookkeeping() {
        let loop = EmbeddedEventLoop()
        let sweep = ConnectionSweep(eventLoop: loop, idleTimeout: .seconds(4), responseTimeout: .seconds(8))
        #expect(sweep.interval.nanoseconds == 1_000_000_000)
        let (a, b, c, d) = (Connection("a"), Connection("b"), Connection("c"), Connection("d"))
        #expect(!sweep.isArmed)
        for connection in [a, b, c, d] { sweep.add(connection) }
        #expect(sweep.count == 4)
        #expect(sweep.isArmed)
        sweep.remove(b)  // the last one, d, takes b's place
        #expect(sweep.count == 3)
        #expect(b.sweepSlot < 0)
        #expect(d.sweepSlot == 1)
        sweep.remove(b)  // already gone: nothing changes
        #expect(sweep.count == 3)
        c.onSweep = { sweep.remove(c) }  // closes while the sweep runs
        loop.advanceTime(by: .seconds(1))
        #expect(Self.counts(a, b, c, d) == [1, 0, 1, 1] as [Int])
        #expect(sweep.count == 2)
        #expect(a.sweepSlot == 0)
        #expect(d.sweepSlot == 1)
        loop.advanceTime(by: .seconds(1))
        #expect(Self.counts(a, b, c, d) == [2, 0, 1, 2] as [Int])
        sweep.remove(a)
        #expect(d.sweepSlot == 0)
        sweep.remove(d)
        #expect(sweep.count == 0)
        #expect(!sweep.isArmed)
        loop.advanceTime(by: .seconds(3))
        #expect(Self.counts(a, d) == [2, 2] as [Int])  // no timer, no sweep
        sweep.add(b)
        #expect(sweep.isArmed)
        loop.advanceTime(by: .seconds(1))
        #expect(b.swept == 1)
        sweep.remove(b)
    }
}

/// The header sets the proxy drops by (looked up by length first) hold exactly the names of
/// their lists, in any case, and nothing else: over every listed name, its case variants,
/// its one-letter changes and common headers.
@Suite("Dropped header names")
struct HeaderNameSetTests {
    @Test("the sets answer as the lists do", arguments: [
        (ProxyHandler.hopByHop + ProxyHandler.replacedUpstream, ProxyHandler.droppedUpstream),
        (ProxyHandler.hopByHop + ProxyHandler.replacedDownstream, ProxyHandler.droppedDownstream),
    ])
    func sameAsLists(_ list: [StaticString], _ set: HeaderNameSet) {
        var random = SeededRandom(seed: 4_242)
        var names = ["host", "authorization", "cookie", "content-type", "date", "server", "x-request-id", "", "t", "te ", "connectio",
                     "connections", "x-forwarded-forx", "proxy-authorizatio", "keep_alive"]
        for name in list.map({ String(decoding: UnsafeRawBufferPointer(start: $0.utf8Start, count: $0.utf8CodeUnitCount), as: UTF8.self) }) {
            names += [name, name.uppercased(), String(name.enumerated().map { $0.offset % 2 == 0 ? Character($0.element.uppercased()) : $0.element })]
            for _ in 0..<20 {  // one byte changed anywhere, to anything printable
                var bytes = Array(name.utf8)
                bytes[random.int(0...(bytes.count - 1))] = UInt8(random.int(33...126))
                names.append(String(decoding: bytes, as: UTF8.self))
            }
        }
        for name in names {
            let listed = list.contains { isASCIICaseInsensitiveEqual(name, $0) }
            #expect(set.contains(name) == listed, "\(name)")
            var copy = name
            #expect(copy.withUTF8 { set.contains(UnsafeRawBufferPointer($0)) } == listed, "\(name)")
        }
    }
}

/// The access log writes each line's second once per second (the next lines of that second
/// reuse it): whatever order the lines come in, each time reads as an ISO 8601 formatter
/// writes it, to the millisecond.
@Suite("Access log times")
struct AccessLogTimeTests {
    @Test("seeded random times, in order and out of it, across days and years, read as ISO 8601")
    func times() throws {
        var random = SeededRandom(seed: 1_207)
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        var clock = AccessLogLine.Clock()
        var millis = 1_798_761_599_000  // 2026-12-31T23:59:59Z
        for step in 0..<5_000 {
            switch random.int(0...3) {
            case 0: millis += random.int(0...3)              // the same second, mostly
            case 1: millis += random.int(0...2_000)          // the next ones
            case 2: millis -= random.int(0...5_000)          // an earlier line (another loop's)
            default: millis += random.int(0...90_000_000)    // a day later
            }
            let line = AccessLogLine(time: Date(timeIntervalSince1970: Double(millis) / 1000), service: "engine", release: 8, label: "v2.1.1",
                                     route: "canary", appId: "a", bucket: 1, method: "GET", path: "/", status: 200, latencyMs: 1,
                                     upstream: "127.0.0.1:9008", bytesIn: 0, bytesOut: 0, error: nil)
            var out: [UInt8] = []
            line.encode(into: &out, clock: &clock)
            let text = String(decoding: out, as: UTF8.self)
            let expected = formatter.string(from: Date(timeIntervalSince1970: Double(millis / 1000))).dropLast()  // without the Z
                + String(format: ".%03dZ", millis % 1000)
            guard text.hasPrefix("{\"time\":\"\(expected)\"") else {
                Issue.record("step \(step): \(text.prefix(40)) is not \(expected)")
                return
            }
        }
    }
}
