/// Which release a request goes to.
public enum RouteTarget: String, Codable, Hashable, Sendable {
    case stable
    case canary
}

/// A routing decision with the reason for it, as `traffic which` explains it.
public struct Route: Hashable, Sendable {
    public var target: RouteTarget
    public var reason: Reason
    /// The user's bucket for the current canary, when one was computed.
    public var bucket: Bucket?

    @inlinable
    public init(target: RouteTarget, reason: Reason, bucket: Bucket?) {
        self.target = target
        self.reason = reason
        self.bucket = bucket
    }

    public enum Reason: String, Codable, Hashable, Sendable {
        case noCanary
        case allowList
        case denyList
        case inRange
        case outOfRange
        case anonymousWeight
        /// The client asked for a channel (`X-Grayscale-Channel`) and the policy allows it.
        case optIn
    }
}

extension TrafficSplit {
    /// Routes an authenticated user by appId: deny list, then allow list, then the
    /// user's bucket (salted with the canary's salt) against the canary range.
    @inlinable
    public func route(appId: some StringProtocol, knownBucket: Bucket? = nil) -> Route {
        // Only the fields read are projected: binding the canary whole would copy it (its strings and routes).
        guard let range = canary?.range else { return Route(target: .stable, reason: .noCanary, bucket: nil) }
        if denyList.contains(where: { $0 == appId }) {
            return Route(target: .stable, reason: .denyList, bucket: nil)
        }
        if allowList.contains(where: { $0 == appId }) {
            return Route(target: .canary, reason: .allowList, bucket: nil)
        }
        let bucket = knownBucket ?? Bucket.of(appId: appId, salt: canary!.salt)  // there is a canary: its range was read
        return range.contains(bucket)
            ? Route(target: .canary, reason: .inRange, bucket: bucket)
            : Route(target: .stable, reason: .outOfRange, bucket: bucket)
    }

    /// Routes any request: the deny list wins, then the allow list, then an opt-in
    /// channel where allowed, then the bucket (authenticated) or the draw (anonymous).
    /// `knownBucket`: `appId`'s bucket under the canary's salt, when the caller remembers it.
    @inlinable
    public func route(appId: String?, requestedChannel: RouteTarget?, anonymousDraw: Bucket, knownBucket: Bucket? = nil) -> Route {
        guard canary != nil else { return Route(target: .stable, reason: .noCanary, bucket: nil) }
        if let appId, !denyList.isEmpty, denyList.contains(appId) {
            return Route(target: .stable, reason: .denyList, bucket: nil)
        }
        if let requestedChannel, optInAllowed {
            return Route(target: requestedChannel, reason: .optIn, bucket: nil)
        }
        guard let appId else { return routeAnonymous(draw: anonymousDraw) }
        return route(appId: appId, knownBucket: knownBucket)
    }

    /// Routes a request without a token: `draw` is a uniformly random bucket the
    /// caller picked (per request, or pinned by a sticky cookie).
    @inlinable
    public func routeAnonymous(draw: Bucket) -> Route {
        guard canary != nil else { return Route(target: .stable, reason: .noCanary, bucket: nil) }
        return Route(target: draw.value < nonAuthWeight ? .canary : .stable, reason: .anonymousWeight, bucket: draw)
    }
}

extension TrafficSplit {
    /// The bucket to put in a platform's routing header (Tencent SCF's alias rules) so
    /// that the platform picks the version `route` chose: the user's own bucket when it
    /// agrees, otherwise one inside the canary range for the canary and outside it for
    /// stable (`-1` when the range covers every bucket). SCF cannot mix weights and rules,
    /// so anonymous requests and list or opt-in decisions travel this way too.
    public func routingBucket(for route: Route) -> Int {
        guard let canary, !canary.range.isEmpty else { return route.bucket?.value ?? -1 }
        let range = canary.range
        if let bucket = route.bucket, range.contains(bucket) == (route.target == .canary) { return bucket.value }
        switch route.target {
        case .canary:
            return route.bucket.map { range.lower + $0.value % range.widthHundredths } ?? range.lower
        case .stable:
            if range.lower > 0 { return route.bucket.map { $0.value % range.lower } ?? 0 }
            return range.upper < Bucket.count ? range.upper : -1
        }
    }
}
