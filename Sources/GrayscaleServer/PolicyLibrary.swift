import Foundation
import GrayscaleCore

/// The policies folder: `default.yaml` for every service, a file whose `service:`
/// names a service for that one. Re-read when asked, so an edited policy applies on
/// the next tick; a broken file keeps the last good version and reports why.
public struct PolicyLibrary: Sendable {
    public let folder: String
    public private(set) var byService: [String: RolloutPolicy] = [:]
    public private(set) var fallback: RolloutPolicy = .standard
    public private(set) var problems: [String] = []

    public init(folder: String) {
        self.folder = folder
    }

    /// Loads the folder; throws only when it cannot be read at all.
    public mutating func reload() throws(GrayscaleError) {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        } catch {
            throw GrayscaleError("\(folder): cannot read the policies folder (\(error.localizedDescription))")
        }
        var problems: [String] = []
        for file in files {
            let path = (folder as NSString).appendingPathComponent(file)
            do {
                let policy = try RolloutPolicy.load(path: path)
                if let service = policy.service {
                    byService[service] = policy
                } else if policy.name == "default" {
                    fallback = policy
                }
            } catch {
                problems.append(error.message)
            }
        }
        self.problems = problems
    }

    public func policy(for service: String) -> RolloutPolicy { byService[service] ?? fallback }
}
