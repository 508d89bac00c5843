import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers `GET /stats` like a proxy whose releases (7 and 8 unless told) are healthy:
/// one-second windows of the last minute, 100 requests each, no errors. Any other path
/// answers 200 after 400 ms (a release's health check). While `failing` is set it answers 503 (a
/// metrics source down).
final class StatsFixtureServer: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    let releases: NIOLockedValueBox<[Int]>
    let failing: NIOLockedValueBox<Bool>

    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    init() throws {
        let releases = NIOLockedValueBox<[Int]>([7, 8]), failing = NIOLockedValueBox(false)
        self.releases = releases
        self.failing = failing
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(StatsHandler(releases: releases, failing: failing))
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
    let releases: NIOLockedValueBox<[Int]>
    let failing: NIOLockedValueBox<Bool>
    var path = ""

    init(releases: NIOLockedValueBox<[Int]>, failing: NIOLockedValueBox<Bool>) {
        self.releases = releases
        self.failing = failing
    }

    func answer(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): path = String(head.uri.split(separator: "?").first ?? "")
        case .body: return
        case .end: break
        }
        guard case .end = unwrapInboundIn(data) else { return }
        guard path.hasPrefix("/stats") else {
            // A health check takes a moment, as a cold function would.
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(400)) { loopBound.value.0.answer(loopBound.value.1, .ok, "{}") }
            return
        }
        guard !failing.withLockedValue({ $0 }) else { return answer(context, .serviceUnavailable, #"{"error":"down"}"#) }
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
        let versions = releases.withLockedValue { $0 }.map(version).joined(separator: ",")
        answer(context, .ok, #"{"windowSeconds":1,"versions":[\#(versions)]}"#)
    }
}
