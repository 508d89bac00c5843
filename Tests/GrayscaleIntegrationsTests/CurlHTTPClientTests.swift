import Foundation
import Testing
import GrayscaleCore
import GrayscaleIntegrations

@Suite("libcurl outbound HTTP", .serialized)
struct CurlHTTPClientTests {
    @Test("a GET and a POST reach a real loopback server and the response comes back whole")
    func roundTrip() async throws {
        let server = try EchoServer()
        defer { try? server.stop() }
        let client = CurlHTTPClient()

        let get = try await client.send(OutboundRequest(url: "http://127.0.0.1:\(server.port)/api/v1/query?query=up",
                                                        headers: [("X-Test", "hello")]))
        #expect(get.status == 201)
        #expect(get.header("x-echo") == "yes")
        #expect(String(decoding: get.body, as: UTF8.self) == "GET /api/v1/query?query=up\nx-test: hello\n\n")

        let payload = String(repeating: "grayscale ", count: 5000)
        let post = try await client.send(OutboundRequest(method: "POST", url: "http://127.0.0.1:\(server.port)/hook",
                                                         body: Data(payload.utf8)))
        #expect(String(decoding: post.body, as: UTF8.self) == "POST /hook\nx-test: \n\n\(payload)")
    }

    @Test("a refused connection is an error naming the URL, without its query")
    func refused() async throws {
        let server = try EchoServer()
        let port = server.port
        try server.stop()
        let error = await #expect(throws: GrayscaleError.self) {
            try await CurlHTTPClient().send(OutboundRequest(url: "http://127.0.0.1:\(port)/x?token=secret", timeout: 2))
        }
        #expect(error?.message.hasPrefix("GET http://127.0.0.1:\(port)/x: ") == true)
        #expect(error?.message.contains("secret") == false)
    }

    @Test("a request slower than its timeout fails instead of hanging")
    func timeout() async throws {
        let server = try EchoServer()
        defer { try? server.stop() }
        let error = await #expect(throws: GrayscaleError.self) {
            try await CurlHTTPClient().send(OutboundRequest(url: "http://127.0.0.1:\(server.port)/slow", timeout: 0.3))
        }
        #expect(error?.message.contains("curl error 28") == true)
    }
}
