/// The JSON shape of a split for `--format json` and the admin API. Keys are stable:
/// add new ones, never rename or remove.
public struct SplitSummary: Codable, Hashable, Sendable {
    public var service: String
    public var revision: Int
    public var stable: ReleaseRef
    public var canary: CanarySummary?
    /// Percent of requests without a token that go to the canary.
    public var nonAuthWeightPercent: Double
    public var allowList: [String]
    public var denyList: [String]
    public var optInAllowed: Bool
    /// Seconds the canary's WebSockets get to close when it loses them (the policy's `webSocketDrain`); absent: each proxy's own.
    public var webSocketDrainSeconds: Int?

    public struct CanarySummary: Codable, Hashable, Sendable {
        public var number: Int
        public var label: String
        public var salt: String
        public var range: RangeSummary
        /// Percent of stable's GET and HEAD requests copied to the canary (its mirror phase); absent when none.
        public var mirrorPercent: Double?
    }

    public struct RangeSummary: Codable, Hashable, Sendable {
        /// First bucket in the range (of 10,000).
        public var fromBucket: Int
        /// First bucket after the range.
        public var toBucket: Int
        /// The range in the bot's percent-bucket notation, e.g. `[20 - 55]`.
        public var text: String
        /// Percent of users in the range.
        public var percent: Double
    }

    enum CodingKeys: String, CodingKey {
        case service, revision, stable, canary, nonAuthWeightPercent, allowList, denyList, optInAllowed, webSocketDrainSeconds
    }

    /// `canary` is written as `null` when there is none, as documented, never left out.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(service, forKey: .service)
        try container.encode(revision, forKey: .revision)
        try container.encode(stable, forKey: .stable)
        try container.encode(canary, forKey: .canary)
        try container.encode(nonAuthWeightPercent, forKey: .nonAuthWeightPercent)
        try container.encode(allowList, forKey: .allowList)
        try container.encode(denyList, forKey: .denyList)
        try container.encode(optInAllowed, forKey: .optInAllowed)
        try container.encodeIfPresent(webSocketDrainSeconds, forKey: .webSocketDrainSeconds)
    }

    public init(_ split: TrafficSplit) {
        service = split.service
        revision = split.revision
        stable = split.stable
        canary = split.canary.map {
            CanarySummary(number: $0.release.number, label: $0.release.label, salt: $0.salt,
                          range: RangeSummary(fromBucket: $0.range.lower, toBucket: $0.range.upper, text: $0.range.description,
                                              percent: Double($0.range.widthHundredths) / 100),
                          mirrorPercent: $0.mirror.map { Double($0) / 100 })
        }
        webSocketDrainSeconds = split.webSocketDrain
        nonAuthWeightPercent = Double(split.nonAuthWeight) / 100
        allowList = split.allowList
        denyList = split.denyList
        optInAllowed = split.optInAllowed
    }
}
