import Foundation
import GrayscaleCore

/// Outbound HTTP through libcurl for async code. Each request runs its blocking
/// `curl_easy_perform` on a thread of its own, never on the cooperative pool.
public struct CurlHTTPClient: Sendable {
    public init() {}

    public func send(_ request: OutboundRequest) async throws(GrayscaleError) -> OutboundResponse {
        let result: Result<OutboundResponse, GrayscaleError> = await withCheckedContinuation { continuation in
            let thread = Thread {
                do throws(GrayscaleError) {
                    let easy = try CurlEasy()
                    continuation.resume(returning: .success(try easy.perform(request)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            thread.name = "grayscale-curl"
            thread.start()
        }
        return try result.get()
    }
}
