import Foundation

/// A service's releases and its current traffic split, with the rules that change
/// them (DESIGN.md, "Stable and canary"). Pure: the store loads a `ServiceState`,
/// applies one operation and writes the result back in one transaction.
public struct ServiceState: Hashable, Sendable {
    public let service: String
    /// Every release of the service, by ascending number.
    public private(set) var releases: [Release]
    /// Nil until the first release is published.
    public private(set) var split: TrafficSplit?

    public init(service: String, releases: [Release] = [], split: TrafficSplit? = nil) {
        self.service = service
        self.releases = releases.sorted { $0.number < $1.number }
        self.split = split
    }

    /// The newest promoted release.
    public var stable: Release? { releases.last { $0.status == .stable } }
    /// The release under test, if any.
    public var canary: Release? { releases.last { $0.status == .canary } }

    public func release(number: Int) -> Release? { releases.first { $0.number == number } }

    // MARK: - Operations

    /// Publishes a release. The first release of a service is stable at once; every
    /// later one becomes the canary with no users yet, superseding a canary still in test.
    @discardableResult
    public mutating func publish(_ draft: ReleaseDraft, salt: String, at now: Date) throws(GrayscaleError) -> Release {
        try draft.validate()
        guard draft.service == service else {
            throw GrayscaleError("release is for service '\(draft.service)', not '\(service)'")
        }
        if let same = releases.first(where: { $0.number == draft.number }) {
            throw GrayscaleError("\(service): release number \(draft.number) already exists (\(same.ref), \(same.status.rawValue)); numbers are never reused")
        }
        if let newest = releases.last, newest.number > draft.number {
            throw GrayscaleError("\(service): release number \(draft.number) is lower than the newest release \(newest.number); numbers must increase")
        }
        if let same = releases.first(where: { $0.label == draft.label }) {
            throw GrayscaleError("\(service): label '\(draft.label)' is already release \(same.number); each release needs its own label")
        }
        guard !salt.isEmpty else { throw GrayscaleError("\(service): a release needs a non-empty salt") }

        guard let stable else {
            let release = Release(draft, salt: salt, status: .stable, at: now)
            releases.append(release)
            split = TrafficSplit(service: service, revision: (split?.revision ?? 0) + 1, stable: release.ref,
                                 allowList: split?.allowList ?? [], denyList: split?.denyList ?? [],
                                 optInAllowed: split?.optInAllowed ?? false)
            return release
        }
        if let old = canary { setStatus(of: old.number, to: .superseded, at: now) }
        let release = Release(draft, salt: salt, status: .canary, at: now)
        releases.append(release)
        changeSplit {
            $0.stable = stable.ref
            $0.canary = .init(release: release.ref, salt: salt, range: .empty)
            $0.nonAuthWeight = 0
        }
        return release
    }

    /// Gives the canary the users in `range`, and requests without a token the
    /// `nonAuthWeight` (hundredths of a percent; by default the range's width).
    public mutating func setCanaryTraffic(range: CanaryRange, nonAuthWeight: Int? = nil) throws(GrayscaleError) {
        guard let canary else {
            throw GrayscaleError("\(service): there is no canary release to send traffic to; publish one first\(stableNote)")
        }
        let weight = nonAuthWeight ?? range.widthHundredths
        guard (0...Bucket.count).contains(weight) else {
            throw GrayscaleError("\(service): non-auth weight must be between 0 and 100 percent (got \(formatHundredths(weight)))")
        }
        changeSplit {
            $0.canary = .init(release: canary.ref, salt: canary.salt, range: range)
            $0.nonAuthWeight = weight
        }
    }

    /// Copies `share` (hundredths of a percent) of stable's safe requests to the canary,
    /// whose answers are compared and discarded; 0 stops. A new range stops it too.
    public mutating func setMirror(share: Int, routes: [MirrorRoute] = []) throws(GrayscaleError) {
        guard canary != nil, split?.canary != nil else {
            throw GrayscaleError("\(service): there is no canary release to mirror requests to; publish one first\(stableNote)")
        }
        guard (0...Bucket.count).contains(share) else {
            throw GrayscaleError("\(service): the mirror share must be between 0 and 100 percent (got \(formatHundredths(share)))")
        }
        changeSplit {
            $0.canary?.mirror = share == 0 ? nil : share
            $0.canary?.mirrorRoutes = share == 0 || routes.isEmpty ? nil : routes
        }
    }

    /// How long the canary's WebSockets get to close when it loses them (nil: the proxy's setting).
    public mutating func setWebSocketDrain(seconds: Int?) {
        changeSplit { $0.webSocketDrain = seconds }
    }

