import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client for byte-exact protocol tests (malformed requests, WebSocket frames).
final class RawSocket {
    private let fd: Int32
    private(set) var received: [UInt8] = []

    /// `receiveBuffer`: the socket's receive buffer in bytes (a small one makes a client that
    /// does not read fill up at once).
    init(port: Int, timeout: Double = 5, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawSocketError.failed("socket") }
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw RawSocketError.failed("connect")
        }
    }

    deinit { close(fd) }

    /// Ends the connection both ways now (the peer reads end of file).
    func shutdown() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw RawSocketError.failed("send") }
            offset += sent
        }
    }

    /// Sends zeros in 64 KiB pieces until `total` bytes went out, the peer stops reading
    /// (a send blocks for `patience` seconds) or closes; returns how many went out.
    func sendUntilBlocked(total: Int, patience: Int = 1) -> Int {
        var tv = timeval(tv_sec: patience, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let chunk = [UInt8](repeating: 0, count: 65536)
        var sent = 0
        while sent < total {
            let count = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { break }
            sent += count
        }
        return sent
    }

    /// Sends `pattern` over and over for `seconds` without ever blocking (what does not fit
    /// now is skipped, the stream stays whole); returns the bytes sent.
    func sendFor(seconds: Double, repeating pattern: [UInt8]) -> Int {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        let chunk = (0..<max(1, 65536 / pattern.count)).flatMap { _ in pattern }
        var sent = 0, offset = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let count = chunk[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 {
                sent += count
                offset = (offset + count) % chunk.count
            } else {
                usleep(1000)
            }
        }
        return sent
    }

    /// Reads until `done` says the bytes so far are enough, the peer closes, or the timeout passes.
    @discardableResult
    func receive(until done: ([UInt8]) -> Bool = { _ in false }) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done(received) {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            received.append(contentsOf: buffer[0..<count])
        }
        return received
    }

    var text: String { String(decoding: received, as: UTF8.self) }

    /// True when the peer has closed the connection (a read returns end of file).
    func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    /// The bytes up to and including the end of an HTTP head have arrived.
    static func headComplete(_ bytes: [UInt8]) -> Bool {
        String(decoding: bytes, as: UTF8.self).contains("\r\n\r\n")
    }
}

enum RawSocketError: Error { case failed(String) }
