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
/// It matches a request of that method whose path (before `?`) is the prefix or goes on
/// below it (`/v1/query`, `/v1/query/x`; not `/v1/query-admin`), and never a target that
/// an upstream could read as another path (dot segments, `//`, `\`, encoded `.`, `/` or `\`).
/// Decoded (from the split a store or a controller sends) with the same checks as parsed.
public struct MirrorRoute: Codable, Hashable, Sendable, CustomStringConvertible {
    public let method: String
    public let pathPrefix: String

    /// A route, if `method` is an upper-case token other than GET and HEAD (always mirrored)
    /// and `pathPrefix` a plain path.
    public init?(method: String, pathPrefix: String) {
        guard !method.isEmpty, method.count <= 16, method.utf8.allSatisfy({ $0 >= 65 && $0 <= 90 }), method != "GET", method != "HEAD",
              pathPrefix.hasPrefix("/"), pathPrefix.utf8.count <= 1024, !pathPrefix.contains("?"),
              !pathPrefix.utf8.contains(where: { $0 < 33 || $0 >= 127 }), !Self.ambiguous(Substring(pathPrefix)) else { return nil }
        self.method = method
        self.pathPrefix = pathPrefix
    }

    /// `METHOD /prefix`.
    public init?(parsing text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        self.init(method: String(parts[0]), pathPrefix: String(parts[1]))
    }

    enum CodingKeys: String, CodingKey { case method, pathPrefix }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let method = try container.decode(String.self, forKey: .method), prefix = try container.decode(String.self, forKey: .pathPrefix)
        guard let route = MirrorRoute(method: method, pathPrefix: prefix) else {
            throw DecodingError.dataCorruptedError(forKey: .pathPrefix, in: container,
                                                   debugDescription: "not a route to mirror: '\(method) \(prefix)'")
        }
        self = route
    }

    public var description: String { "\(method) \(pathPrefix)" }

    /// Whether a request with this method and target (origin-form) is on this route.
    public func matches(method: String, target: String) -> Bool {
        guard self.method == method else { return false }
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path.hasPrefix(pathPrefix), !Self.ambiguous(path) else { return false }
        if pathPrefix.hasSuffix("/") || path.utf8.count == pathPrefix.utf8.count { return true }
        return path.utf8.dropFirst(pathPrefix.utf8.count).first == UInt8(ascii: "/")
    }

    /// A path an upstream might normalise into another one.
    static func ambiguous(_ path: Substring) -> Bool {
        if path.contains("//") || path.contains("\\") { return true }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == "." || $0 == ".." }) { return true }
        let lower = path.lowercased()
        return lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c")
    }
}
