import Crypto
import Foundation

/// Tencent Cloud API 3.0 request signing, TC3-HMAC-SHA256: canonical request →
/// string to sign → a key derived from "TC3" + SecretKey, the date, the service and
/// "tc3_request" → the signature, sent in `Authorization`.
public struct TencentCloudSigner: Sendable {
    public let secretId: String
    private let secretKey: String
    public let service: String
    public let host: String

    public init(secretId: String, secretKey: String, service: String, host: String) {
        self.secretId = secretId
        self.secretKey = secretKey
        self.service = service
        self.host = host
    }

    public static let contentType = "application/json; charset=utf-8"

    /// `POST /` with JSON: the only form Grayscale sends.
    public func canonicalRequest(payload: String) -> String {
        ["POST", "/", "", "content-type:\(Self.contentType)\nhost:\(host)\n", "content-type;host", Self.hex(SHA256.hash(data: Data(payload.utf8)))]
            .joined(separator: "\n")
    }

    public func credentialScope(timestamp: Int) -> String {
        "\(Self.utcDate(timestamp))/\(service)/tc3_request"
    }

    public func stringToSign(payload: String, timestamp: Int) -> String {
        ["TC3-HMAC-SHA256", String(timestamp), credentialScope(timestamp: timestamp),
         Self.hex(SHA256.hash(data: Data(canonicalRequest(payload: payload).utf8)))].joined(separator: "\n")
    }

    public func signature(payload: String, timestamp: Int) -> String {
        func hmac(_ key: [UInt8], _ message: String) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: key)))
        }
        let date = hmac(Array("TC3\(secretKey)".utf8), Self.utcDate(timestamp))
        let service = hmac(date, self.service)
        let signing = hmac(service, "tc3_request")
        return Self.hex(hmac(signing, stringToSign(payload: payload, timestamp: timestamp)))
    }

    public func authorization(payload: String, timestamp: Int) -> String {
        "TC3-HMAC-SHA256 Credential=\(secretId)/\(credentialScope(timestamp: timestamp)), SignedHeaders=content-type;host, Signature=\(signature(payload: payload, timestamp: timestamp))"
    }

    static func utcDate(_ timestamp: Int) -> String {
        var seconds = time_t(timestamp)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
