import Foundation
import GrayscaleCore

/// Where a release serves: host and port of a plain-HTTP upstream.
public struct Upstream: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Reads `http://host:port`; nil for anything the proxy cannot reach (https needs TLS).
    public init?(url: String) {
        guard let components = URLComponents(string: url), components.scheme == "http",
              let host = components.host, !host.isEmpty
        else { return nil }
        self.host = host
        self.port = components.port ?? 80
    }

    public var description: String { "\(host):\(port)" }
}
