import Foundation

/// One published version of a service: the platform's monotonically increasing
/// release number (the function version) plus a human label.
public struct Release: Codable, Hashable, Sendable {
    public var service: String
    public var number: Int
    public var label: String
    /// Where the release serves requests, e.g. `http://127.0.0.1:9008`.
    public var upstream: String
    /// The git ref the release was built from, when known.
    public var sourceRef: String?
    /// Drawn at random when the release is published: each release picks its own cohort.
    public var salt: String
    /// The platform release it was published in (`2.1.1`), sharing its salt with the other
    /// services' releases in it; nil for a release of its own.
    public var platform: String?
    public var status: ReleaseStatus
    public var publishedAt: Date
    public var statusChangedAt: Date

    public init(
        service: String, number: Int, label: String, upstream: String, sourceRef: String? = nil,
        salt: String, platform: String? = nil, status: ReleaseStatus, publishedAt: Date, statusChangedAt: Date? = nil
    ) {
        self.platform = platform
        self.service = service
        self.number = number
        self.label = label
        self.upstream = upstream
        self.sourceRef = sourceRef
        self.salt = salt
        self.status = status
        self.publishedAt = publishedAt
        self.statusChangedAt = statusChangedAt ?? publishedAt
    }

    public var ref: ReleaseRef { ReleaseRef(number: number, label: label) }
}

/// Where a release is in its life.
public enum ReleaseStatus: String, Codable, Hashable, Sendable, CaseIterable {
    /// The newest promoted release: it takes every request the canary does not.
    case stable
    /// The newest published release under test.
    case canary
    /// Was stable, replaced by a newer promoted release.
    case retired
    /// Was canary, rolled back: it never became stable.
    case rolledBack
    /// Was canary, replaced by a newer release before it was promoted.
    case superseded
}

/// A release's identity as replies and splits show it: `Version 8(v 2.1.1)`.
public struct ReleaseRef: Codable, Hashable, Sendable, CustomStringConvertible {
    public var number: Int
    public var label: String

    public init(number: Int, label: String) {
        self.number = number
        self.label = label
    }

    public var description: String {
        let shown = label.first == "v" ? "v " + label.dropFirst() : label
        return "Version \(number)(\(shown))"
    }
}
