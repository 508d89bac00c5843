import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

struct TestResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: String

    var version: String? { headers.first(name: "x-grayscale-version") }
}

/// One keep-alive HTTP/1.1 connection to the proxy, requests sent one after another.
struct TestHTTPClient {
    var iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    let writer: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

    static func withConnection<T: Sendable>(port: Int, group: EventLoopGroup,
                                            _ body: (inout TestHTTPClient) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: group)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var client = TestHTTPClient(iterator: inbound.makeAsyncIterator(), writer: outbound)
            return try await body(&client)
        }
    }

    mutating func send(_ path: String, headers: [(String, String)] = []) async throws -> TestResponse {
        try await send(.GET, path, headers: headers)
    }

    mutating func send(_ method: HTTPMethod, _ path: String, headers: [(String, String)] = [],
                       body: String? = nil) async throws -> TestResponse {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: "127.0.0.1")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.add(name: "content-length", value: String(body.utf8.count)) }
        // The request's parts in one write: a proxy that answers (and closes) as soon as it has the head
        // must not make the client's later write of `.end` fail with "I/O on closed channel".
        var parts: [HTTPClientRequestPart] = [.head(head)]
        if let body { parts.append(.body(.byteBuffer(ByteBuffer(string: body)))) }
        parts.append(.end(nil))
        try await writer.write(contentsOf: parts)
        var response: HTTPResponseHead?
        var text = ""
        while let part = try await iterator.next() {
            switch part {
            case .head(let head): response = head
            case .body(let buffer): text += String(buffer: buffer)
            case .end:
                guard let response else { throw TestClientError.noHead }
                return TestResponse(status: Int(response.status.code), headers: response.headers, body: text)
            }
        }
        throw TestClientError.closed(partial: response.map { Int($0.status.code) })
    }
}

enum TestClientError: Error { case noHead, closed(partial: Int?) }

/// A JWT whose payload carries `claims` (unsigned unless a key is given).
func makeJWT(_ claims: [String: Any], hs256Secret: [UInt8]? = nil, signature: String = "unsigned") -> String {
    func encode(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
    let header = encode(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
    let payload = encode(try! JSONSerialization.data(withJSONObject: claims, options: [.sortedKeys]))
    guard let hs256Secret else { return "\(header).\(payload).\(signature)" }
    return "\(header).\(payload).\(encode(hmacSHA256(key: hs256Secret, message: Array("\(header).\(payload)".utf8))))"
}
