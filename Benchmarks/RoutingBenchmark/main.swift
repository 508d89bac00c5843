// The proxy's per-request routing decision, measured alone: identity from the
// request (JWT claim), the user's bucket, the range check. Prints nanoseconds and
// heap allocations per decision. Run through Benchmarks/proxy.sh, which preloads
// malloc-interposer so the allocation counts are real.
import Foundation
import GrayscaleCore
import GrayscaleProxy
import MallocInterposerSwift
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
let heads: [HTTPRequestHead] = (0..<users).map { index in
    var headers = HTTPHeaders()
    headers.add(name: "host", value: "engine.example.com")
    headers.add(name: "user-agent", value: "serverless-cli/3.1")
    headers.add(name: "authorization", value: "Bearer " + jwt(#"{"iss":"sls","appId":"\#(1_253_970_000 + index)","exp":1893456000}"#))
    return HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/deploy", headers: headers)
}
let identity = IdentitySource()

@inline(never)
func decide(_ head: HTTPRequestHead) -> Route {
    let appId = identity.appId(in: head)
    return split.route(appId: appId, requestedChannel: nil, anonymousDraw: Bucket(0))
}

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
measure("routing decision (JWT appId + bucket + range)", iterations: iterations) { decide(heads[$0 & (users - 1)]).target == .canary ? 1 : 0 }
// A control that must allocate once per iteration: proves the interposer is counting.
measure("control: one array allocation", iterations: 100_000) { [Int](repeating: $0, count: 64 + ($0 & 7)).count }
measure("bucket only (MurmurHash3 of salt:appId)", iterations: iterations) { Bucket.of(appId: "1253970\($0 & 1023)", salt: "9f3a0c1d2e4b5a69").value }
