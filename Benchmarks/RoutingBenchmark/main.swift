// The proxy's per-request routing decision, measured alone: identity from the
// request (JWT claim), the user's bucket, the range check, for a token the connection
// has not seen and for a keep-alive connection's next request. Prints nanoseconds and
// heap allocations per decision. Run through Benchmarks/proxy.sh, which preloads
// malloc-interposer so the allocation counts are real.
import Foundation
import GrayscaleCore
import GrayscaleProxy
import MallocInterposerSwift
import NIOCore
import NIOHTTP1

func jwt(_ payload: String) -> String {
    func encode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
    return "\(encode(#"{"alg":"HS256","typ":"JWT"}"#)).\(encode(payload)).c2lnbmF0dXJl"
}

let split = TrafficSplit(
    service: "engine", revision: 3, stable: ReleaseRef(number: 7, label: "v2.1.0"),
    canary: .init(release: ReleaseRef(number: 8, label: "v2.1.1"), salt: "9f3a0c1d2e4b5a69", range: try CanaryRange.parse(percent: "20:55")),
    nonAuthWeight: 3600)
let users = 1024
// Heads as the proxy reads them off the wire: bytes and where each field lies.
let heads: [RequestHead] = (0..<users).map { index in
    let token = jwt(#"{"iss":"sls","appId":"\#(1_253_970_000 + index)","exp":1893456000}"#)
    let text = "POST /v1/deploy HTTP/1.1\r\nhost: engine.example.com\r\nuser-agent: serverless-cli/3.1\r\n"
        + "authorization: Bearer \(token)\r\n\r\n"
    return try! RequestHead(parsing: ByteBuffer(string: text))
}
let identity = IdentitySource()

/// The decision as the proxy makes it: `connection` is the memory of the connection the
/// request came on; `now` the time the proxy reads once per request (for the decision, the
/// statistics and the access log; measured on its own below).
@inline(never)
func decide(_ head: RequestHead, on connection: inout ConnectionRouting, now: Date) -> Route {
    let appId = connection.identify(head, source: identity, now: now).appId
    return connection.route(split, appId: appId, requestedChannel: nil, anonymousDraw: Bucket(0))
}

// Cold: every request a token the connection has not seen: on a new connection (a fresh
// memory each time: its first token's bytes are kept, one allocation per connection), and on
// a kept connection whose users change with every request (a front proxy's, multiplexed).
// Warm: 1,024 keep-alive connections, one user each, each sending its own token again.
var connections = [ConnectionRouting](repeating: ConnectionRouting(), count: users)
let now = Date()

func measure(_ name: String, iterations: Int, _ body: (Int) -> Int) {
    var sink = 0
    for index in 0..<10_000 { sink &+= body(index) }  // warm up
    MallocInterposerSwift.reset()
    MallocInterposerSwift.hook()
    let start = DispatchTime.now().uptimeNanoseconds
    for index in 0..<iterations { sink &+= body(index) }
    let elapsed = DispatchTime.now().uptimeNanoseconds - start
    MallocInterposerSwift.unhook()
    let mallocs = MallocInterposerSwift.getStatistics().mallocCount
    let padded = name.padding(toLength: 48, withPad: " ", startingAt: 0)
    print(padded + String(format: "%8.1f ns/op  %6.3f mallocs/op", Double(elapsed) / Double(iterations),
                          Double(mallocs) / Double(iterations)) + (sink == 42 ? " " : ""))
}

MallocInterposerSwift.initialize()
let iterations = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 2_000_000
// WARM_ONLY=1: the keep-alive decision alone, five times as long, for a profiler.
if ProcessInfo.processInfo.environment["WARM_ONLY"] != nil {
    measure("routing decision, keep-alive (token again)", iterations: iterations * 5) { index in
        decide(heads[index & (users - 1)], on: &connections[index & (users - 1)], now: now).target == .canary ? 1 : 0
    }
    exit(0)
}
measure("routing decision, new token, new connection", iterations: iterations) { index in
    var fresh = ConnectionRouting()
    return decide(heads[index & (users - 1)], on: &fresh, now: now).target == .canary ? 1 : 0
}
var shared = ConnectionRouting()
measure("routing decision, new token, kept connection", iterations: iterations) { index in
    decide(heads[index & (users - 1)], on: &shared, now: now).target == .canary ? 1 : 0
}
measure("routing decision, keep-alive (token again)", iterations: iterations) { index in
    decide(heads[index & (users - 1)], on: &connections[index & (users - 1)], now: now).target == .canary ? 1 : 0
}
// The head a client sends, read into field bounds (the wrk request of Benchmarks/proxy.sh, with a user agent).
let wire = ByteBuffer(string: "GET /v1/deploy HTTP/1.1\r\nHost: 127.0.0.1:18101\r\nUser-Agent: wrk/4.1\r\n"
    + "Authorization: Bearer \(jwt(#"{"appId":"1253970226","iss":"sls"}"#))\r\n\r\n")
measure("reading a request head (\(wire.readableBytes) bytes)", iterations: iterations) { _ in
    (try? RequestHead(parsing: wire))?.method == .GET ? 1 : 0
}
measure("reading the clock (once per request)", iterations: iterations) { _ in Int(Date().timeIntervalSince1970) & 1 }
// A control that must allocate once per iteration: proves the interposer is counting.
measure("control: one array allocation", iterations: 100_000) { [Int](repeating: $0, count: 64 + ($0 & 7)).count }
measure("bucket only (MurmurHash3 of salt:appId)", iterations: iterations) { Bucket.of(appId: "1253970\($0 & 1023)", salt: "9f3a0c1d2e4b5a69").value }
