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
        let wanted = SCFAlias.updateAlias(function: function, alias: alias, namespace: namespace, routingHeader: routingHeader, split: split)
        let update: TencentCloudClient.Acknowledgement = try await client.call("UpdateAlias", wanted)
        let read: SCFAlias.Alias = try await client.call("GetAlias", SCFAlias.AliasName(FunctionName: function, Name: alias, Namespace: namespace))
        let gotMatches = read.RoutingConfig?.AddtionVersionMatchs ?? []
        guard read.FunctionVersion == wanted.FunctionVersion, gotMatches == wanted.RoutingConfig.AddtionVersionMatchs else {
            throw TencentCloudError(code: "ReadBackMismatch",
                                    message: "alias \(alias) of \(function) reads back FunctionVersion \(read.FunctionVersion ?? "?") with \(gotMatches), expected \(split.stable.number) with \(wanted.RoutingConfig.AddtionVersionMatchs)",
                                    requestId: read.RequestId ?? update.RequestId)
        }
    }

    /// `ListVersionByFunction`: the function's published version numbers.
    public func versions() async throws(TencentCloudError) -> [Int] {
        let response: SCFAlias.Versions = try await client.call("ListVersionByFunction", SCFAlias.FunctionName(FunctionName: function, Namespace: namespace))
        return (response.Versions ?? []).compactMap { $0.Version.flatMap(Int.init) }
    }

    /// `PublishVersion`: the new function version's number, to record as a release.
    public func publishVersion(description: String) async throws(TencentCloudError) -> Int {
        let response: SCFAlias.Published = try await client.call(
            "PublishVersion", SCFAlias.FunctionName(FunctionName: function, Namespace: namespace, Description: description))
        guard let text = response.FunctionVersion, let number = Int(text) else {
            throw TencentCloudError(code: "InvalidResponse", message: "PublishVersion answered no FunctionVersion", requestId: response.RequestId)
        }
        return number
    }
}
