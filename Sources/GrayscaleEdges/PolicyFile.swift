import Foundation
import GrayscaleCore

extension RolloutPolicy {
    /// Reads a policy file. Fields left out keep the built-in defaults (`standard`);
    /// unknown fields and bad values are errors naming the file, line and field.
    public static func load(path: String) throws(GrayscaleError) -> RolloutPolicy {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw GrayscaleError("\(path): cannot read the policy file (\(error.localizedDescription))")
        }
        return try parse(text, file: path, defaultName: defaultName(forPath: path))
    }
}

extension PlatformManifest {
    /// Reads a platform release's manifest file.
    public static func load(path: String) throws(GrayscaleError) -> (label: String, drafts: [ReleaseDraft]) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw GrayscaleError("\(path): cannot read the platform manifest (\(error.localizedDescription))")
        }
        return try parse(text, file: path)
    }
}
