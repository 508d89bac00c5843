/// An error whose message tells a user what was wrong and where, ready to print.
public struct GrayscaleError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What a caller may do about it: only a conflict or a busy database is worth trying again.
    public enum Kind: Hashable, Sendable {
        case other
        /// Another writer changed the state between a read and its compare-and-swap; nothing was written.
        case conflict
        /// The database was locked for longer than the busy timeout; nothing was written.
        case busy
        /// A controller's write carried a lease token that is no longer current: another controller leads.
        case fenced
        /// What was asked for does not exist (an unknown service).
        case notFound
    }

    public let message: String
    public let kind: Kind

    public init(_ message: String, kind: Kind = .other) {
        self.message = message
        self.kind = kind
    }

    public var description: String { message }

    /// Worth trying again as it is: nothing was written and nothing is wrong with the request.
    public var isTransient: Bool { kind == .conflict || kind == .busy }
}
