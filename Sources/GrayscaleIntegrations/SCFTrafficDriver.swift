import Foundation
import GrayscaleCore

/// Applies splits to a Tencent SCF function alias and reads them back: a split is
/// applied only when `GetAlias` shows it.
public struct SCFTrafficDriver: Sendable {
    public let client: TencentCloudClient
    public let function: String
    public let alias: String
    public let namespace: String
    /// The header the front proxy writes each request's bucket into.
    public let routingHeader: String

    public init(client: TencentCloudClient, function: String, alias: String, namespace: String = "default",
                routingHeader: String = "X-Grayscale-Bucket") {
        self.client = client
        self.function = function
        self.alias = alias
        self.namespace = namespace
        self.routingHeader = routingHeader
    }

    /// `UpdateAlias`, then `GetAlias`; throws unless the alias now routes exactly as `split` says.
    public func apply(_ split: TrafficSplit) async throws(TencentCloudError) {
        let payload = SCFAlias.updateAliasPayload(function: function, alias: alias, namespace: namespace, routingHeader: routingHeader, split: split)
        let parameters = (try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any]) ?? [:]
        let update = try await client.call("UpdateAlias", parameters)
        let read = try await client.call("GetAlias", ["FunctionName": function, "Name": alias, "Namespace": namespace])
        let expected = parameters["RoutingConfig"] as? [String: Any]
        let wantMatches = expected?["AddtionVersionMatchs"] as? [[String: String]] ?? []
        let gotMatches = ((read["RoutingConfig"] as? [String: Any])?["AddtionVersionMatchs"] as? [[String: Any]] ?? [])
            .map { $0.compactMapValues { $0 as? String } }
        guard read["FunctionVersion"] as? String == String(split.stable.number), gotMatches == wantMatches else {
            throw TencentCloudError(code: "ReadBackMismatch",
                                    message: "alias \(alias) of \(function) reads back FunctionVersion \(read["FunctionVersion"] ?? "?") with \(gotMatches), expected \(split.stable.number) with \(wantMatches)",
                                    requestId: read["RequestId"] as? String ?? update["RequestId"] as? String)
        }
    }

    /// `ListVersionByFunction`: the function's published version numbers.
    public func versions() async throws(TencentCloudError) -> [Int] {
        let response = try await client.call("ListVersionByFunction", ["FunctionName": function, "Namespace": namespace])
        return (response["Versions"] as? [[String: Any]] ?? []).compactMap { ($0["Version"] as? String).flatMap(Int.init) }
    }

    /// `PublishVersion`: the new function version's number, to record as a release.
    public func publishVersion(description: String) async throws(TencentCloudError) -> Int {
        let response = try await client.call("PublishVersion", ["FunctionName": function, "Namespace": namespace, "Description": description])
        guard let text = response["FunctionVersion"] as? String, let number = Int(text) else {
            throw TencentCloudError(code: "InvalidResponse", message: "PublishVersion answered no FunctionVersion", requestId: response["RequestId"] as? String)
        }
        return number
    }
}
