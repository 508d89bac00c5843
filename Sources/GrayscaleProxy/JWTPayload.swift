import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads one claim of a JWT's payload without building a JSON object: the token's
/// payload is base64url-decoded into a stack buffer and scanned for the claim, so
/// the routing decision allocates nothing for the common case (a short appId).
enum JWTPayload {
    /// The three dot-separated parts of a compact JWS, as UTF-8 byte ranges.
    struct Parts {
        var header: Range<Int>
        var payload: Range<Int>
        var signature: Range<Int>
    }

    static func split(_ token: UnsafeBufferPointer<UInt8>) -> Parts? {
        // Exactly two dots; memchr looks for them many bytes at a time.
        guard let base = token.baseAddress else { return nil }
        func dot(after start: Int) -> Int? {
            guard start < token.count, let found = memchr(base + start, Int32(UInt8(ascii: ".")), token.count - start) else { return nil }
            return UnsafeRawPointer(base).distance(to: UnsafeRawPointer(found))
        }
        guard let firstDot = dot(after: 0), let secondDot = dot(after: firstDot + 1), dot(after: secondDot + 1) == nil else { return nil }
        return Parts(header: 0..<firstDot, payload: (firstDot + 1)..<secondDot, signature: (secondDot + 1)..<token.count)
    }

    /// A claim as found: absent (or the payload is not base64url JSON), a value, or there
    /// but unusable as a user (and why).
    enum Claim: Equatable {
        case absent
        case value(String)
        case invalid(String)
    }

    /// The claim's value: a JSON string of valid UTF-8 without escapes, or an integer's
    /// digits. Anything else (a float, a boolean, an object, invalid UTF-8) is `invalid`:
    /// two different byte strings must never become the same user.
    /// With it, the span of times over which the same payload gives the same answer:
    /// a value holds from the token's `nbf` or `iat` (less the leeway) until its `exp` (plus
    /// the leeway); an answer that does not depend on the time holds always; a time problem
    /// is not kept at all (an empty span).
    static func claimAndSpan(_ name: String, payload: UnsafeBufferPointer<UInt8>, now: Double?) -> (claim: Claim, span: Range<Double>) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: payload.count * 3 / 4 + 3) { buffer in
            guard let length = Base64URL.decode(payload, into: buffer) else { return (.absent, always) }
            var scanner = JSONClaimScanner(bytes: UnsafeBufferPointer(rebasing: buffer[..<length]))
            let claim = scanner.topLevelValue(for: name)
            guard case .value = claim, let now else { return (claim, always) }
            if let problem = scanner.timeProblem(now: now) { return (.invalid(problem), now..<now) }
            let from = max(scanner.notBefore ?? -.infinity, scanner.issuedAt ?? -.infinity) - leeway
            let until = (scanner.expires ?? .infinity) + leeway
            return (claim, from..<until)
        }
    }

    /// All of time: an answer that does not depend on the clock.
    static let always = -Double.infinity..<Double.infinity

    /// Clock difference allowed between the token's issuer and the proxy, in seconds (RFC 7519 §4.1.4 "some small leeway").
    static let leeway = 60.0
}

