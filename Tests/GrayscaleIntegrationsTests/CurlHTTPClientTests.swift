import Foundation
import GrayscaleTestSupport
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

    @Test("consecutive calls to one destination use one connection; another destination gets its own")
    func connectionReuse() async throws {
        let server = try EchoServer(), other = try EchoServer()
        defer { try? server.stop(); try? other.stop() }
        let client = CurlHTTPClient(pool: CurlHandlePool())
        for path in ["/a", "/b?x=1", "/c"] {
            let response = try await client.send(OutboundRequest(url: "http://127.0.0.1:\(server.port)\(path)"))
            #expect(response.status == 201)
        }
        _ = try await client.send(OutboundRequest(method: "POST", url: "http://127.0.0.1:\(server.port)/d", body: Data("x".utf8)))
        #expect(server.connections.withLockedValue { $0 } == 1, "four calls, one connection")
        _ = try await client.send(OutboundRequest(url: "http://127.0.0.1:\(other.port)/e"))
        #expect(other.connections.withLockedValue { $0 } == 1)
        #expect(client.pool.idleCount == 2)
        // Without the pool (a new handle each time) each call opened its own.
        let fresh = try EchoServer()
        defer { try? fresh.stop() }
        for _ in 0..<2 { _ = try await CurlHTTPClient(pool: CurlHandlePool(perDestination: 0)).send(OutboundRequest(url: "http://127.0.0.1:\(fresh.port)/f")) }
        #expect(fresh.connections.withLockedValue { $0 } == 2)
    }

    @Test("a cancelled task aborts its transfer instead of waiting for the answer")
    func cancellation() async throws {
        let server = try EchoServer()
        defer { try? server.stop() }
        let client = CurlHTTPClient(pool: CurlHandlePool())
        let url = "http://127.0.0.1:\(server.port)/slow"
        let task = Task { try await client.send(OutboundRequest(url: url, timeout: 30)) }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let error = await #expect(throws: GrayscaleError.self) { try await task.value }
        #expect(error?.message.hasSuffix("/slow: cancelled") == true, "\(error?.message ?? "")")
        #expect(client.pool.idleCount == 0, "the aborted handle is not kept")
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
