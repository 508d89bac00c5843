import Foundation
import GrayscaleCore
import GrayscaleProxy
import NIOHTTP1
import Testing

@Suite("Identity from requests")
struct IdentitySourceTests {
    func head(_ headers: [(String, String)], uri: String = "/") -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(headers))
    }

    @Test("the appId claim of a bearer JWT, string or number")
    func jwtClaims() {
        let source = IdentitySource()
        #expect(source.appId(in: head([("Authorization", "Bearer \(makeJWT(["appId": "app-42", "sub": "x"]))")])) == "app-42")
        #expect(source.appId(in: head([("authorization", "bearer \(makeJWT(["nested": ["appId": "no"], "appId": 1253970226]))")])) == "1253970226")
        #expect(IdentitySource(kind: .bearerJWT(claim: "uid")).appId(in: head([("Authorization", "Bearer \(makeJWT(["uid": "u-1"]))")])) == "u-1")
    }

    @Test("malformed tokens are no identity, never an error", arguments: [
        "Bearer", "Bearer ", "Basic abc", "Bearer a.b", "Bearer a.b.c.d", "Bearer !!!.###.sig", "Bearer eyJ.eyJ.x",
        "Bearer \(makeJWT(["other": 1]))", "Bearer \(makeJWT(["appId": ["a", "b"]]))", "Bearer \(makeJWT(["appId": ""]))",
    ])
    func malformed(value: String) {
        #expect(IdentitySource().appId(in: head([("Authorization", value)])) == nil)
    }

    /// A token whose payload is exactly these bytes (not necessarily valid JSON or UTF-8).
    static func token(payload: [UInt8]) -> String {
        func encode(_ bytes: [UInt8]) -> String {
            Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        return "Bearer \(encode(Array(#"{"alg":"none"}"#.utf8))).\(encode(payload)).sig"
    }

    @Test("a JWT outside its nbf … exp, or issued in the future, names no user (a minute's leeway), and says why")
    func timeClaims() {
        let source = IdentitySource()
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func identify(_ payload: String) -> (appId: String?, problem: String?) {
            source.identify(in: head([("Authorization", Self.token(payload: Array(payload.utf8)))]), now: now)
        }
        let t = 1_800_000_000
        // Valid: within the window, at the edges of the leeway, fractional NumericDates, no time claims at all.
        for payload in [#"{"appId":"a","exp":\#(t + 3600),"nbf":\#(t - 10),"iat":\#(t - 10)}"#, #"{"appId":"a","exp":\#(t - 59)}"#,
                        #"{"appId":"a","nbf":\#(t + 59)}"#, #"{"appId":"a","iat":\#(t + 59)}"#, #"{"exp":\#(t + 1).5,"appId":"a"}"#,
                        #"{"appId":"a"}"#, #"{"appId":"a","exp":1.8e9}"#] {
            #expect(identify(payload).appId == "a", "\(payload)")
        }
        let expired = identify(#"{"appId":"a","exp":\#(t - 60)}"#)
        #expect(expired.appId == nil && expired.problem == "the token expired at 2027-01-15T07:59:00Z")
        let early = identify(#"{"nbf":\#(t + 61),"appId":"a"}"#)
        #expect(early.appId == nil && early.problem == "the token is not valid before 2027-01-15T08:01:01Z")
        let future = identify(#"{"appId":"a","iat":\#(t + 3600)}"#)
        #expect(future.appId == nil && future.problem?.hasPrefix("the token was issued in the future") == true)
        // Not a number, or twice: another parser could read another time.
        for payload in [#"{"appId":"a","exp":"tomorrow"}"#, #"{"appId":"a","exp":null}"#, #"{"appId":"a","exp":\#(t + 9),"exp":\#(t - 9999)}"#,
                        #"{"appId":"a","nbf":{"t":1}}"#, #"{"appId":"a","iat":1e999}"#, #"{"appId":"a","exp":0x10}"#] {
            let result = identify(payload)
            #expect(result.appId == nil && result.problem?.contains("is not a number of seconds") == true, "\(payload) → \(result)")
        }
    }

    @Test("claims are decoded strictly: invalid UTF-8, floats, booleans and objects make the request anonymous, and say why")
    func strictClaims() {
        let source = IdentitySource()
        func identify(_ payload: [UInt8]) -> (appId: String?, problem: String?) {
            source.identify(in: head([("Authorization", Self.token(payload: payload))]), now: Date())
        }
        // Two different byte strings must never become the same user (a replacement character).
        let invalid = identify(Array(#"{"appId":"ab"#.utf8) + [0xFF] + Array(#""}"#.utf8))
        #expect(invalid.appId == nil)
        #expect(invalid.problem == "the token's appId is not valid UTF-8")
        let other = identify(Array(#"{"appId":"ab"#.utf8) + [0xFE] + Array(#""}"#.utf8))
        #expect(other.appId == nil)
        for payload in [#"{"appId":12.5}"#, #"{"appId":1e3}"#, #"{"appId":true}"#, #"{"appId":null}"#, #"{"appId":{"id":1}}"#, #"{"appId":"a\u0041"}"#] {
            let result = identify(Array(payload.utf8))
            #expect(result.appId == nil, "\(payload)")
            #expect(result.problem != nil, "\(payload) is anonymous without saying why")
        }
        #expect(identify(Array(#"{"appId":-42}"#.utf8)).appId == "-42")
        #expect(identify(Array(#"{"appId":"用户-1"}"#.utf8)).appId == "用户-1")
        // Another parser must not read another user out of the same token.
        for payload in [#"{"appId":"alice","appId":"bob"}"#, #"{"appId":"alice","app\u0049d":"bob"}"#, #"{"appId":007}"#, #"{"appId":-0}"#] {
            let result = identify(Array(payload.utf8))
            #expect(result.appId == nil && result.problem != nil, "\(payload) → \(String(describing: result.appId))")
        }
        #expect(identify(Array(#"{"appId":0}"#.utf8)).appId == "0")
        let absent = identify(Array(#"{"sub":"x"}"#.utf8))
        #expect(absent.appId == nil && absent.problem == nil, "no appId claim is anonymous, not a problem")
    }

    @Test("with an HS256 secret only correctly signed tokens name a user")
    func hs256() {
        let secret = Array("s3cret".utf8)
        let source = IdentitySource(kind: .bearerJWT(claim: "appId"), hs256Secret: secret)
        let good = makeJWT(["appId": "signed"], hs256Secret: secret)
        let forged = makeJWT(["appId": "signed"], hs256Secret: Array("other".utf8))
        #expect(source.appId(in: head([("Authorization", "Bearer \(good)")])) == "signed")
        #expect(source.appId(in: head([("Authorization", "Bearer \(forged)")])) == nil)
        #expect(source.appId(in: head([("Authorization", "Bearer \(makeJWT(["appId": "signed"]))")])) == nil)
    }

    @Test("a named header, cookie or query parameter")
    func alternatives() throws {
        #expect(try IdentitySource(parsing: "header:X-App-Id").appId(in: head([("x-app-id", "h-1")])) == "h-1")
        #expect(try IdentitySource(parsing: "cookie:app").appId(in: head([("cookie", "a=b; app=c-1; z=y")])) == "c-1")
        // A Cookie value is read at its commas too, as NIO's canonical form reads it.
        #expect(try IdentitySource(parsing: "cookie:app").appId(in: head([("cookie", "theme=dark, app=c-2")])) == "c-2")
        #expect(try IdentitySource(parsing: "cookie:app").appId(in: head([("cookie", "app=c-3,x=1")])) == "c-3")
        #expect(try IdentitySource(parsing: "cookie:app").appId(in: head([("cookie", "a=b"), ("Cookie", "app=c-4")])) == "c-4")
        #expect(try IdentitySource(parsing: "query:appId").appId(in: head([], uri: "/x?q=1&appId=q-1")) == "q-1")
        #expect(try IdentitySource(parsing: "query:appId").appId(in: head([], uri: "/x?appIdx=no")) == nil)
        #expect(throws: IdentitySourceError.self) { try IdentitySource(parsing: "bogus") }
    }
}

@Suite("Per-version statistics")
struct ProxyStatisticsTests {
    @Test("failures held behind an unanswered first request are recorded when it is abandoned or has waited too long; new anonymous draws are first without being kept")
    func heldFailures() throws {
        let statistics = ProxyStatistics(windowSeconds: 10, retainedWindows: 100, firstRequestPatience: 60)
        let release = ReleaseRef(number: 8, label: "v2.1.1")
        let split = TrafficSplit(service: "engine", revision: 1, stable: ReleaseRef(number: 7, label: "v2.1.0"),
                                 canary: .init(release: release, salt: "s", range: try .parse(percent: "50")))
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        func failing(_ unit: String, at offset: Double) {
            statistics.record(RequestOutcome(service: "engine", release: release, appId: nil, status: 503, errorClass: .upstream5xx,
                                             latencyMicros: 1000, at: t0.addingTimeInterval(offset),
                                             unit: UnitEvent(unit: unit, canary: true, lower: 0, upper: 5000)))
        }
        func failures() -> [String] {
            statistics.snapshot(now: t0).versions.flatMap(\.windows).compactMap(\.evidence).flatMap(\.failures).map(\.unit).sorted()
        }
        #expect(statistics.isFirstRequest("u:a", service: "engine", split: split, at: t0))
        #expect(statistics.isFirstRequest("u:b", service: "engine", split: split, at: t0))
        failing("u:a", at: 1)
        failing("u:b", at: 1)
        #expect(failures().isEmpty, "both wait for their first requests")
        statistics.firstRequestAbandoned("u:a", service: "engine", at: t0.addingTimeInterval(2))
        #expect(failures() == ["u:a"])
        _ = statistics.observation(service: "engine", release: 8, from: t0, to: t0.addingTimeInterval(61))
        #expect(failures() == ["u:a", "u:b"], "after 60 s the second no longer waits")
        // A new anonymous draw is first, and not remembered: it fills nothing.
        #expect(statistics.isFirstRequest("a:new", service: "engine", split: split, newUnit: true, at: t0))
        #expect(statistics.isFirstRequest("a:new", service: "engine", split: split, at: t0), "not remembered by the new draw")
        #expect(!statistics.isFirstRequest("a:new", service: "engine", split: split, at: t0))
        // A new split while a first request is unanswered: what it held is recorded, not dropped.
        let wider = TrafficSplit(service: "engine", revision: 2, stable: ReleaseRef(number: 7, label: "v2.1.0"),
                                 canary: .init(release: release, salt: "s", range: try .parse(percent: "60")))
        #expect(statistics.isFirstRequest("u:c", service: "engine", split: split, at: t0))
        failing("u:c", at: 3)
        #expect(!failures().contains("u:c"))
        #expect(statistics.isFirstRequest("u:c", service: "engine", split: wider, at: t0.addingTimeInterval(4)))
        #expect(failures().contains("u:c"))
    }

    @Test("windows count requests, errors by class and distinct affected users")
    func windows() {
        let statistics = ProxyStatistics(windowSeconds: 10, retainedWindows: 3)
        let release = ReleaseRef(number: 8, label: "v2.1.1")
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        func record(_ offset: Double, _ appId: String?, _ status: Int, _ error: ErrorClass?, micros: UInt64 = 1000) {
            statistics.record(RequestOutcome(service: "engine", release: release, appId: appId, status: status, errorClass: error,
                                             latencyMicros: micros, at: t0.addingTimeInterval(offset)))
        }
        record(0, "a", 200, nil)
        record(1, "a", 503, .upstream5xx)
        record(2, "a", 502, .connectFailure)
        record(3, "b", 504, .timeout, micros: 30_000)
        record(4, nil, 502, .connectFailure)
        record(5, "c", 413, .rejected)
        record(12, "d", 503, .upstream5xx)
        let all = statistics.snapshot().versions.first!
        #expect(all.windows.count == 2)
        #expect(all.totals.requests == 7)
        #expect(all.totals.errors == 5)
        #expect(all.totals.errorsByClass == ["upstream5xx": 2, "connectFailure": 2, "timeout": 1, "rejected": 1, "upgradeFailed": 0, "webSocketDropped": 0])
        #expect(all.totals.affectedUsers == 3)
        #expect(all.totals.anonymousErrors == 1)
        #expect(all.windows[0].latencyMs.max >= 29.9)
        let recent = statistics.snapshot(since: t0.addingTimeInterval(11)).versions.first!
        #expect(recent.totals.requests == 1)
        // A failure is dated by the request's arrival (its answer's time less its latency), so
        // a version that fails slowly is not judged by a later moment than one that fails fast.
        let unit = UnitEvent(unit: "u:f", canary: true, lower: 0, upper: 100, at: 0)
        statistics.record(RequestOutcome(service: "engine", release: release, appId: "f", status: 504, errorClass: .timeout,
                                         latencyMicros: 3_500_000, at: t0.addingTimeInterval(19), unit: unit))
        let failures = statistics.snapshot().versions.first!.windows.compactMap(\.evidence).flatMap(\.failures)
        #expect(failures.map(\.at) == [t0.timeIntervalSince1970 + 15.5])
        // The same unit failing again, answered later but arrived earlier: its earliest arrival is kept, once.
        statistics.record(RequestOutcome(service: "engine", release: release, appId: "f", status: 503, errorClass: .upstream5xx,
                                         latencyMicros: 5_000_000, at: t0.addingTimeInterval(19.5), unit: unit))
        let again = statistics.snapshot().versions.first!.windows.compactMap(\.evidence).flatMap(\.failures)
        #expect(again.map(\.at) == [t0.timeIntervalSince1970 + 14.5])
        // Retention: windows older than three are dropped.
        record(45, "e", 200, nil)
        #expect(statistics.snapshot().versions.first!.windows.map(\.requests) == [1])
    }
}
