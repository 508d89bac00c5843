/// How a service's traffic is divided between its stable release and its canary.
public struct TrafficSplit: Codable, Hashable, Sendable {
    public var service: String
    /// Increases by one with every change; the history is ordered by it.
    public var revision: Int
    public var stable: ReleaseRef
    public var canary: Canary?
    /// Hundredths of a percent (0–10,000) of requests without a token sent to the canary.
    public var nonAuthWeight: Int
    /// appIds that always get the canary (internal testers).
    public var allowList: [String]
    /// appIds that never get the canary.
    public var denyList: [String]
    /// Whether a client may choose its channel (`X-Grayscale-Channel`).
    public var optInAllowed: Bool
    /// Seconds the canary's WebSockets get to close (code 1012) when it loses them; nil:
    /// the proxy's own setting. Set from the policy by the controller, so that every
    /// proxy (none reads policies) drains the same way.
    public var webSocketDrain: Int?

    /// The canary release, the salt its cohort is drawn with, and the buckets it gets.
    public struct Canary: Codable, Hashable, Sendable {
        public var release: ReleaseRef
        public var salt: String
        public var range: CanaryRange
        /// Hundredths of a percent of stable's safe requests (GET, HEAD) the proxy copies to
        /// the canary, whose answers it compares with stable's and discards; nil: none.
        public var mirror: Int?
        /// Routes besides GET and HEAD the policy marks safe to copy; nil: none.
        public var mirrorRoutes: [MirrorRoute]?

        public init(release: ReleaseRef, salt: String, range: CanaryRange, mirror: Int? = nil, mirrorRoutes: [MirrorRoute]? = nil) {
            self.release = release
            self.salt = salt
            self.range = range
            self.mirror = mirror
            self.mirrorRoutes = mirrorRoutes
        }
    }

    public init(
        service: String, revision: Int, stable: ReleaseRef, canary: Canary? = nil,
        nonAuthWeight: Int = 0, allowList: [String] = [], denyList: [String] = [], optInAllowed: Bool = false
    ) {
        self.service = service
        self.revision = revision
        self.stable = stable
        self.canary = canary
        self.nonAuthWeight = nonAuthWeight
        self.allowList = allowList
        self.denyList = denyList
        self.optInAllowed = optInAllowed
    }

    /// The canary's range, or the empty range when there is no canary.
    public var range: CanaryRange { canary?.range ?? .empty }
}

/// A route a policy marks safe to mirror: a method and a path prefix, written `POST /v1/query`.
public struct MirrorRoute: Codable, Hashable, Sendable, CustomStringConvertible {
    public var method: String
    public var pathPrefix: String

    public init(method: String, pathPrefix: String) {
        self.method = method
        self.pathPrefix = pathPrefix
    }

    /// `METHOD /prefix`: an upper-case method token and a path that starts with `/`.
    public init?(parsing text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, let method = parts.first, let path = parts.last, !method.isEmpty, method.count <= 16,
              method.utf8.allSatisfy({ $0 >= 65 && $0 <= 90 }), path.hasPrefix("/"), path.count <= 1024,
              !path.utf8.contains(where: { $0 < 33 || $0 == 127 }) else { return nil }
        self.method = String(method)
        pathPrefix = String(path)
    }

    public var description: String { "\(method) \(pathPrefix)" }

    public func matches(method: String, path: String) -> Bool { self.method == method && path.hasPrefix(pathPrefix) }
}
