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

    /// The bucket the front proxy writes into the routing header for a request: the
    /// user's own, or for an anonymous request one drawn inside the canary range with the
    /// non-auth weight and outside it otherwise (SCF cannot mix weights and rules).
    public static func routingBucket(split: TrafficSplit, appId: String?, draw: Double, position: Double) -> Int {
        guard let canary = split.canary, !canary.range.isEmpty else { return Int(position * Double(Bucket.count)) % Bucket.count }
        if let appId { return Bucket.of(appId: appId, salt: canary.salt).value }
        let inside = draw * Double(Bucket.count) < Double(split.nonAuthWeight)
        let range = canary.range
        if inside { return range.lower + Int(position * Double(range.widthHundredths)) % max(1, range.widthHundredths) }
        let outside = Bucket.count - range.widthHundredths
        guard outside > 0 else { return range.lower }
        let index = Int(position * Double(outside)) % outside
        return index < range.lower ? index : range.upper + (index - range.lower)
    }
}
