import Foundation
import GrayscaleCore

/// How a traffic split maps onto a Tencent SCF function alias: `FunctionVersion` is the
/// stable release; the canary is the one additional version SCF allows, matched by a
/// `range` rule on the routing header the front proxy fills with each user's bucket.
public enum SCFAlias {
    /// The `UpdateAlias` request body (API 2018-04-16) for `split`.
    public static func updateAliasPayload(function: String, alias: String, namespace: String, routingHeader: String,
                                          split: TrafficSplit) -> String {
        var matches: [[String: String]] = []
        if let canary = split.canary, !canary.range.isEmpty {
            matches.append(["Version": String(canary.release.number), "Key": "invoke.headers.\(routingHeader)", "Method": "range",
                            "Expression": "[\(canary.range.lower),\(canary.range.upper))"])
        }
        let body: [String: Any] = [
            "FunctionName": function, "Name": alias, "Namespace": namespace, "FunctionVersion": String(split.stable.number),
            "RoutingConfig": ["AddtionVersionMatchs": matches],  // Tencent's own spelling
        ]
        let data = try! JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