enum Base64URL {
    /// Decodes unpadded (or padded) base64url into `output`; returns the length, or nil if malformed.
    /// Four characters at a time through a table: the routing decision decodes every token's payload.
    static func decode(_ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>) -> Int? {
        var end = input.count
        while end > 0, input[end - 1] == UInt8(ascii: "=") { end -= 1 }
        let tail = end % 4
        guard tail != 1 else { return nil }  // a single leftover sextet cannot come from valid input
        let length = end / 4 * 3 + (tail == 0 ? 0 : tail - 1)
        guard length <= output.count, let out = output.baseAddress, let bytes = input.baseAddress else { return end == 0 ? 0 : nil }
        return sextets.withUnsafeBufferPointer { table -> Int? in
            var read = 0, written = 0
            while read + 4 <= end {
                let a = table[Int(bytes[read])], b = table[Int(bytes[read + 1])], c = table[Int(bytes[read + 2])], d = table[Int(bytes[read + 3])]
                guard (a | b | c | d) & 0x80 == 0 else { return nil }
                let word = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                out[written] = UInt8(truncatingIfNeeded: word >> 16)
                out[written + 1] = UInt8(truncatingIfNeeded: word >> 8)
                out[written + 2] = UInt8(truncatingIfNeeded: word)
                read += 4
                written += 3
            }
            if tail >= 2 {
                let a = table[Int(bytes[read])], b = table[Int(bytes[read + 1])], c = tail == 3 ? table[Int(bytes[read + 2])] : 0
                guard (a | b | c) & 0x80 == 0 else { return nil }
                let word = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6
                out[written] = UInt8(truncatingIfNeeded: word >> 16)
                written += 1
                if tail == 3 {
                    out[written] = UInt8(truncatingIfNeeded: word >> 8)
                    written += 1
                }
            }
            return written
        }
    }

    /// Each byte's sextet, or 0xFF for a byte that is not in the (URL-safe or standard) alphabet.
    static let sextets: [UInt8] = (0...255).map { sextet(UInt8($0)) ?? 0xFF }

    @inline(__always)
    static func sextet(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "-"), UInt8(ascii: "+"): return 62
        case UInt8(ascii: "_"), UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}

