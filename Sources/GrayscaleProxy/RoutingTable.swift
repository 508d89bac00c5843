import GrayscaleCore
import NIOHTTP1

/// Everything the proxy needs to route one service's requests, precomputed when a
/// split changes so that the per-request work is lookups and one hash.
public struct ServiceRoute: Sendable {
    public let service: String
    public let split: TrafficSplit
    public let stable: Target
    public let canary: Target?
    /// Hundredths of a percent of stable's safe requests also sent to the canary (0: none).
    public let mirror: Int
    /// Routes besides GET and HEAD that the policy marks safe to copy.
    public let mirrorRoutes: [MirrorRoute]

    /// One release as the proxy sends to it.
    public struct Target: Sendable {
        public let release: ReleaseRef
        public let upstream: Upstream
        /// `engine@8 (v2.1.1)`, the value of `X-Grayscale-Version`.
        public let versionHeader: String
        /// `host:port`, as the access log writes it (made once per table, not per request).
        public let upstreamText: String

        init(release: ReleaseRef, upstream: Upstream, versionHeader: String) {
            self.release = release
            self.upstream = upstream
            self.versionHeader = versionHeader
            upstreamText = upstream.description
        }
    }

    public init?(state: ServiceState) {
        guard let split = state.split,
              let stableRelease = state.release(number: split.stable.number),
              let stableUpstream = Upstream(url: stableRelease.upstream)
        else { return nil }
        self.service = state.service
        self.split = split
        self.stable = Target(release: split.stable, upstream: stableUpstream,
                             versionHeader: "\(state.service)@\(split.stable.number) (\(split.stable.label))")
        if let canary = split.canary, let release = state.release(number: canary.release.number),
           let upstream = Upstream(url: release.upstream) {
            self.canary = Target(release: canary.release, upstream: upstream,
                                 versionHeader: "\(state.service)@\(canary.release.number) (\(canary.release.label))")
        } else {
            self.canary = nil
        }
        mirror = self.canary == nil ? 0 : min(max(split.canary?.mirror ?? 0, 0), Bucket.count)
        mirrorRoutes = mirror == 0 ? [] : split.canary?.mirrorRoutes ?? []
    }

    public func target(_ route: RouteTarget) -> Target {
        route == .canary ? (canary ?? stable) : stable
    }
}

/// How requests find their service: by Host, by path prefix, or — with a single
/// service and no rules — all to it.
public struct ServiceMatching: Sendable, Hashable {
    /// Host (without port) → service.
    public var hosts: [String: String]
    /// Path prefix → service, longest prefix first.
    public var prefixes: [(prefix: String, service: String)]

    public init(hosts: [String: String] = [:], prefixes: [(prefix: String, service: String)] = []) {
        self.hosts = hosts
        self.prefixes = prefixes.sorted { $0.prefix.count > $1.prefix.count }
    }

    public static func == (lhs: ServiceMatching, rhs: ServiceMatching) -> Bool {
        lhs.hosts == rhs.hosts && lhs.prefixes.elementsEqual(rhs.prefixes) { $0 == $1 }
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(hosts) }
}

/// An immutable snapshot of every service's route. A new split means a new table,
/// swapped in whole; requests in flight keep the table they started with.
public final class RoutingTable: Sendable {
    public let routes: [String: ServiceRoute]
    public let matching: ServiceMatching
    /// Services whose releases the proxy cannot reach (e.g. an https upstream), with why.
    public let unroutable: [String: String]
    /// With one service and no rules, every request's: found without a lookup.
    private let only: ServiceRoute?

    public init(states: [ServiceState], matching: ServiceMatching = ServiceMatching()) {
        var routes: [String: ServiceRoute] = [:]
        var unroutable: [String: String] = [:]
        for state in states {
            if let route = ServiceRoute(state: state) {
                routes[state.service] = route
            } else if state.split != nil {
                unroutable[state.service] = "a release of \(state.service) has no plain http://host:port upstream"
            }
        }
        self.routes = routes
        self.matching = matching
        self.unroutable = unroutable
        self.only = matching.hosts.isEmpty && matching.prefixes.isEmpty && routes.count == 1 ? routes.first!.value : nil
    }

    public static let empty = RoutingTable(states: [])

    /// The service a request is for, or nil when no rule matches.
    public func service(for head: RequestHead) -> ServiceRoute? {
        if let only { return only }
        if !matching.hosts.isEmpty, let host = head.first("host") {
            let name = host.split(separator: ":", maxSplits: 1).first.map(String.init) ?? host
            if let service = matching.hosts[name.lowercased()], let route = routes[service] { return route }
        }
        for (prefix, service) in matching.prefixes where head.targetHasPrefix(prefix) {
            if let route = routes[service] { return route }
        }
        return nil
    }
}