    /// Sets the appIds that always (allow) or never (deny) get the canary, and
    /// whether clients may opt in; nil leaves a setting as it is.
    public mutating func setRules(allowList: [String]? = nil, denyList: [String]? = nil, optInAllowed: Bool? = nil) throws(GrayscaleError) {
        guard split != nil else { throw GrayscaleError("\(service): no release published yet") }
        let allow = allowList.map(normalizedList) ?? split!.allowList
        let deny = denyList.map(normalizedList) ?? split!.denyList
        if let both = allow.first(where: deny.contains) {
            throw GrayscaleError("\(service): appId '\(both)' cannot be on both the allow list and the deny list")
        }
        changeSplit {
            $0.allowList = allow
            $0.denyList = deny
            if let optInAllowed { $0.optInAllowed = optInAllowed }
        }
    }

    /// Rolls the canary back: every request goes to the stable release again.
    @discardableResult
    public mutating func rollBack(at now: Date) throws(GrayscaleError) -> Release {
        guard let canary else {
            throw GrayscaleError("\(service): there is no canary to roll back\(stableNote)")
        }
        setStatus(of: canary.number, to: .rolledBack, at: now)
        changeSplit {
            $0.canary = nil
            $0.nonAuthWeight = 0
        }
        return self.release(number: canary.number)!
    }

    /// Completes the gray test: the canary becomes stable and takes all traffic.
    @discardableResult
    public mutating func finish(at now: Date) throws(GrayscaleError) -> Release {
        guard let canary else {
            throw GrayscaleError("\(service): there is no canary to finish\(stableNote)")
        }
        if let stable { setStatus(of: stable.number, to: .retired, at: now) }
        setStatus(of: canary.number, to: .stable, at: now)
        changeSplit {
            $0.stable = canary.ref
            $0.canary = nil
            $0.nonAuthWeight = 0
        }
        return self.release(number: canary.number)!
    }

    // MARK: - Helpers

    private var stableNote: String {
        stable.map { "; stable \($0.ref) takes all traffic" } ?? ""
    }

    private mutating func setStatus(of number: Int, to status: ReleaseStatus, at now: Date) {
        guard let index = releases.firstIndex(where: { $0.number == number }) else { return }
        releases[index].status = status
        releases[index].statusChangedAt = now
    }

    private mutating func changeSplit(_ change: (inout TrafficSplit) -> Void) {
        guard var next = split else { return }
        change(&next)
        guard next != split else { return }
        next.revision += 1
        split = next
    }

    private func normalizedList(_ ids: [String]) -> [String] {
        Array(Set(ids.map { String($0.trimmingWhitespace()) }.filter { !$0.isEmpty })).sorted()
    }
}

/// What a release engineer supplies when publishing; the salt and status are Grayscale's.
public struct ReleaseDraft: Hashable, Sendable {
    public var service: String
    public var number: Int
    public var label: String
    public var upstream: String
    public var sourceRef: String?
    /// Set for a service's release in a platform release (`PlatformRelease.publish` sets it).
    public var platform: String?

    public init(service: String, number: Int, label: String, upstream: String, sourceRef: String? = nil, platform: String? = nil) {
        self.platform = platform
        self.service = service
        self.number = number
        self.label = label
        self.upstream = upstream
        self.sourceRef = sourceRef
    }

    public func validate() throws(GrayscaleError) {
        try ServiceName.validate(service)
        guard service != PlatformRelease.module else {
            throw GrayscaleError("'\(PlatformRelease.module)' names every service of a platform release (the bot's -m platform); a service cannot be called that")
        }
        if let platform { try PlatformRelease.validate(label: platform) }
        guard number > 0 else { throw GrayscaleError("release number must be a positive integer (got \(number))") }
        guard !label.isEmpty, label.count <= 64, !label.contains(where: \.isWhitespace) else {
            throw GrayscaleError("release label must be 1 to 64 characters without spaces, e.g. v2.1.1 (got '\(label)')")
        }
        guard let url = URL(string: upstream), let scheme = url.scheme, ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty
        else {
            throw GrayscaleError("upstream must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:9008 (got '\(upstream)')")
        }
    }
}

/// Service names are the bot's `-m` module: `engine`, `sls_gray_test`.
public enum ServiceName {
    public static func validate(_ name: String) throws(GrayscaleError) {
        let allowed = name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
        guard !name.isEmpty, name.count <= 64, allowed else {
            throw GrayscaleError("service name must be 1 to 64 lowercase letters, digits, '_' or '-', e.g. engine (got '\(name)')")
        }
    }
}

extension Release {
    init(_ draft: ReleaseDraft, salt: String, status: ReleaseStatus, at now: Date) {
        self.init(service: draft.service, number: draft.number, label: draft.label, upstream: draft.upstream,
                  sourceRef: draft.sourceRef, salt: salt, platform: draft.platform, status: status, publishedAt: now)
    }
}
