import Foundation

/// Secrets come from the environment, never from arguments: `NAME`, or the file whose
/// path is in `NAME_FILE` (trimmed). One reader for every secret Grayscale takes.
public enum Secret {
    public static func read(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let value = environment[name], !value.isEmpty { return value }
        if let file = environment[name + "_FILE"], let data = FileManager.default.contents(atPath: file) {
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return nil
    }
}

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
