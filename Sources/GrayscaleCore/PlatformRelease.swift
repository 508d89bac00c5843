import Foundation

/// A platform release (DESIGN.md "Platform releases"): several services' releases
/// published as one, `2.1.1` = engine 8 + registry 5 + events 3, with one salt, so the
/// same users are on the canary of every service in it. The services advance together
/// under the platform's policy (the file with `service: platform`); each is judged on
/// its own numbers, and under `rollback: together` a failure of one rolls back all.
public enum PlatformRelease {
    /// The bot's module and the policy's `service:` for every platform release.
    public static let module = "platform"

    public static func validate(label: String) throws(GrayscaleError) {
        guard !label.isEmpty, label.count <= 64, !label.contains(where: \.isWhitespace) else {
            throw GrayscaleError("platform release label must be 1 to 64 characters without spaces, e.g. 2.1.1 (got '\(label)')")
        }
    }

    /// Checks the drafts of one platform release: at least two, each a different service, all under `label`.
    public static func validate(label: String, drafts: [ReleaseDraft]) throws(GrayscaleError) {
        try validate(label: label)
        guard drafts.count >= 2 else {
            throw GrayscaleError("platform release \(label) needs at least two services (got \(drafts.count)); publish a single service on its own")
        }
        var seen: Set<String> = []
        for draft in drafts {
            guard seen.insert(draft.service).inserted else {
                throw GrayscaleError("platform release \(label) names service \(draft.service) twice")
            }
            guard draft.platform == label else {
                throw GrayscaleError("\(draft.service) release \(draft.number) is not marked as part of platform release \(label)")
            }
            try draft.validate()
        }
    }
}

/// Another service's release in the same platform release, as this tick reads it.
public struct PlatformPeer: Hashable, Sendable {
    public var service: String
    public var release: ReleaseRef
    public var status: ReleaseStatus
    /// Its rollout, when the stored one is this release's.
    public var rollout: RolloutState?
    /// The stored rollout's revision: a commit that decided on this peer requires it unchanged.
    public var revision: Int

    public init(service: String, release: ReleaseRef, status: ReleaseStatus, rollout: RolloutState?, revision: Int = 0) {
        self.revision = revision
        self.service = service
        self.release = release
        self.status = status
        self.rollout = rollout
    }

    /// It failed: rolled back, by the controller or a human.
    public var rolledBack: Bool { status == .rolledBack || rollout?.phase == .rolledBack }
    /// It was replaced by a newer release of its service: it left the platform release.
    public var left: Bool { status == .superseded || rollout?.phase == .superseded }
    public var promoted: Bool { status == .stable || status == .retired || rollout?.phase == .promoted }
}

/// The platform release a canary belongs to, with the other services in it.
public struct PlatformContext: Hashable, Sendable {
    public var label: String
    public var peers: [PlatformPeer]

    public init(label: String, peers: [PlatformPeer]) {
        self.label = label
        self.peers = peers
    }
}

/// A platform release's manifest (`grayscale release publish-platform FILE`): its label, an
/// optional git ref, and each service's release. Every mistake is `file:line: field: reason`.
public enum PlatformManifest {
    public static func parse(_ text: String, file: String) throws(GrayscaleError) -> (label: String, drafts: [ReleaseDraft]) {
        let reader = YAMLReader(file: file)
        let root = try reader.root(of: text)
        let top = try reader.fields(root, "", known: ["platform", "ref", "services"])
        guard let labelNode = top["platform"] else { throw reader.error(root, "platform", "required: the platform release's label, e.g. 2.1.1") }
        let label = try reader.string(labelNode, "platform")
        do { try PlatformRelease.validate(label: label) } catch { throw reader.error(labelNode, "platform", error.message) }
        let ref = try top["ref"].map { node throws(GrayscaleError) in try reader.string(node, "ref") }
        guard let servicesNode = top["services"] else { throw reader.error(root, "services", "required: each service's release") }
        guard let services = servicesNode.mapping else {
            throw reader.error(servicesNode, "services", "expected a mapping of service names to releases")
        }
        var drafts: [ReleaseDraft] = []
        for (key, value) in services {
            guard let service = key.scalar?.string else { throw reader.error(key, "services", "service names must be plain strings") }
            let path = "services.\(service)"
            guard !drafts.contains(where: { $0.service == service }) else { throw reader.error(key, path, "service appears twice") }
            let fields = try reader.fields(value, path, known: ["number", "label", "upstream", "ref"])
            guard let number = fields["number"] else { throw reader.error(value, "\(path).number", "required: the release number") }
            guard let releaseLabel = fields["label"] else { throw reader.error(value, "\(path).label", "required: the release label, e.g. v2.1.1") }
            guard let upstream = fields["upstream"] else { throw reader.error(value, "\(path).upstream", "required: where the release serves") }
            let draft = ReleaseDraft(
                service: service, number: try reader.int(number, "\(path).number", in: 1...Int(Int32.max)),
                label: try reader.string(releaseLabel, "\(path).label"), upstream: try reader.string(upstream, "\(path).upstream"),
                sourceRef: try fields["ref"].map { node throws(GrayscaleError) in try reader.string(node, "\(path).ref") } ?? ref,
                platform: label)
            do { try draft.validate() } catch { throw reader.error(value, path, error.message) }
            drafts.append(draft)
        }
        do { try PlatformRelease.validate(label: label, drafts: drafts) } catch { throw reader.error(servicesNode, "services", error.message) }
        return (label, drafts)
    }
}
