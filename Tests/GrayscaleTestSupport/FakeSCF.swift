import Foundation
import GrayscaleIntegrations
import NIOConcurrencyHelpers
import NIOHTTP1

/// A loopback stand-in for Tencent Cloud's SCF API: checks each request's TC3
/// signature with the same algorithm, keeps functions' versions and aliases, and
/// can be told to fail (throttling) or to read an alias back wrong.
public final class FakeSCF: Sendable {
    public struct Alias: Sendable {
        public var functionVersion: String
        public var matches: [[String: String]]
    }

    public struct State: Sendable {
        public var versions = 1
        public var aliases: [String: Alias] = [:]
        public var injectedErrors: [String] = []
        public var corruptReadBack = false
        public var calls: [String] = []
    }

    let server: FixtureHTTPServer
    public let state = NIOLockedValueBox(State())
    public static let secretId = "AKIDfakeSecretId", secretKey = "fakeSecretKey"

    public var endpoint: String { server.url + "/" }

    public init() throws {
        let state = self.state
        server = try FixtureHTTPServer { request in
            let answer = Self.respond(request.head, request.body, state: state)
            return .json(String(decoding: try! JSONSerialization.data(withJSONObject: ["Response": answer], options: [.sortedKeys]), as: UTF8.self))
        }
    }

    public func stop() { server.stop() }

    static func respond(_ head: HTTPRequestHead, _ payload: String, state: NIOLockedValueBox<State>) -> [String: Any] {
        let requestId = UUID().uuidString.lowercased()
        func error(_ code: String, _ message: String) -> [String: Any] { ["Error": ["Code": code, "Message": message], "RequestId": requestId] }
        let action = head.headers.first(name: "x-tc-action") ?? ""
        guard let timestamp = head.headers.first(name: "x-tc-timestamp").flatMap(Int.init),
              abs(Date().timeIntervalSince1970 - Double(timestamp)) < 300,
              let host = head.headers.first(name: "host")
        else { return error("AuthFailure.SignatureExpire", "missing or stale X-TC-Timestamp") }
        let signer = TencentCloudSigner(secretId: FakeSCF.secretId, secretKey: FakeSCF.secretKey, service: "scf", host: host)
        guard head.headers.first(name: "authorization") == signer.authorization(payload: payload, timestamp: timestamp) else {
            return error("AuthFailure.SignatureFailure", "the request signature does not match")
        }
        let parameters = (try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any]) ?? [:]
        return state.withLockedValue { state -> [String: Any] in
            state.calls.append(action)
            if !state.injectedErrors.isEmpty { return error(state.injectedErrors.removeFirst(), "injected") }
            let key = "\(parameters["Namespace"] ?? "default")/\(parameters["FunctionName"] ?? "")/\(parameters["Name"] ?? "")"
            switch action {
            case "UpdateAlias":
                let matches = ((parameters["RoutingConfig"] as? [String: Any])?["AddtionVersionMatchs"] as? [[String: Any]] ?? [])
                    .map { $0.compactMapValues { $0 as? String } }
                state.aliases[key] = FakeSCF.Alias(functionVersion: parameters["FunctionVersion"] as? String ?? "", matches: matches)
                return ["RequestId": requestId]
            case "GetAlias":
                guard let alias = state.aliases[key] else { return error("ResourceNotFound.Alias", "no alias \(key)") }
                return ["FunctionVersion": state.corruptReadBack ? "1" : alias.functionVersion, "Name": parameters["Name"] ?? "",
                        "RoutingConfig": ["AddtionVersionMatchs": alias.matches], "RequestId": requestId]
            case "ListVersionByFunction":
                return ["Versions": (1...state.versions).map { ["Version": String($0)] }, "RequestId": requestId]
            case "PublishVersion":
                state.versions += 1
                return ["FunctionVersion": String(state.versions), "RequestId": requestId]
            default:
                return error("InvalidAction", "unknown action \(action)")
            }
        }
    }
}
