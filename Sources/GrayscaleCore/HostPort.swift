import Foundation

/// `HOST:PORT` as the configuration and the command line write listen addresses.
public struct HostPort: Hashable, Sendable {
    public var host: String
    public var port: Int

    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), colon > text.startIndex,
              let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port)
        else { return nil }
        host = String(text[..<colon])
        self.port = port
    }
}
