import NIOConcurrencyHelpers
import NIOCore

/// A loopback HTTP server on port 0 that answers 201 with what it received:
/// `METHOD URI\nx-test: VALUE\n\nBODY`. `/slow` waits two seconds first.
public final class EchoServer: Sendable {
    let server: FixtureHTTPServer

    public var port: Int { server.port }
    /// Connections accepted so far.
    public var connections: NIOLockedValueBox<Int> { server.connections }

    public init() throws {
        server = try FixtureHTTPServer { request in
            .respond(status: 201, headers: [("Content-Type", "text/plain"), ("X-Echo", "yes")],
                     body: "\(request.method) \(request.uri)\nx-test: \(request.header("x-test") ?? "")\n\n\(request.body)",
                     delay: request.uri == "/slow" ? .seconds(2) : .zero)
        }
    }

    public func stop() throws { server.stop() }
}
