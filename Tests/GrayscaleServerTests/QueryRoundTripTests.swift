import Testing
@testable import GrayscaleServer

@Suite("Query strings")
struct QueryRoundTripTests {
    /// The routing follower's long poll waits only when the version it sends reads back as
    /// itself; a version encoded twice never matched, and every proxy polled without pause.
    @Test("the follower's after= reads back as the version it sent, whatever its characters")
    func afterRoundTrips() {
        for version in ["", "engine:3:2", "engine:3:2,registry:1:1,events:10:4", "a+b c&d=e%f/g?h#i", "用户:1:1"] {
            let uri = "/api/v1/routing?after=\(RoutingFollower.queryValue(version))"
            let query = uri.split(separator: "?", maxSplits: 1)[1]
            #expect(FormFields.parse(query)["after"] == version, "\(version)")
        }
    }
}
