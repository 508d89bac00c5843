import Crypto
import Foundation

/// Slack's request signing: `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<raw body>`
/// with the app's signing secret. Requests older than five minutes are replays.
public struct SlackSignature: Sendable {
    private let secret: [UInt8]
    public let tolerance: TimeInterval

    public init(secret: [UInt8], tolerance: TimeInterval = 300) {
        self.secret = secret
        self.tolerance = tolerance
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case missingHeaders
        case staleTimestamp
        case badSignature

        public var description: String {
            switch self {
            case .missingHeaders: return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
            case .staleTimestamp: return "timestamp more than five minutes from now (a replay?)"
            case .badSignature: return "signature does not match"
            }
        }
    }

    public func signature(timestamp: String, body: some Collection<UInt8>) -> String {
        let key = SymmetricKey(data: secret)
        let mac = HMAC<SHA256>.authenticationCode(for: Array("v0:\(timestamp):".utf8) + Array(body), using: key)
        return "v0=" + mac.map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
    }

    /// Throws unless the request is signed with the secret and recent.
    public func verify(timestamp: String?, signature: String?, body: some Collection<UInt8>, now: Date) throws(Failure) {
        guard let timestamp, let signature, let seconds = Double(timestamp) else { throw .missingHeaders }
        guard abs(now.timeIntervalSince1970 - seconds) <= tolerance else { throw .staleTimestamp }
        let expected = Array(self.signature(timestamp: timestamp, body: body).utf8)
        let given = Array(signature.utf8)
        // Constant time: look at every byte whatever the first difference.
        var difference = UInt8(expected.count == given.count ? 0 : 1)
        for index in 0..<min(expected.count, given.count) { difference |= expected[index] ^ given[index] }
        guard difference == 0 else { throw .badSignature }
    }
}
