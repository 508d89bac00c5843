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
        // swift-crypto compares the codes in constant time.
        guard signature.hasPrefix("v0="), let given = Self.bytes(hex: signature.dropFirst(3)), given.count == SHA256.byteCount,
              HMAC<SHA256>.isValidAuthenticationCode(given, authenticating: Array("v0:\(timestamp):".utf8) + Array(body),
                                                     using: SymmetricKey(data: secret))
        else { throw .badSignature }
    }

    /// Lower- or upper-case hex, two digits a byte; nil for anything else.
    static func bytes(hex: Substring) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0, digits.count <= 128 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }
}
