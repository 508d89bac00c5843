import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers `GET /stats` like a proxy whose releases 7 (stable) and 8 (canary) are
/// healthy: one-second windows of the last minute, 100 requests each, no errors.
final class StatsFixtureServer: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel

    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    init() throws {
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(StatsHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

private final class StatsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let now = Int(Date().timeIntervalSince1970)
        let formatter = ISO8601DateFormatter()
        func windows() -> String {
            (now - 60..<now).map { start in
                #"{"start":"\#(formatter.string(from: Date(timeIntervalSince1970: TimeInterval(start))))","requests":100,"errors":0,"errorsByClass":{},"affectedUsers":0,"affectedUserIds":[],"anonymousErrors":0,"latencyMs":{"p50":20,"p90":30,"p99":40,"max":50}}"#
            }.joined(separator: ",")
        }
        func version(_ release: Int) -> String {
            #"{"service":"engine","release":\#(release),"label":"v\#(release)","totals":{"start":"\#(formatter.string(from: Date()))","requests":0,"errors":0,"errorsByClass":{},"affectedUsers":0,"affectedUserIds":[],"anonymousErrors":0,"latencyMs":{"p50":0,"p90":0,"p99":0,"max":0}},"windows":[\#(windows())]}"#
        }
        let body = #"{"windowSeconds":1,"versions":[\#(version(7)),\#(version(8))]}"#
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
