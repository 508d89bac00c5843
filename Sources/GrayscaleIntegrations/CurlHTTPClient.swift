import Foundation
import GrayscaleCore
import Synchronization

/// Outbound HTTP through libcurl for async code. Each request runs its blocking
/// `curl_easy_perform` on a thread of its own, never on the cooperative pool.
///
/// Easy handles are kept per destination (scheme, host and port) after use, and libcurl
/// keeps each handle's connections open: consecutive calls to Slack, Tencent Cloud or
/// Prometheus reuse one connection (and its TLS session) instead of opening a new one.
/// A cancelled task aborts its transfer within libcurl's progress interval.
public struct CurlHTTPClient: Sendable {
    public let pool: CurlHandlePool

    /// A client sharing the process's handles.
    public init() { pool = .shared }

    /// A client with handles of its own.
    public init(pool: CurlHandlePool) { self.pool = pool }

    public func send(_ request: OutboundRequest) async throws(GrayscaleError) -> OutboundResponse {
        let destination = CurlHandlePool.destination(of: request.url)
        let cancelled = CancelFlag()
        let pool = self.pool
        let result: Result<OutboundResponse, GrayscaleError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let thread = Thread {
                    do throws(GrayscaleError) {
                        let easy = try pool.take(destination).handle
                        let response = try easy.perform(request, cancelled: cancelled)
                        pool.give(back: easy, for: destination)
                        continuation.resume(returning: .success(response))
                    } catch {
                        // A handle whose transfer failed is dropped with its connections.
                        continuation.resume(returning: .failure(error))
                    }
                }
                thread.name = "grayscale-curl"
                thread.start()
            }
        } onCancel: {
            cancelled.set()
        }
        return try result.get()
    }
}

/// Set when the task that waits for a transfer is cancelled; libcurl's progress callback reads it.
final class CancelFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// Idle libcurl easy handles by destination. A handle is used by one thread at a time:
/// it is taken out of the pool for a transfer and given back after it.
public final class CurlHandlePool: Sendable {
    public static let shared = CurlHandlePool()

    /// Idle handles kept per destination; more are closed when given back.
    public let perDestination: Int
    private let idle = Mutex<[String: [Handle]]>([:])

    /// A handle moved between threads; owned by one of them at a time.
    struct Handle: @unchecked Sendable {
        let handle: CurlEasy
    }

    public init(perDestination: Int = 4) { self.perDestination = perDestination }

    func take(_ destination: String) throws(GrayscaleError) -> Handle {
        if let handle = idle.withLock({ $0[destination]?.popLast() }) { return handle }
        return Handle(handle: try CurlEasy())
    }

    func give(back easy: CurlEasy, for destination: String) {
        let handle = Handle(handle: easy)
        idle.withLock { all in
            if all[destination, default: []].count < perDestination { all[destination, default: []].append(handle) }
        }
    }

    /// Idle handles, all destinations together.
    public var idleCount: Int { idle.withLock { $0.values.reduce(0) { $0 + $1.count } } }

    /// `scheme://host:port` of a URL (the part a connection is for), lower-cased.
    static func destination(of url: String) -> String {
        guard let components = URLComponents(string: url), let host = components.host else { return url.lowercased() }
        let scheme = components.scheme?.lowercased() ?? "http"
        return "\(scheme)://\(host.lowercased()):\(components.port ?? (scheme == "https" ? 443 : 80))"
    }
}
