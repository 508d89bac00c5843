import Foundation
import GrayscaleCore

/// How a traffic split maps onto a Tencent SCF function alias: `FunctionVersion` is the
/// stable release; the canary is the one additional version SCF allows, matched by a
/// `range` rule on the routing header the front proxy fills with each user's bucket.
/// The SCF API's payloads (2018-04-16) as typed values; field names are Tencent's own
/// (`AddtionVersionMatchs` is their spelling).
public enum SCFAlias {
    /// `UpdateAlias`'s parameters.
    public struct UpdateAlias: Codable, Equatable, Sendable {
        public var FunctionName: String
        public var Name: String
        public var Namespace: String
        public var FunctionVersion: String
        public var RoutingConfig: RoutingConfig
    }

    public struct RoutingConfig: Codable, Equatable, Sendable {
        public var AddtionVersionMatchs: [VersionMatch]

        public init(AddtionVersionMatchs: [VersionMatch]) { self.AddtionVersionMatchs = AddtionVersionMatchs }

        /// An alias without an additional version may answer the list as null or leave it out.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            AddtionVersionMatchs = try container.decodeIfPresent([VersionMatch].self, forKey: .AddtionVersionMatchs) ?? []
        }
    }

    public struct VersionMatch: Codable, Equatable, Sendable {
        public var Version: String
        public var Key: String
        public var Method: String
        public var Expression: String
    }

    /// `GetAlias`'s parameters.
    struct AliasName: Encodable {
        var FunctionName: String
        var Name: String
        var Namespace: String
    }

    /// What `GetAlias` answers (the fields read back).
    struct Alias: Decodable {
        var FunctionVersion: String?
        var RoutingConfig: RoutingConfig?
        var RequestId: String?
    }

    /// `ListVersionByFunction`'s and `PublishVersion`'s parameters.
    struct FunctionName: Encodable {
        var FunctionName: String
        var Namespace: String
        var Description: String?
    }

    struct Versions: Decodable {
        struct Version: Decodable { var Version: String? }
        var Versions: [Version]?
    }

    struct Published: Decodable {
        var FunctionVersion: String?
        var RequestId: String?
    }

    /// The `UpdateAlias` parameters for `split`.
    public static func updateAlias(function: String, alias: String, namespace: String, routingHeader: String,
                                   split: TrafficSplit) -> UpdateAlias {
        var matches: [VersionMatch] = []
        if let canary = split.canary, !canary.range.isEmpty {
            matches.append(VersionMatch(Version: String(canary.release.number), Key: "invoke.headers.\(routingHeader)", Method: "range",
                                        Expression: "[\(canary.range.lower),\(canary.range.upper))"))
        }
        return UpdateAlias(FunctionName: function, Name: alias, Namespace: namespace, FunctionVersion: String(split.stable.number),
                           RoutingConfig: RoutingConfig(AddtionVersionMatchs: matches))
    }

    /// The `UpdateAlias` request body for `split`, as the golden files show it.
    public static func updateAliasPayload(function: String, alias: String, namespace: String, routingHeader: String,
                                          split: TrafficSplit) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let value = updateAlias(function: function, alias: alias, namespace: namespace, routingHeader: routingHeader, split: split)
        // Strings only: encoding cannot fail.
        return String(decoding: try! encoder.encode(value), as: UTF8.self)
    }
}
