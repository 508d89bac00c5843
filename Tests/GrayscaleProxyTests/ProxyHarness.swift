import Crypto
import Foundation
import GrayscaleCore
import GrayscaleProxy
import GrayscaleStore
import GrayscaleTestSupport
import NIOCore
import NIOPosix

func hmacSHA256(key: [UInt8], message: [UInt8]) -> Data {
    Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
}

/// A proxy in front of two real upstreams (stable 7, canary 8) over loopback, with
/// its split in a real SQLite file.
final class ProxyHarness {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let directory: URL
    let database: GrayscaleDatabase
    var stable: VersionUpstream!
    var canary: VersionUpstream!
    var proxy: ProxyServer!
    var accessLog: AccessLog!
    var port = 0

    static let canarySalt = "proxy-test-salt"

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-proxy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        database = try GrayscaleDatabase.open(path: directory.appendingPathComponent("grayscale.sqlite").path)
    }

    var accessLogPath: String { directory.appendingPathComponent("access.log").path }

    /// Starts the upstreams and the proxy; `canaryUpstream` may point at a dead port.
    func start(configuration: ProxyConfiguration = ProxyConfiguration(port: 0), canaryUpstream: String? = nil,
               metrics: RequestMetrics? = nil) async throws {
        stable = try await VersionUpstream(version: 7, group: group)
        canary = try await VersionUpstream(version: 8, group: group)
        let who = Attribution(actor: "test")
        try database.publish(ReleaseDraft(service: "engine", number: 7, label: "v2.1.0", upstream: stable.url), salt: "s7", by: who, at: Date())
        try database.publish(ReleaseDraft(service: "engine", number: 8, label: "v2.1.1", upstream: canaryUpstream ?? canary.url),
                             salt: Self.canarySalt, by: who, at: Date())
        var configuration = configuration
        configuration.port = 0
        accessLog = try AccessLog(path: accessLogPath, flushInterval: 0.01)
        proxy = ProxyServer(configuration: configuration, table: try table(), statistics: ProxyStatistics(windowSeconds: 1),
                            accessLog: accessLog, metrics: metrics, group: group)
        port = try await proxy.start().port!
    }

    func table() throws -> RoutingTable { RoutingTable(states: try database.allServiceStates()) }

    /// Writes a split to the database and swaps the proxy's table, as the watcher would.
    func setCanary(_ percent: String) throws {
        try database.setCanaryTraffic("engine", range: .parse(percent: percent), by: Attribution(actor: "test"), at: Date())
        proxy.update(try table())
    }

    func rollBack() throws {
        try database.rollBack("engine", by: Attribution(actor: "test"), at: Date())
        proxy.update(try table())
    }

    func stop() async {
        try? await proxy?.stop()
        accessLog?.close()
        try? await stable?.stop()
        try? await canary?.stop()
        try? await group.shutdownGracefully()
        try? await clientGroup.shutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }

    static func bearer(_ appId: String) -> (String, String) { ("authorization", "Bearer \(makeJWT(["appId": appId]))") }
}

extension ProxyHarness {
    /// Runs `body` against a started harness and always stops it afterwards.
    static func run(configuration: ProxyConfiguration = ProxyConfiguration(port: 0), canaryUpstream: String? = nil,
                    _ body: (ProxyHarness) async throws -> Void) async throws {
        let harness = try ProxyHarness()
        do {
            try await harness.start(configuration: configuration, canaryUpstream: canaryUpstream)
            try await body(harness)
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }

    /// `run`, with a canary that records what reaches it (started on the harness's loops, stopped after).
    static func runWithRecordingCanary(metrics: RequestMetrics? = nil, _ body: (ProxyHarness, RecordingUpstream) async throws -> Void) async throws {
        let harness = try ProxyHarness()
        let recording: RecordingUpstream
        do {
            recording = try await RecordingUpstream(group: harness.group)
        } catch {
            await harness.stop()  // its loops and its directory
            throw error
        }
        do {
            try await harness.start(canaryUpstream: recording.url, metrics: metrics)
            try await body(harness, recording)
        } catch {
            try? await recording.stop()
            await harness.stop()
            throw error
        }
        try? await recording.stop()
        await harness.stop()
    }
}
