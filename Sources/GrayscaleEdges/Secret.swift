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
