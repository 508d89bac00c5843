import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A stand-in release for demos and tests: answers `{"release": LABEL}`, and with
/// `failDotted` answers 500 to deploys of names like "xx.xx" (the design document's bug).
public final class DemoUpstream: Sendable {
    private let channel: Channel
    public var port: Int { channel.localAddress!.port! }

    public init(host: String, port: Int, label: String, failDotted: Bool, group: EventLoopGroup) async throws {
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DemoUpstreamHandler(label: label, failDotted: failDotted))
                }
            }
            .bind(host: host, port: port).get()
    }

    public func stop() async throws { try await channel.close() }
}

private final class DemoUpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let label: String
    let failDotted: Bool
    var head: HTTPRequestHead?

    init(label: String, failDotted: Bool) {
        self.label = label
        self.failDotted = failDotted
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            let name = head.uri.split(separator: "name=").dropFirst().first.map { $0.prefix { $0 != "&" } } ?? ""
            let broken = failDotted && name.contains(".")
            let body = broken ? #"{"error":"invalid name \#(name): names may not contain dots"}"# : #"{"release":"\#(label)","deployed":"\#(name)"}"#
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: broken ? .internalServerError : .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// Synthetic users for demos: each has an appId and a project name (7.5% with a dot),
/// and deploys through the proxy over keep-alive connections with a bearer JWT;
/// some requests carry no token.
public struct DemoTraffic: Sendable {
    public var host: String
    public var port: Int
    public var users: Int
    public var requestsPerSecond: Double
    public var connections: Int

    public init(host: String, port: Int, users: Int, requestsPerSecond: Double, connections: Int = 8) {
        self.host = host
        self.port = port
        self.users = users
        self.requestsPerSecond = requestsPerSecond
        self.connections = connections
    }

    /// An unsigned JWT carrying `appId`.
    public static func token(_ appId: String) -> String {
        func encode(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        return encode(#"{"alg":"none"}"#) + "." + encode(#"{"appId":"\#(appId)"}"#) + ".demo"
    }

    /// Sends requests until the task is cancelled; returns (requests, failures).
    public func run(group: EventLoopGroup) async throws -> (requests: Int, failures: Int) {
        try await withThrowingTaskGroup(of: (Int, Int).self) { tasks in
            for worker in 0..<connections {
                tasks.addTask { try await self.worker(worker, group: group) }
            }
            var total = (0, 0)
            for try await (requests, failures) in tasks { total = (total.0 + requests, total.1 + failures) }
            return total
        }
    }

    private func worker(_ index: Int, group: EventLoopGroup) async throws -> (Int, Int) {
        var random = SystemRandomNumberGenerator()
        var requests = 0, failures = 0
        let pause = Duration.seconds(Double(connections) / max(requestsPerSecond, 0.1))
        while !Task.isCancelled {
            do {
                let channel = try await ClientBootstrap(group: group).connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
                try await channel.executeThenClose { inbound, outbound in
                    var responses = inbound.makeAsyncIterator()
                    while !Task.isCancelled {
                        let user = Int.random(in: 0..<users, using: &random)
                        let name = user % 40 < 3 ? "acme.prod-\(user)" : "app-\(user)"
                        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/deploy?name=\(name)")
                        head.headers.add(name: "host", value: "engine")
                        head.headers.add(name: "content-length", value: "0")
                        if Int.random(in: 0..<10, using: &random) > 0 {
                            head.headers.add(name: "authorization", value: "Bearer " + Self.token("1253\(100_000 + user)"))
                        }
                        try await outbound.write(.head(head))
                        try await outbound.write(.end(nil))
                        while let part = try await responses.next() {
                            if case .head(let response) = part, response.status.code >= 500 { failures += 1 }
                            if case .end = part { break }
                        }
                        requests += 1
                        try await Task.sleep(for: pause)
                    }
                }
            } catch is CancellationError {
                break
            } catch {
                failures += 1
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        return (requests, failures)
    }
}
