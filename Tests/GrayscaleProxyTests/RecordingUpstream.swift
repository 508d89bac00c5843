import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// An upstream that records the exact bytes each connection receives and every request
/// its own HTTP decoder parses out of them, and answers `answer for PATH`. `/slow`
/// answers after 500 ms; `/malformed` answers with Content-Length and
/// Transfer-Encoding together (bytes no client may trust); `/100`, `/204`, `/304` and
/// `/close-delimited` answer with those framings.
final class RecordingUpstream: Sendable {
    let channel: Channel
    /// Bytes received, per connection, in arrival order.
    let bytes = NIOLockedValueBox<[Int: [UInt8]]>([:])
    /// The requests the upstream parsed, as "METHOD PATH", in order.
    let requests = NIOLockedValueBox<[String]>([])
    /// The framing headers of each request the upstream parsed: its Transfer-Encoding and Content-Length lines.
    let framings = NIOLockedValueBox<[(transferEncoding: [String], contentLength: [String])]>([])
    private let connections = NIOLockedValueBox(0)

    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    init(group: EventLoopGroup) async throws {
        let bytes = self.bytes, requests = self.requests, connections = self.connections, framings = self.framings
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let id = connections.withLockedValue { $0 += 1; return $0 }
                return channel.eventLoop.makeCompletedFuture {
                    let recorder = ByteRecorder(id: id, bytes: bytes)
                    try channel.pipeline.syncOperations.addHandler(recorder)
                    // No pipelining assistance: the raw answers below bypass the encoder, which it would wait for.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
                    try channel.pipeline.syncOperations.addHandler(Answerer(recorder: recorder, requests: requests, framings: framings))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    /// Everything every connection received, connection after connection.
    var received: String {
        bytes.withLockedValue { all in all.keys.sorted().map { String(decoding: all[$0]!, as: UTF8.self) }.joined(separator: "\n--\n") }
    }

    func stop() async throws { try await channel.close() }
}

private final class ByteRecorder: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let id: Int
    let bytes: NIOLockedValueBox<[Int: [UInt8]]>
    var context: ChannelHandlerContext?

    init(id: Int, bytes: NIOLockedValueBox<[Int: [UInt8]]>) {
        self.id = id
        self.bytes = bytes
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytes.withLockedValue { $0[id, default: []].append(contentsOf: buffer.readableBytesView) }
        context.fireChannelRead(data)
    }

    /// Bytes straight to the socket, below the HTTP encoder; then the connection closes, when `close`.
    func writeRaw(_ text: String, close: Bool = false) {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text)), promise: nil)
        if close { context.close(promise: nil) }
    }
}

private final class Answerer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let recorder: ByteRecorder
    let requests: NIOLockedValueBox<[String]>
    let framings: NIOLockedValueBox<[(transferEncoding: [String], contentLength: [String])]>
    var path = ""
    var isHead = false

    init(recorder: ByteRecorder, requests: NIOLockedValueBox<[String]>,
         framings: NIOLockedValueBox<[(transferEncoding: [String], contentLength: [String])]>) {
        self.recorder = recorder
        self.requests = requests
        self.framings = framings
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri
            isHead = head.method == .HEAD
            requests.withLockedValue { $0.append("\(head.method.rawValue) \(head.uri)") }
            framings.withLockedValue { $0.append((head.headers["transfer-encoding"], head.headers["content-length"])) }
        case .body:
            break
        case .end:
            let path = self.path
            if path == "/switch" {
                // A 101 to a request that asked for no upgrade: this connection speaks no more HTTP.
                recorder.writeRaw("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n")
                return
            }
            if path == "/chunked" {
                // No length: the upstream's encoder chunks the body.
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "answer for /chunked")))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            // Framings a proxy that passes answers through must get right, written as bytes.
            switch path {
            case "/100":  // an informational answer before the real one
                recorder.writeRaw("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nanswer for /100")
                return
            case "/204":
                recorder.writeRaw("HTTP/1.1 204 No Content\r\nX-Answer: /204\r\n\r\n")
                return
            case "/304":  // a length that describes a body never sent
                recorder.writeRaw("HTTP/1.1 304 Not Modified\r\nETag: \"v8\"\r\nContent-Length: 99\r\n\r\n")
                return
            case "/double":  // a second answer no request asked for, right behind the first
                recorder.writeRaw("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nfirst of double"
                                  + "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nsecond of double")
                return
            case "/trailers":  // chunks, then trailers: one a client may see, one only the proxy may say
                recorder.writeRaw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nanswer for /trailers\r\n0\r\n"
                                  + "Server-Timing: db;dur=5\r\nContent-Length: 99\r\n\r\n")
                return
            case "/trailer-named":  // a trailer the answer's Connection header names: it stops at the proxy
                recorder.writeRaw("HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                                  + "X-Internal: secret\r\nX-Public: yes\r\n\r\n")
                return
            case "/trailer-bad":  // a trailer line the header grammar refuses, after a complete body
                recorder.writeRaw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Bad : 1\r\n\r\n")
                return
            case "/close-delimited":  // no length, no chunks: the body ends when the connection does
                recorder.writeRaw("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nanswer for /close-delimited", close: true)
                return
            default:
                break
            }
            if path == "/malformed" {
                recorder.writeRaw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                return
            }
            if path == "/slow" {
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .milliseconds(500)) { bound.value.0.answer(path, context: bound.value.1) }
            } else {
                answer(path, context: context)
            }
        }
    }

    func answer(_ path: String, context: ChannelHandlerContext) {
        let body = "answer for \(path)"
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        if !isHead { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
