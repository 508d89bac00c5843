import NIOCore

/// Passes raw bytes between two channels once an upgrade (WebSocket) has turned an
/// HTTP exchange into a tunnel; each side's reads follow the other side's writability.
///
/// The client's side follows the WebSocket frames it relays to the client, so that it can
/// end the tunnel between two frames: `drain` sends the client a close frame with code
/// 1012 (service restart: connect again) at the next frame boundary, closes the upstream,
/// and closes the client's connection when the client answers the close, or after `grace`.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Frames relayed to this side's channel (the client's side only).
    private var frames: WebSocketFrames?
    private var drain = Drain.none
    private var graceTimer: Scheduled<Void>?
    /// Called (client's side) when the upstream ends the tunnel without a close frame while
    /// the client is still there: an abnormal close (1006).
    var onAbnormalUpstreamClose: (() -> Void)?

    enum Drain {
        case none
        /// A close waits for the frame being relayed to end.
        case atNextBoundary(grace: TimeAmount)
        /// The close frame went out: nothing more is relayed.
        case closeSent
    }

    /// The pair for a tunnel; the first is the client's side.
    static func matchedPair() -> (client: GlueHandler, upstream: GlueHandler) {
        let first = GlueHandler(), second = GlueHandler()
        first.partner = second
        second.partner = first
        first.frames = WebSocketFrames()
        return (first, second)
    }

    /// WebSocket close code 1012, "service restart", sent by a server (unmasked).
    static let closeServiceRestart: [UInt8] = [0x88, 0x02, 0x03, 0xF4]

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
        graceTimer?.cancel()
        graceTimer = nil
    }

    /// Bytes of the upstream's written to the client outside the glue (those that came with
    /// its 101): the frame tracker must see them, or it would start inside a frame.
    func relayedDirectly(_ bytes: ByteBuffer) {
        frames?.advance(over: bytes.readableBytesView)
    }

    /// Ends the tunnel as a server restarting would (the client's side; on its event loop).
    func startDrain(grace: TimeAmount) {
        guard case .none = drain, let context else { return }
        drain = .atNextBoundary(grace: grace)
        graceTimer = context.eventLoop.assumeIsolated().scheduleTask(in: grace) { [weak self] in self?.context?.close(promise: nil) }
        if frames?.atBoundary ?? true { sendClose() }
    }

    private func sendClose() {
        guard let context else { return }
        drain = .closeSent
        // Once the close frame is on the wire, the proxy's side is shut (FIN) and the client's
        // bytes are read and dropped until it closes too (or the grace ends): closing at once
        // could throw away a queued close frame, or reset the connection before the client read it.
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: Self.closeServiceRestart)))
            .assumeIsolated().whenComplete { [weak self] _ in self?.context?.close(mode: .output, promise: nil) }
        let upstream = partner
        partner = nil
        upstream?.partner = nil
        upstream?.context?.close(promise: nil)
    }

    private func partnerWrite(_ data: NIOAny) {
        guard context != nil else { return }
        switch drain {
        case .closeSent:
            return
        case .none:
            if frames != nil { frames?.advance(over: unwrapOutboundIn(data).readableBytesView) }
            context?.write(data, promise: nil)
        case .atNextBoundary:
            var buffer = unwrapOutboundIn(data)
            let upTo: Int? = frames == nil ? 0 : frames!.boundary(in: buffer.readableBytesView)
            if let upTo {
                if upTo > 0, let head = buffer.readSlice(length: upTo) { context?.write(wrapOutboundOut(head), promise: nil) }
                sendClose()
            } else {
                frames?.advance(over: buffer.readableBytesView)
                context?.write(wrapOutboundOut(buffer), promise: nil)
            }
        }
    }
    private func partnerFlush() { context?.flush() }
    private func partnerCloseFull() {
        if case .closeSent = drain { return }  // the client gets its close frame's answer or its grace
        // The upstream went first (the client's side is still open), with no close frame of its own.
        if let frames, !frames.sawClose, case .none = drain, context?.channel.isActive == true {
            onAbnormalUpstreamClose?()
            onAbnormalUpstreamClose = nil
        }
        context?.close(promise: nil)
    }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .closeSent = drain { return }  // the client's answer to the close, or what it sent before reading it
        partner?.partnerWrite(data)
    }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.partnerFlush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.partnerCloseFull() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    func read(context: ChannelHandlerContext) {
        if case .closeSent = drain { return context.read() }
        if let partner, partner.partnerWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

/// Where WebSocket frames begin and end in a stream of bytes (RFC 6455 §5.2): the
/// header's length fields are read, the payload is skipped. Nothing is buffered.
struct WebSocketFrames {
    /// Bytes of the current header seen so far (at most 14).
    private var header: [UInt8] = []
    /// Payload bytes of the current frame still to come.
    private var payloadLeft: UInt64 = 0
    /// A close frame (opcode 8) has begun.
    private(set) var sawClose = false

    var atBoundary: Bool { header.isEmpty && payloadLeft == 0 }

    /// The header's length, once enough of it is known.
    private static func headerLength(_ header: [UInt8]) -> Int? {
        guard header.count >= 2 else { return nil }
        let masked = header[1] & 0x80 != 0
        let extra = switch header[1] & 0x7F { case 126: 2; case 127: 8; default: 0 }
        return 2 + extra + (masked ? 4 : 0)
    }

    private static func payloadLength(_ header: [UInt8]) -> UInt64 {
        switch header[1] & 0x7F {
        case 126: return UInt64(header[2]) << 8 | UInt64(header[3])
        case 127: return header[2..<10].reduce(0) { $0 << 8 | UInt64($1) }
        case let length: return UInt64(length)
        }
    }

    /// Follows `bytes` to their end.
    mutating func advance(over bytes: some Collection<UInt8>) {
        _ = scan(bytes, stopAtBoundary: false)
    }

    /// The offset in `bytes` of the first frame boundary (0 when one is here already), having
    /// followed the bytes before it; nil, having followed them all, when none is in them.
    mutating func boundary(in bytes: some Collection<UInt8>) -> Int? {
        if atBoundary { return 0 }
        return scan(bytes, stopAtBoundary: true)
    }

    private mutating func scan(_ bytes: some Collection<UInt8>, stopAtBoundary: Bool) -> Int? {
        var offset = 0
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if payloadLeft > 0 {
                let take = Int(min(payloadLeft, UInt64(bytes.distance(from: index, to: bytes.endIndex))))
                payloadLeft -= UInt64(take)
                index = bytes.index(index, offsetBy: take)
                offset += take
            } else {
                header.append(bytes[index])
                index = bytes.index(after: index)
                offset += 1
                if let length = Self.headerLength(header), header.count == length {
                    payloadLeft = Self.payloadLength(header)
                    if header[0] & 0x0F == 0x8 { sawClose = true }
                    header.removeAll(keepingCapacity: true)
                }
            }
            if stopAtBoundary, atBoundary { return offset }
        }
        return nil
    }
}
