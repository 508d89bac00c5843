import Foundation
import Crypto
import NIOHTTP1

/// Where the proxy finds a request's appId.
public struct IdentitySource: Sendable {
    public enum Kind: Sendable, Hashable {
        /// `Authorization: Bearer <JWT>`, the named claim of its payload.
        case bearerJWT(claim: String)
        /// A request header carrying the appId itself.
        case header(String)
        /// A cookie carrying the appId itself.
        case cookie(String)
        /// A query parameter carrying the appId itself.
        case query(String)
    }

    public var kind: Kind
    /// When set, a JWT must carry a valid HS256 signature made with this key; a bad
    /// signature means "no identity" (the request is routed as anonymous).
    public var hs256Secret: [UInt8]?

    public init(kind: Kind = .bearerJWT(claim: "appId"), hs256Secret: [UInt8]? = nil) {
        self.kind = kind
        self.hs256Secret = hs256Secret
    }

    /// Parses `jwt`, `jwt:CLAIM`, `header:NAME`, `cookie:NAME`, `query:NAME`.
    public init(parsing text: String, hs256Secret: [UInt8]? = nil) throws(IdentitySourceError) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let name = parts.count == 2 ? parts[1] : nil
        switch (parts.first, name) {
        case ("jwt", nil): self.init(kind: .bearerJWT(claim: "appId"), hs256Secret: hs256Secret)
        case ("jwt", let claim?) where !claim.isEmpty: self.init(kind: .bearerJWT(claim: claim), hs256Secret: hs256Secret)
        case ("header", let name?) where !name.isEmpty: self.init(kind: .header(name), hs256Secret: hs256Secret)
        case ("cookie", let name?) where !name.isEmpty: self.init(kind: .cookie(name), hs256Secret: hs256Secret)
        case ("query", let name?) where !name.isEmpty: self.init(kind: .query(name), hs256Secret: hs256Secret)
        default: throw IdentitySourceError(text: text)
        }
    }

    /// The request's appId, or nil for an anonymous request. Never throws: a malformed
    /// token is simply no identity.
    public func appId(in head: HTTPRequestHead, now: Date = Date()) -> String? { identify(in: RequestHead(head), now: now).appId }

    /// The user, or why a credential that was there names none (it is then anonymous, and
    /// the access log says why). A JWT is no identity outside its `nbf` … `exp` or when
    /// issued (`iat`) in the future, a minute's leeway either way, as of `now`.
    public func identify(in head: HTTPRequestHead, now: Date) -> (appId: String?, problem: String?) {
        identify(in: RequestHead(head), now: now)
    }

    /// The same, from the head as the proxy reads it.
    public func identify(in head: RequestHead, now: Date) -> (appId: String?, problem: String?) {
        var memo = Memo()
        return identify(in: head, now: now, memo: &memo)
    }

    /// What a connection remembers of the last token it presented: keep-alive clients send the
    /// same token with every request, so its claim is read (and its signature checked) once
    /// per connection, and again only when the token's bytes change or the time leaves the
    /// span over which the answer holds (the token's `nbf`/`iat` … `exp`, with the leeway).
    /// Bytes, not `String ==`, which takes canonically equivalent text (a Kelvin sign for a
    /// `K`) as equal. One memo serves one `IdentitySource`.
    public struct Memo: Sendable {
        /// The token's bytes (the whole `Authorization` value); empty: none remembered.
        fileprivate var token: [UInt8] = []
        fileprivate var answer: (appId: String?, problem: String?) = (nil, nil)
        fileprivate var span = 0.0..<0.0
        static let maxToken = 4096
        public init() {}

        /// The remembered answer, when `authorization` is the remembered token's bytes and `seconds` in its span.
        fileprivate func answer(for authorization: UnsafeRawBufferPointer, at seconds: Double) -> (appId: String?, problem: String?)? {
            guard !token.isEmpty, token.count == authorization.count, span.contains(seconds),
                  token.withUnsafeBytes({ memcmp($0.baseAddress!, authorization.baseAddress!, token.count) == 0 }) else { return nil }
            return answer
        }

        /// Remembers `answer` for `authorization`, in the memo's own array (its room serves the
        /// connection's next tokens). A value past any real token's length is not kept: an idle
        /// connection holds no more than this.
        fileprivate mutating func remember(_ authorization: UnsafeRawBufferPointer, answer: (appId: String?, problem: String?), span: Range<Double>) {
            token.removeAll(keepingCapacity: true)
            guard authorization.count <= Self.maxToken else { return }
            token.append(contentsOf: authorization)
            self.answer = answer
            self.span = span
        }
    }

    /// `identify(in:now:)`, remembering the answer in `memo` (one per connection).
    public func identify(in head: HTTPRequestHead, now: Date, memo: inout Memo) -> (appId: String?, problem: String?) {
        identify(in: RequestHead(head), now: now, memo: &memo)
    }

    /// The same, from the head as the proxy reads it: the token is compared with the
    /// remembered one as bytes, where it lies in the head.
    public func identify(in head: RequestHead, now: Date, memo: inout Memo) -> (appId: String?, problem: String?) {
        let claim: JWTPayload.Claim
        switch kind {
        case .bearerJWT(let name):
            return head.withBytes { raw -> (appId: String?, problem: String?) in
                guard let authorization = head.firstValue("authorization", in: raw) else { return (nil, nil) }
                let seconds = now.timeIntervalSince1970
                if let remembered = memo.answer(for: authorization, at: seconds) { return remembered }
                let (claim, span) = bearerClaim(name, authorization: authorization.assumingMemoryBound(to: UInt8.self), now: seconds)
                let answer = Self.answer(claim)
                memo.remember(authorization, answer: answer, span: span)
                return answer
            }
        case .header(let name):
            claim = head.first(named: name).map { .value($0) } ?? .absent
        case .cookie(let name):
            claim = head.cookies.lazy.compactMap { cookieValue(name, in: $0) }.first.map { .value(String($0)) } ?? .absent
        case .query(let name):
            claim = queryValue(name, uri: head.uri).map { .value(String($0)) } ?? .absent
        }
        return Self.answer(claim)
    }

    private static func answer(_ claim: JWTPayload.Claim) -> (appId: String?, problem: String?) {
        switch claim {
        case .absent: return (nil, nil)
        case .invalid(let problem): return (nil, problem)
        case .value(let value):
            guard !value.isEmpty else { return (nil, nil) }
            guard value.utf8.count <= 256 else { return (nil, "the appId is longer than 256 bytes") }
            return (value, nil)
        }
    }

    /// The token's claim, and the span of time over which that answer holds.
    private func bearerClaim(_ claim: String, authorization bytes: UnsafeBufferPointer<UInt8>, now: Double) -> (JWTPayload.Claim, Range<Double>) {
        // "Bearer " with any case of the scheme.
        guard bytes.count > 7, bytes[6] == UInt8(ascii: " "),
              bytes[0] | 0x20 == UInt8(ascii: "b"), bytes[1] | 0x20 == UInt8(ascii: "e"), bytes[2] | 0x20 == UInt8(ascii: "a"),
              bytes[3] | 0x20 == UInt8(ascii: "r"), bytes[4] | 0x20 == UInt8(ascii: "e"), bytes[5] | 0x20 == UInt8(ascii: "r")
        else { return (.absent, JWTPayload.always) }
        let token = UnsafeBufferPointer(rebasing: bytes[7...])
        guard let parts = JWTPayload.split(token) else { return (.absent, JWTPayload.always) }
        if let hs256Secret {
            let hs256Key = SymmetricKey(data: hs256Secret)
            let signed = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(token)[0..<parts.payload.upperBound])
            let signatureText = UnsafeBufferPointer(rebasing: token[parts.signature])
            let valid = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: signatureText.count) { buffer -> Bool in
                guard let length = Base64URL.decode(signatureText, into: buffer), length == 32 else { return false }
                return HMAC<SHA256>.isValidAuthenticationCode(
                    UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<length]),
                    authenticating: signed, using: hs256Key)
            }
            guard valid else { return (.absent, JWTPayload.always) }
        }
        return JWTPayload.claimAndSpan(claim, payload: UnsafeBufferPointer(rebasing: token[parts.payload]), now: now)
    }
}

public struct IdentitySourceError: Error, CustomStringConvertible {
    public var text: String
    public var description: String {
        "identity: '\(text)' is not one of jwt, jwt:CLAIM, header:NAME, cookie:NAME, query:NAME"
    }
}

/// The value of cookie `name` in one `Cookie:` header.
func cookieValue(_ name: String, in header: some StringProtocol) -> Substring? {
    for pair in header.split(separator: ";") {
        let trimmed = pair.drop(while: { $0 == " " })
        guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name else { continue }
        return Substring(trimmed[trimmed.index(after: equals)...])
    }
    return nil
}

/// The raw value of query parameter `name` in a request URI.
func queryValue(_ name: String, uri: String) -> Substring? {
    guard let question = uri.firstIndex(of: "?") else { return nil }
    for pair in uri[uri.index(after: question)...].split(separator: "&") {
        guard let equals = pair.firstIndex(of: "="), pair[..<equals] == name else { continue }
        return pair[pair.index(after: equals)...]
    }
    return nil
}
