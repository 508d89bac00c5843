import Foundation
import GrayscaleCore
import GrayscaleEdges

/// The policies folder: `default.yaml` for every service, a file whose `service:`
/// names a service for that one. Re-read on every tick and rebuilt from what the
/// folder holds now: an edited policy applies on the next tick, and a policy file that
/// was deleted or no longer parses never stays in force silently. The service it was
/// for gets a `problem` (its rollout holds and says why) and keeps its last good policy
/// only for judging, so that a bad canary is still rolled back.
public struct PolicyLibrary: Sendable {
    public let folder: String
    public private(set) var byService: [String: RolloutPolicy] = [:]
    public private(set) var fallback: RolloutPolicy = .standard
    /// Every file that did not load, with why.
    public private(set) var problems: [String] = []
    /// Services whose policy file is gone or broken, with why.
    public private(set) var unavailable: [String: String] = [:]
    /// The service each file last named, and the last good policy of each service (and of
    /// `default.yaml`, under the empty name).
    private var fileService: [String: String] = [:]
    private var lastGood: [String: RolloutPolicy] = [:]

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
        var problems: [String] = [], unavailable: [String: String] = [:]
        var byService: [String: RolloutPolicy] = [:], fallback: RolloutPolicy?
        for file in files {
            let path = (folder as NSString).appendingPathComponent(file)
            do {
                let policy = try RolloutPolicy.load(path: path)
                if let service = policy.service {
                    byService[service] = policy
                    fileService[file] = service
                    lastGood[service] = policy
                } else if policy.name == "default" {
                    fallback = policy
                    fileService[file] = ""
                    lastGood[""] = policy
                }
            } catch {
                problems.append(error.message)
                // The service it was for: as last loaded, else by the convention engine.yaml → engine.
                let base = ((file as NSString).deletingPathExtension as String)
                unavailable[fileService[file] ?? (base == "default" ? "" : base)] = error.message
            }
        }
        for (file, service) in fileService where !files.contains(file) {
            unavailable[service] = "\((folder as NSString).appendingPathComponent(file)) was deleted"
            fileService[file] = nil
        }
        // A service whose file is fine again, or that another file now covers, is available.
        for service in byService.keys { unavailable[service] = nil }
        if fallback != nil { unavailable[""] = nil }
        self.byService = byService
        self.fallback = fallback ?? lastGood[""] ?? .standard
        self.problems = problems
        self.unavailable = unavailable
    }

    /// The policy a service follows: its own, else the default; while its file is gone or
    /// broken, the last good one (for judging only: `problem` says to hold).
    public func policy(for service: String) -> RolloutPolicy {
        byService[service] ?? (unavailable[service] != nil ? lastGood[service] : nil) ?? fallback
    }

    /// Why the service's rollout must hold, when its policy (or the default it follows) is gone or broken.
    public func problem(for service: String) -> String? {
        if let problem = unavailable[service] { return problem }
        return byService[service] == nil ? unavailable[""] : nil
    }
}
