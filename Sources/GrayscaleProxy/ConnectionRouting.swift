import Foundation
import GrayscaleCore
import NIOHTTP1

/// What one client connection remembers between its requests to route the next one
/// faster: the user its last token named (`IdentitySource.Memo`) and that user's bucket
/// under the last salt. A keep-alive client sends the same token with every request, so
/// after its first request the decision is a comparison of the token, of the clock with
/// the token's span, and of the bucket with the range. The answer is the one the whole
/// decision would give: the memo is keyed by everything the answer depends on (the
/// token's bytes, the time's span, the appId and the salt); the range, lists and channel
/// are read from the split every time.
public struct ConnectionRouting: Sendable {
    var identity = IdentitySource.Memo()
    var bucket: (appId: String, salt: String, bucket: Bucket)?

    public init() {}

    /// The request's user, or why its credential names none.
    public mutating func identify(_ head: RequestHead, source: IdentitySource, now: Date) -> (appId: String?, problem: String?) {
        source.identify(in: head, now: now, memo: &identity)
    }

    /// The same, from NIO's form of the head (tests).
    public mutating func identify(_ head: HTTPRequestHead, source: IdentitySource, now: Date) -> (appId: String?, problem: String?) {
        identify(RequestHead(head), source: source, now: now)
    }

    /// `split.route`, with the user's bucket remembered per salt.
    public mutating func route(_ split: TrafficSplit, appId: String?, requestedChannel: RouteTarget?, anonymousDraw: Bucket) -> Route {
        guard let appId, let salt = split.canary?.salt else {
            return split.route(appId: appId, requestedChannel: requestedChannel, anonymousDraw: anonymousDraw)
        }
        if let memo = bucket, sameBytes(memo.appId, appId), sameBytes(memo.salt, salt) {
            return split.route(appId: appId, requestedChannel: requestedChannel, anonymousDraw: anonymousDraw, knownBucket: memo.bucket)
        }
        let route = split.route(appId: appId, requestedChannel: requestedChannel, anonymousDraw: anonymousDraw)
        if let computed = route.bucket, route.reason == .inRange || route.reason == .outOfRange { bucket = (appId, salt, computed) }
        return route
    }
}

/// Whether two strings are the same bytes: `==` compares canonical equivalence, so "é" and
/// "e\u{301}" (two users, two buckets) would be equal.
@inline(__always)
func sameBytes(_ lhs: String, _ rhs: String) -> Bool {
    let left = lhs.utf8, right = rhs.utf8
    guard left.count == right.count else { return false }
    return left.withContiguousStorageIfAvailable { l in
        right.withContiguousStorageIfAvailable { r in l.count == 0 || memcmp(l.baseAddress!, r.baseAddress!, l.count) == 0 } ?? right.elementsEqual(l)
    } ?? left.elementsEqual(right)
}
