// The ceiling SwiftNIO sets for a proxy on this machine: each client connection is glued
// to its own upstream connection and bytes pass both ways unread (no parsing, no routing,
// no statistics, no log). Benchmarks/proxy.sh measures it beside Grayscale, nginx and
// HAProxy, so the gap between Grayscale and this relay is Grayscale's own work and the gap
// between this relay and nginx is the channel machinery's.
//
//   grayscale-relay LISTEN_PORT UPSTREAM_PORT [threads=1]
import NIOCore
import NIOPosix

final class Relay: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: Relay?
    var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil; partner = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }
    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    // Small answers only: no backpressure between the two sides (the benchmark's answers are 41 bytes).
}

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
guard arguments.count >= 2 else { fatalError("usage: grayscale-relay LISTEN_PORT UPSTREAM_PORT [threads]") }
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.count > 2 ? arguments[2] : 1)
let upstreamPort = arguments[1]
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { client in
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: upstreamPort)
            .flatMapThrowing { upstream in
                let (one, two) = (Relay(), Relay())
                one.partner = two
                two.partner = one
                try client.pipeline.syncOperations.addHandler(one)
                try upstream.pipeline.syncOperations.addHandler(two)
            }
    }
    .bind(host: "127.0.0.1", port: arguments[0]).wait()
try server.closeFuture.wait()
