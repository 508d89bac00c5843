import Foundation
import GrayscaleCore
import GrayscaleProxy
import GrayscaleStore
import GrayscaleTestSupport
import NIOCore
import NIOConcurrencyHelpers
import NIOHTTP1
import NIOPosix
import Testing

/// An upstream that takes connections and reads every byte but never answers, like a
/// canary that hangs; `stop` closes every connection it took (and stops listening).
final class SilentUpstream: Sendable {
    let server: Channel
    private let accepted = NIOLockedValueBox<[Channel]>([])

    init(group: EventLoopGroup) async throws {
        let accepted = self.accepted
        server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                // Known once active: a channel closed before its registration completes would stay open after it.
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Taker(accepted: accepted)) }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    var url: String { "http://127.0.0.1:\(server.localAddress!.port!)" }

    /// Connections taken so far.
    var connections: Int { accepted.withLockedValue { $0.count } }

    /// Keeps each connection once it is active, and drops what it reads.
    final class Taker: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let accepted: NIOLockedValueBox<[Channel]>
        init(accepted: NIOLockedValueBox<[Channel]>) { self.accepted = accepted }
        func channelActive(context: ChannelHandlerContext) {
            let channel = context.channel
            accepted.withLockedValue { $0.append(channel) }
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }

    func stop() async {
        try? await server.close()
        for channel in accepted.withLockedValue({ $0 }) {
            // Shut down first: a test process that forks (the CLI's, PostgreSQL's) may hold a copy of the descriptor,
            // and a plain close sends no FIN while another copy is open.
            try? await channel.close(mode: .output)
            try? await channel.close()
        }
    }
}

@Suite("Mirrored requests through the proxy", .serialized)
struct MirrorProxyTests {
    static func mirror(_ harness: ProxyHarness, percent: Int) throws {
        try harness.database.setMirror("engine", share: percent * 100, by: Attribution(actor: "test"), at: Date())
        harness.proxy.update(try harness.table())
    }

    static func pairs(_ harness: ProxyHarness) -> MirrorPairs {
        var pairs = MirrorPairs()
        for version in harness.proxy.statistics.snapshot().versions where version.release == 8 {
            for window in version.windows { if let more = window.evidence?.mirror { pairs.merge(more) } }
        }
        return pairs
    }

    /// Waits (up to 30 s) until `count` pairs were recorded.
    static func waitForPairs(_ harness: ProxyHarness, _ count: Int) async throws -> MirrorPairs {
        for _ in 0..<300 {
            let pairs = Self.pairs(harness)
            if pairs.pairs >= count { return pairs }
            try await Task.sleep(for: .milliseconds(100))
        }
        return Self.pairs(harness)
    }

