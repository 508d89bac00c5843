import Foundation
import GrayscaleCore

/// An error Tencent Cloud answered with, with its request id for their support.
public struct TencentCloudError: Error, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var requestId: String?

    public var description: String { "\(code): \(message)" + (requestId.map { " (RequestId \($0))" } ?? "") }

    /// Worth trying again: throttling, Tencent's own failures, timeouts.
    public var isRetryable: Bool {
        code.hasPrefix("RequestLimitExceeded") || code.hasPrefix("InternalError") || code == "FailedOperation.Timeout"
            || code == "Network"
    }
}

/// Tencent Cloud API 3.0 over libcurl: `POST /` with JSON, TC3-HMAC-SHA256 signed,
/// retried with backoff where safe. Credentials never appear in errors or logs.
public struct TencentCloudClient: Sendable {
    public let endpoint: String
    public let service: String
    public let version: String
    public let region: String
    let signer: TencentCloudSigner
    let client: CurlHTTPClient
    let now: @Sendable () -> Date
    public let maxAttempts: Int
    public let baseBackoff: Double

    public init(endpoint: String, service: String, version: String, region: String, secretId: String, secretKey: String,
                client: CurlHTTPClient = CurlHTTPClient(), maxAttempts: Int = 4, baseBackoff: Double = 0.5,
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.endpoint = endpoint
        self.service = service
        self.version = version
        self.region = region
        let host = URLComponents(string: endpoint).map { components in
            components.port.map { "\(components.host ?? ""):\($0)" } ?? (components.host ?? "")
        } ?? ""
        self.signer = TencentCloudSigner(secretId: secretId, secretKey: secretKey, service: service, host: host)
        self.client = client
        self.maxAttempts = maxAttempts
        self.baseBackoff = baseBackoff
        self.now = now
    }

    /// A `Response` read only for its request id.
    public struct Acknowledgement: Decodable, Sendable {
        public var RequestId: String?
    }

    /// `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`, Tencent Cloud's failure.
    struct Failure: Decodable {
        struct Body: Decodable {
            struct Problem: Decodable {
                var Code: String?
                var Message: String?
            }
            var Error: Problem?
            var RequestId: String?
        }
        var Response: Body
    }

    struct Success<Answer: Decodable>: Decodable {
        var Response: Answer
    }

    /// Calls `action` with typed `parameters`; returns the `Response` object decoded as
    /// `Answer`. Retries what is retryable.
    public func call<Parameters: Encodable, Answer: Decodable>(_ action: String, _ parameters: Parameters) async throws(TencentCloudError) -> Answer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do { data = try encoder.encode(parameters) } catch {
            // Never send a request whose parameters did not encode (an empty UpdateAlias would be accepted).
            throw TencentCloudError(code: "InvalidParameters", message: "\(action): parameters do not encode: \(error)", requestId: nil)
        }
        let payload = String(decoding: data, as: UTF8.self)
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await once(action, payload: payload)
            } catch {
                guard error.isRetryable, attempt < maxAttempts else { throw error }
                try? await Task.sleep(for: .seconds(baseBackoff * pow(2, Double(attempt - 1))))
            }
        }
    }

    private func once<Answer: Decodable>(_ action: String, payload: String) async throws(TencentCloudError) -> Answer {
        let timestamp = Int(now().timeIntervalSince1970)
        let request = OutboundRequest(method: "POST", url: endpoint, headers: [
            ("Content-Type", TencentCloudSigner.contentType), ("Host", signer.host), ("X-TC-Action", action),
            ("X-TC-Timestamp", String(timestamp)), ("X-TC-Version", version), ("X-TC-Region", region),
            ("Authorization", signer.authorization(payload: payload, timestamp: timestamp)),
        ], body: Data(payload.utf8), timeout: 10)
        let response: OutboundResponse
        do { response = try await client.send(request) } catch {
            throw TencentCloudError(code: "Network", message: "\(action): \(error.message)", requestId: nil)
        }
        guard let failure = try? JSONDecoder().decode(Failure.self, from: response.body) else {
            throw TencentCloudError(code: response.status >= 500 ? "InternalError" : "InvalidResponse",
                                    message: "\(action): HTTP \(response.status), not a Tencent Cloud response", requestId: nil)
        }
        if let error = failure.Response.Error {
            throw TencentCloudError(code: error.Code ?? "Unknown", message: "\(action): \(error.Message ?? "")", requestId: failure.Response.RequestId)
        }
        do {
            return try JSONDecoder().decode(Success<Answer>.self, from: response.body).Response
        } catch {
            throw TencentCloudError(code: "InvalidResponse", message: "\(action): the Response does not read as expected: \(error)",
                                    requestId: failure.Response.RequestId)
        }
    }
}