/// Just enough of a JSON reader to find one key of the top-level object.
struct JSONClaimScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var position = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// The registered time claims met on the way (RFC 7519 §4.1.4–4.1.6, seconds since
    /// 1970): `nil` absent, NaN present but not a single plain number.
    var expires: Double?, notBefore: Double?, issuedAt: Double?

    /// Why the token is not valid at `now` (with `JWTPayload.leeway`), or nil.
    func timeProblem(now: Double) -> String? {
        let leeway = JWTPayload.leeway
        for (name, value) in [("exp", expires), ("nbf", notBefore), ("iat", issuedAt)] where value?.isNaN == true {
            return "the token's \(name) is not a number of seconds"
        }
        if let expires, now >= expires + leeway { return "the token expired at \(Self.iso(expires))" }
        if let notBefore, now + leeway < notBefore { return "the token is not valid before \(Self.iso(notBefore))" }
        if let issuedAt, now + leeway < issuedAt { return "the token was issued in the future (\(Self.iso(issuedAt)))" }
        return nil
    }

    static func iso(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e11 else { return String(seconds) }
        return Date(timeIntervalSince1970: seconds).formatted(.iso8601)
    }

    /// The key's value; `invalid` when the key appears twice or any key is escaped (another
    /// parser could read another value for it than this one). `exp`, `nbf` and `iat` are
    /// read on the way.
    mutating func topLevelValue(for key: String) -> JWTPayload.Claim {
        skipWhitespace()
        guard take(UInt8(ascii: "{")) else { return .absent }
        skipWhitespace()
        if take(UInt8(ascii: "}")) { return .absent }
        var found: JWTPayload.Claim?
        while true {
            skipWhitespace()
            guard let name = stringRange() else { return .absent }
            if bytes[name].contains(UInt8(ascii: "\\")) { return .invalid("the token has an escaped claim name") }
            skipWhitespace()
            guard take(UInt8(ascii: ":")) else { return .absent }
            skipWhitespace()
            if equals(name, key) {
                guard found == nil else { return .invalid("the token has more than one \(key)") }
                found = value(key)
                if case .invalid = found { return found! }
            } else if name.count == 3, equals(name, "exp") || equals(name, "nbf") || equals(name, "iat") {
                let first = bytes[name.lowerBound]
                let start = position
                guard skipValue() else { return .absent }
                let number = Self.number(UnsafeBufferPointer(rebasing: bytes[start..<position]))
                switch first {
                case UInt8(ascii: "e"): expires = expires == nil ? number : .nan
                case UInt8(ascii: "n"): notBefore = notBefore == nil ? number : .nan
                default: issuedAt = issuedAt == nil ? number : .nan
                }
            } else {
                guard skipValue() else { return .absent }
            }
            skipWhitespace()
            if take(UInt8(ascii: ",")) { continue }
            return found ?? .absent  // "}" (or malformed after it)
        }
    }

    private mutating func value(_ key: String) -> JWTPayload.Claim {
        guard position < bytes.count else { return .absent }
        if bytes[position] == UInt8(ascii: "\"") {
            guard let range = stringRange() else { return .invalid("the token's \(key) is not a complete JSON string") }
            let raw = UnsafeBufferPointer(rebasing: bytes[range])
            guard !raw.contains(UInt8(ascii: "\\")) else { return .invalid("the token's \(key) has escapes (not supported)") }
            // Plain ASCII (almost every appId) needs no validation beyond the look.
            if raw.allSatisfy({ $0 < 0x80 }) { return .value(String(decoding: raw, as: UTF8.self)) }
            guard let text = String(validating: raw, as: UTF8.self) else { return .invalid("the token's \(key) is not valid UTF-8") }
            return .value(text)
        }
        let start = position
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let digits = position
        while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
        guard position > digits, position == bytes.count || isDelimiter(bytes[position]) else {
            return .invalid("the token's \(key) is not a string or an integer")
        }
        // JSON has no leading zeros, and -0 is 0: one user, one spelling.
        guard bytes[digits] != UInt8(ascii: "0") || (position - digits == 1 && digits == start) else {
            return .invalid("the token's \(key) is not a canonical integer")
        }
        return .value(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self))
    }

    /// The range of a string's contents (without quotes), leaving the position after it.
    /// A JSON number (integer, fraction, exponent), NaN for anything else.
    static func number(_ raw: UnsafeBufferPointer<UInt8>) -> Double {
        // Plain digits (every exp, nbf and iat in practice), up to 15 of them: exact in a Double.
        if !raw.isEmpty, raw.count <= 15, raw.allSatisfy({ $0 &- UInt8(ascii: "0") < 10 }) {
            return Double(raw.reduce(0) { $0 * 10 + Int($1 &- UInt8(ascii: "0")) })
        }
        guard !raw.isEmpty, raw.count <= 32,
              raw.allSatisfy({ $0 &- UInt8(ascii: "0") < 10 || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "+")
                  || $0 == UInt8(ascii: ".") || $0 | 0x20 == UInt8(ascii: "e") }),
              let value = Double(String(decoding: raw, as: UTF8.self)), value.isFinite
        else { return .nan }
        return value
    }

    private mutating func stringRange() -> Range<Int>? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = position
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: "\\"): position += 2
            case UInt8(ascii: "\""):
                position += 1
                return start..<(position - 1)
            default: position += 1
            }
        }
        return nil
    }

    private mutating func skipValue() -> Bool {
        guard position < bytes.count else { return false }
        switch bytes[position] {
        case UInt8(ascii: "\""):
            return stringRange() != nil
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while position < bytes.count {
                switch bytes[position] {
                case UInt8(ascii: "\""):
                    guard stringRange() != nil else { return false }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 {
                        position += 1
                        return true
                    }
                default: break
                }
                position += 1
            }
            return false
        default:
            let start = position
            while position < bytes.count, !isDelimiter(bytes[position]) { position += 1 }
            return position > start
        }
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, isWhitespace(bytes[position]) { position += 1 }
    }

    private mutating func take(_ byte: UInt8) -> Bool {
        guard position < bytes.count, bytes[position] == byte else { return false }
        position += 1
        return true
    }

    private func equals(_ range: Range<Int>, _ key: String) -> Bool {
        var key = key
        return key.withUTF8 { keyBytes in
            keyBytes.count == range.count && zip(keyBytes, bytes[range]).allSatisfy { $0 == $1 }
        }
    }

    private func isNumberByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-")
    }

    private func isDelimiter(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]")
            || isWhitespace(byte)
    }

    private func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }
}