    @Test("a canary that hangs: every user gets stable's answer while no mirrored copy has been answered; the copies end as the canary's failures")
    func hangingCanary() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let hanging = try await SilentUpstream(group: group)
        // Nothing times out during the test (10 minutes): while the canary hangs, no copy can end.
        try await ProxyHarness.run(configuration: ProxyConfiguration(port: 0, upstreamResponseTimeout: .seconds(600)), canaryUpstream: hanging.url) { harness in
            try Self.mirror(harness, percent: 100)
            let responses = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                var responses: [TestResponse] = []
                for index in 0..<40 {
                    responses.append(try await client.send("/deploy?n=\(index)", headers: [ProxyHarness.bearer("app-\(index)")]))
                }
                return responses
            }
            // Answered, all of them, while the canary has answered none of its copies: the users did not wait for it.
            #expect(Self.pairs(harness).pairs == 0, "no copy can have ended: the canary answers nothing")
            #expect(responses.count == 40)
            #expect(responses.allSatisfy { $0.status == 200 && $0.version == "engine@7 (v2.1.0)" && $0.body.hasPrefix("version 7 path /deploy") })
            // Every copy has its own connection: once all 40 are taken, the canary goes away and closes them unanswered.
            for _ in 0..<600 where hanging.connections < 40 { try await Task.sleep(for: .milliseconds(100)) }
            #expect(hanging.connections == 40)
            await hanging.stop()
            let pairs = try await Self.waitForPairs(harness, 40)
            #expect(pairs.pairs == 40)
            #expect(pairs.canaryOnlyFailures == 40, "a copy the canary never answers is its failure")
            let canary = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }
            #expect(canary?.totals.requests ?? 0 == 0, "copies are never the canary's requests: no user saw them")
            harness.accessLog.flush()
            let log = try String(contentsOfFile: harness.accessLogPath, encoding: .utf8)
            #expect(log.components(separatedBy: #""route":"mirror""#).count - 1 == 40)
        }
        await hanging.stop()
        try await group.shutdownGracefully()
    }

    @Test("a copy the canary does not answer in time ends as its timeout (504 in the access log), on the proxy's upstream timeout")
    func mirrorTimeout() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let hanging = try await SilentUpstream(group: group)
        try await ProxyHarness.run(configuration: ProxyConfiguration(port: 0, upstreamResponseTimeout: .seconds(1)), canaryUpstream: hanging.url) { harness in
            try Self.mirror(harness, percent: 100)
            let response = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                try await client.send("/deploy", headers: [ProxyHarness.bearer("app-1")])
            }
            #expect(response.status == 200)
            let pairs = try await Self.waitForPairs(harness, 1)
            #expect(pairs.pairs == 1)
            #expect(pairs.canaryOnlyFailures == 1)
            harness.accessLog.flush()
            let log = try String(contentsOfFile: harness.accessLogPath, encoding: .utf8)
            let line = try #require(log.split(separator: "\n").first { $0.contains(#""route":"mirror""#) })
            #expect(line.contains(#""status":504"#) && line.contains("did not answer the mirrored request in time"), "\(line)")
        }
        await hanging.stop()
        try await group.shutdownGracefully()
    }

    @Test("a canary that fails (500 for some names, or refused connections): users get exactly stable's answers; only safe requests are copied; a copy that cannot connect makes no pair")
    func failingCanary() async throws {
        for canaryUpstream in [nil, "http://127.0.0.1:1"] {
            try await ProxyHarness.run(canaryUpstream: canaryUpstream) { harness in
                // Stable's answers without any mirror, then the same requests with every one copied.
                let requests: [(HTTPMethod, String, String?)] = (0..<20).flatMap { index in
                    [(.GET, "/deploy?name=dotted.name&i=\(index)", nil), (.GET, "/deploy?name=plain&i=\(index)", nil),
                     (.HEAD, "/deploy?name=dotted.name&i=\(index)", nil), (.POST, "/deploy?name=dotted.name&i=\(index)", "{}")]
                }
                func ask() async throws -> [TestResponse] {
                    try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                        var responses: [TestResponse] = []
                        for (method, path, body) in requests {
                            responses.append(try await client.send(method, path, headers: [ProxyHarness.bearer("app-1")], body: body))
                        }
                        return responses
                    }
                }
                let plain = try await ask()
                try Self.mirror(harness, percent: 100)
                let mirrored = try await ask()
                #expect(mirrored.map(\.status) == plain.map(\.status))
                #expect(mirrored.map(\.body) == plain.map(\.body))
                #expect(mirrored.map(\.version) == plain.map(\.version))
                #expect(mirrored.allSatisfy { $0.status == 200 })
                if canaryUpstream == nil {
                    let pairs = try await Self.waitForPairs(harness, 60)
                    #expect(pairs.pairs == 60, "GET and HEAD are copied, POST never")
                    #expect(pairs.canaryOnlyFailures == 40, "dotted names fail on release 8 (GET and HEAD)")
                    #expect(pairs.stableOnlyFailures == 0)
                } else {
                    // A copy that cannot connect makes no pair: stable's request went on a pooled connection, the copy on a
                    // new one, so a failure to connect (a full accept queue, no local port) would fall on the canary alone.
                    var lines = 0
                    for _ in 0..<300 where lines < 60 {
                        try await Task.sleep(for: .milliseconds(100))
                        harness.accessLog.flush()
                        lines = (try String(contentsOfFile: harness.accessLogPath, encoding: .utf8)).components(separatedBy: #""route":"mirror""#).count - 1
                    }
                    #expect(lines == 60, "each copy is logged, with why it failed")
                    #expect(Self.pairs(harness).pairs == 0)
                }
                let canary = harness.proxy.statistics.snapshot().versions.first { $0.release == 8 }
                #expect(canary?.totals.requests ?? 0 == 0)
                #expect(canary?.totals.affectedUsers ?? 0 == 0, "no user was hurt")
            }
        }
    }

    @Test("the copy goes only once stable has answered: the canary never wins a race on shared state against the user's own request")
    func copyAfterStable() async throws {
        try await ProxyHarness.runWithRecordingCanary { harness, recording in
            try Self.mirror(harness, percent: 100)
            let port = harness.port, group = harness.clientGroup
            // Stable answers /slow after 3 s.
            let user = Task {
                try await TestHTTPClient.withConnection(port: port, group: group) { client in
                    try await client.send("/slow", headers: [ProxyHarness.bearer("app-1")])
                }
            }
            let asked = Date()
            try await Task.sleep(for: .seconds(1))
            let copiesMeanwhile = recording.requests.withLockedValue { $0 }
            // Only while stable surely has not answered (a loaded machine may wake this task after its 3 s): no copy may have gone.
            if Date().timeIntervalSince(asked) < 2.5 {
                #expect(copiesMeanwhile.isEmpty, "stable has not answered yet: no copy may have gone")
            }
            let response = try await user.value
            #expect(response.status == 200 && response.version == "engine@7 (v2.1.0)")
            _ = try await Self.waitForPairs(harness, 1)
            #expect(recording.requests.withLockedValue { $0 } == ["GET /slow"])
            #expect(recording.received.lowercased().contains("x-grayscale-route: mirror"))
        }
    }

    @Test("an A/A test through the real proxy: a canary that is the same software as stable (another instance of it) gathers no evidence against itself")
    func sameSoftwareNoEvidence() async throws {
        let harness = try ProxyHarness()
        let twin = try await VersionUpstream(version: 7, group: harness.group)  // stable's code, deployed again as the canary
        do {
            try await harness.start(canaryUpstream: twin.url)
            try Self.mirror(harness, percent: 100)
            let port = harness.port, group = harness.clientGroup
            // Eight keep-alive clients, 600 requests: stable's connections are pooled and reused, each copy's is new.
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for worker in 0..<8 {
                    tasks.addTask {
                        try await TestHTTPClient.withConnection(port: port, group: group) { client in
                            for index in 0..<75 {
                                // One request in ten fails on either version alike (a missing backend): concordant.
                                let path = index % 10 == 0 ? "/status/503" : "/deploy?n=\(worker)-\(index)"
                                _ = try await client.send(path, headers: [ProxyHarness.bearer("app-\(worker)-\(index % 7)")])
                            }
                        }
                    }
                }
                try await tasks.waitForAll()
            }
            let pairs = try await Self.waitForPairs(harness, 600)
            var test = MirrorTest(weight: 1, latencyEffectMs: 50)
            test.update(pairs)
            let compared = pairs.canaryNotSlower + pairs.canarySlowerBy.reduce(0, +)
            print("A/A through the proxy: \(pairs.pairs) pairs, \(pairs.bothFailed) failed on both, \(pairs.canaryOnlyFailures) on the canary only, "
                  + "\(pairs.stableOnlyFailures) on stable only; latency compared in \(compared) (both on kept-alive connections), "
                  + "\(pairs.canarySlower(byMoreThan: 50)) with the canary slower by more than 50 ms; mirror e-value \(exp(test.logE))")
            #expect(compared >= 300, "the copies' connections are kept alive like stable's: most pairs compare latency")
            #expect(pairs.pairs == 600)
            #expect(pairs.bothFailed == 64, "the 503s (8 of each client's 75) fail on both and weigh nothing")
            #expect(pairs.canaryOnlyFailures == 0 && pairs.stableOnlyFailures == 0, "the same software fails the same requests")
            #expect(test.logE <= 0, "no evidence against the same software: the mirror e-value stays at or below 1")
        } catch {
            try? await twin.stop()
            await harness.stop()
            throw error
        }
        try? await twin.stop()
        await harness.stop()
    }

    @Test("routes the policy marks safe are copied too, with their body; other methods never")
    func routesMarkedSafe() async throws {
        try await ProxyHarness.runWithRecordingCanary { harness, recording in
            try harness.database.setMirror("engine", share: 10_000, routes: [MirrorRoute(method: "POST", pathPrefix: "/v1/query")!],
                                           by: Attribution(actor: "test"), at: Date())
            harness.proxy.update(try harness.table())
            try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                _ = try await client.send(.POST, "/v1/query?from=1", headers: [ProxyHarness.bearer("app-1")], body: #"{"select":"apps"}"#)
                _ = try await client.send(.POST, "/deploy", headers: [ProxyHarness.bearer("app-1")], body: #"{"name":"x"}"#)
                _ = try await client.send("/apps", headers: [ProxyHarness.bearer("app-1")])
            }
            let pairs = try await Self.waitForPairs(harness, 2)
            #expect(pairs.pairs == 2)
            #expect(Set(recording.requests.withLockedValue { $0 }) == ["POST /v1/query?from=1", "GET /apps"])
            #expect(recording.received.contains(#"{"select":"apps"}"#), "the copy carries the body")
            #expect(!recording.received.contains("/deploy"))
        }
    }

    @Test("no copies without a mirror share; a new range ends them")
    func onlyWhenAsked() async throws {
        try await ProxyHarness.run { harness in
            try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                for index in 0..<20 { _ = try await client.send("/deploy?i=\(index)", headers: [ProxyHarness.bearer("app-\(index)")]) }
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(Self.pairs(harness).pairs == 0)
            try Self.mirror(harness, percent: 100)
            try harness.setCanary("0:9")  // the first step: its users end the copies
            #expect(try harness.database.serviceState("engine").split?.canary?.mirror == nil)
        }
    }
}
