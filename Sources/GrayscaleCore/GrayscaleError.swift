/// An error whose message tells a user what was wrong and where, ready to print.
public struct GrayscaleError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
