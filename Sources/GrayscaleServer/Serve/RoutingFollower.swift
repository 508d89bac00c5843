import Foundation
import GrayscaleCore
import GrayscaleIntegrations
import GrayscaleProxy
import Logging
import ServiceLifecycle

/// A proxy of a fleet: follows the controller's routing table by long-polling
/// `GET /api/v1/routing?after=VERSION` on its admin server, and keeps serving the last
/// table it got while the controller is unreachable.
public struct RoutingFollower: Service {
    public let controller: String
    public let proxy: ProxyServer
    public let matching: ServiceMatching
    public let client: CurlHTTPClient
    public let logger: Logger

    public init(controller: String, proxy: ProxyServer, matching: ServiceMatching, client: CurlHTTPClient = CurlHTTPClient(), logger: Logger) {
        self.controller = controller.hasSuffix("/") ? String(controller.dropLast()) : controller
        self.proxy = proxy
        self.matching = matching
        self.client = client
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var version = ""
            var reachable = true
            while !Task.isCancelled {
                do {
                    let response = try await client.send(OutboundRequest(url: "\(controller)/api/v1/routing?after=\(Self.queryValue(version))", timeout: 30))
                    guard response.status == 200 else { throw GrayscaleError("GET /api/v1/routing: HTTP \(response.status)") }
                    let decoder = JSONDecoder()
                    decoder.dateDecodingStrategy = .iso8601
                    let snapshot = try decoder.decode(RoutingSnapshot.self, from: response.body)
                    if !reachable { logger.info("controller reachable again", metadata: ["controller": "\(controller)"]) }
                    reachable = true
                    if snapshot.version != version {
                        proxy.update(RoutingTable(states: snapshot.states, matching: matching))
                        version = snapshot.version
                        logger.info("routing table updated from the controller", metadata: ["version": "\(version)"])
                    }
                } catch {
                    if reachable {
                        logger.warning("controller unreachable; serving the last routing table", metadata: ["problem": "\(error)"])
                    }
                    reachable = false
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    /// A query value as the admin API reads it back (form encoding: `+`, `&`, `=` and `%` escaped).
    static func queryValue(_ text: String) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "+&=%")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}
