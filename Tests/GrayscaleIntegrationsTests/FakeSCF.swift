import Foundation
import GrayscaleIntegrations
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A loopback stand-in for Tencent Cloud's SCF API: checks each request's TC3
/// signature with the same algorithm, keeps functions' versions and aliases, and
/// can be told to fail (throttling) or to read an alias back wrong.
final class FakeSCF: Sendable {
    struct Alias: Sendable {
        var functionVersion: String
        var matches: [[String: String]]
    }

    struct State: Sendable {
        var versions = 1
        var aliases: [String: Alias] = [:]
        var injectedErrors: [String] = []
        var corruptReadBack = false
        var calls: [String] = []
    }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    let state = NIOLockedValueBox(State())
    static let secretId = "AKIDfakeSecretId", secretKey = "fakeSecretKey"

    var endpoint: String { "http://127.0.0.1:\(channel.localAddress!.port!)/" }

    init() throws {
        let state = self.state
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeSCFHandler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

private final class FakeSCFHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let state: NIOLockedValueBox<FakeSCF.State>
    var head: HTTPRequestHead?
    var body = ByteBuffer()

    init(state: NIOLockedValueBox<FakeSCF.State>) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            let answer = respond(head, String(buffer: body))
            let text = String(decoding: try! JSONSerialization.data(withJSONObject: ["Response": answer], options: [.sortedKeys]), as: UTF8.self)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(text.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func respond(_ head: HTTPRequestHead, _ payload: String) -> [String: Any] {
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
