import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A local stand-in for Slack's Web API: records every request it receives and
/// answers from a script (e.g. 500, then 429 with Retry-After, then 200).
public final class FakeSlack: Sendable {
    public struct Received: Sendable {
        public var path: String
        public var authorization: String?
        public var json: [String: String]
    }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    public let received = NIOLockedValueBox<[Received]>([])
    /// Statuses to answer with, in order; once used up, 200.
    public let script = NIOLockedValueBox<[(status: Int, retryAfter: Int?)]>([])
    /// Channels whose messages Slack refuses with 200 {"ok": false, "error": "channel_not_found"}.
    public let missingChannels = NIOLockedValueBox<Set<String>>([])

    public var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    public init() throws {
        let received = self.received, script = self.script, missing = self.missingChannels
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeSlackHandler(received: received, script: script, missingChannels: missing))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    /// The texts Slack accepted (answered 200), in arrival order.
    public var delivered: [Received] { received.withLockedValue { $0.filter { $0.json["_status"] == "200" } } }

    public func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

private final class FakeSlackHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let received: NIOLockedValueBox<[FakeSlack.Received]>
    let script: NIOLockedValueBox<[(status: Int, retryAfter: Int?)]>
    let missingChannels: NIOLockedValueBox<Set<String>>
    var head: HTTPRequestHead?
    var body = ByteBuffer()

    init(received: NIOLockedValueBox<[FakeSlack.Received]>, script: NIOLockedValueBox<[(status: Int, retryAfter: Int?)]>,
         missingChannels: NIOLockedValueBox<Set<String>>) {
        self.received = received
        self.script = script
        self.missingChannels = missingChannels
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            let next = script.withLockedValue { $0.isEmpty ? (status: 200, retryAfter: nil) : $0.removeFirst() }
            var json = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any])?
                .compactMapValues { $0 as? String } ?? [:]
            let missing = json["channel"].map { channel in missingChannels.withLockedValue { $0.contains(channel) } } ?? false
            // A revoked token: every message is refused with invalid_auth.
            let revoked = head.headers.first(name: "authorization") == "Bearer xoxb-revoked"
            json["_status"] = revoked ? "invalid_auth" : missing ? "channel_not_found" : String(next.status)
            received.withLockedValue { $0.append(.init(path: head.uri, authorization: head.headers.first(name: "authorization"), json: json)) }
            let answer = revoked ? #"{"ok":false,"error":"invalid_auth"}"# : missing ? #"{"ok":false,"error":"channel_not_found"}"#
                : next.status == 200 ? #"{"ok":true}"# : #"{"ok":false,"error":"fake"}"#
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(answer.utf8.count))
            if let retryAfter = next.retryAfter { headers.add(name: "retry-after", value: String(retryAfter)) }
            let status = HTTPResponseStatus(statusCode: next.status)
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
