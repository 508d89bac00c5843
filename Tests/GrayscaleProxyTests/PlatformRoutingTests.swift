import Foundation
import GrayscaleCore
import GrayscaleProxy
import GrayscaleStore
import GrayscaleTestSupport
import NIOPosix
import Testing

/// Issue 16's platform releases through the proxy: 10,000 users ask each of three
/// services of one platform release; every user is on the same side of all three.
@Suite("Platform releases through the proxy", .serialized)
struct HeavyPlatformRoutingTests {
    static let services = ["engine", "registry", "events"]

    /// `paths` pipelined on one connection, 500 at a time; the upstream version of each answer, in order.
    static func versions(port: Int, requests: [String]) throws -> [Int] {
        let socket = try RawSocket(port: port, timeout: 30)
        var versions: [Int] = []
        var scanned = 0
        let marker = Array("\r\nx-upstream-version: ".utf8)
        for start in stride(from: 0, to: requests.count, by: 500) {
            let batch = requests[start..<min(start + 500, requests.count)]
            try socket.send(batch.joined())
            let want = start + batch.count
            socket.receive { bytes in
                // Each answer's version header, looking at each byte once.
                while scanned + marker.count + 2 <= bytes.count {
                    if bytes[scanned] == marker[0], bytes[scanned..<scanned + marker.count].elementsEqual(marker) {
                        var end = scanned + marker.count
                        var value = 0
                        while end < bytes.count, bytes[end] >= 0x30, bytes[end] <= 0x39 {
                            value = value * 10 + Int(bytes[end] - 0x30)
                            end += 1
                        }
                        guard end < bytes.count else { break }  // the number may go on in the next read
                        versions.append(value)
                        scanned = end
                    } else {
                        scanned += 1
                    }
                }
                return versions.count >= want
            }
            guard versions.count >= want else { break }
        }
        return versions
    }

    @Test("10,000 users across engine, registry and events of one platform release: each user is on the same side of every service")
    func sameSideEverywhere() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-platform-proxy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let database = try GrayscaleDatabase.open(path: directory.appendingPathComponent("grayscale.sqlite").path)
        var upstreams: [VersionUpstream] = []
        let who = Attribution(actor: "test")
        var drafts: [ReleaseDraft] = []
        for (index, service) in Self.services.enumerated() {
            let stable = try await VersionUpstream(version: 10 * index + 7, group: group)
            let canary = try await VersionUpstream(version: 10 * index + 8, group: group)
            upstreams += [stable, canary]
            try database.publish(ReleaseDraft(service: service, number: 10 * index + 7, label: "v\(index).0", upstream: stable.url),
                                 salt: "own-salt-\(service)", by: who, at: Date())
            drafts.append(ReleaseDraft(service: service, number: 10 * index + 8, label: "v\(index).1", upstream: canary.url, platform: "2.1.1"))
        }
        try database.publishPlatform("2.1.1", drafts, salt: Salt.random(), by: who, at: Date())
        for service in Self.services {
            try database.setCanaryTraffic(service, range: .parse(percent: "20:55"), by: who, at: Date())
        }
        let matching = ServiceMatching(prefixes: Self.services.map { ("/\($0)", $0) })
        let proxy = ProxyServer(configuration: ProxyConfiguration(port: 0, matching: matching),
                                table: RoutingTable(states: try database.allServiceStates(), matching: matching), group: group)
        let port = try await proxy.start().port!

        let users = (0..<10_000).map { "user-\($0)" }
        let tokens = users.map { makeJWT(["appId": $0]) }
        var sides: [String: [Bool]] = [:]
        for (index, service) in Self.services.enumerated() {
            let requests = tokens.map { "GET /\(service)/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \($0)\r\n\r\n" }
            let versions = try Self.versions(port: port, requests: requests)
            #expect(versions.count == users.count, "\(service): \(versions.count) answers of \(users.count)")
            #expect(Set(versions).isSubset(of: [10 * index + 7, 10 * index + 8]), "\(service): \(Set(versions))")
            sides[service] = versions.map { $0 == 10 * index + 8 }
        }
        let engine = try #require(sides["engine"]), registry = try #require(sides["registry"]), events = try #require(sides["events"])
        let mixed = (0..<users.count).filter { engine[$0] != registry[$0] || engine[$0] != events[$0] }
        #expect(mixed.isEmpty, "\(mixed.count) users are on the canary of one service and on stable of another, e.g. \(mixed.prefix(3).map { users[$0] })")
        // The cohort is the platform's salt's buckets 2,000–5,599: 36% of the users.
        let salt = try #require(try database.serviceState("engine").canary?.salt)
        let range = try CanaryRange.parse(percent: "20:55")
        let expected = users.map { range.contains(Bucket.of(appId: $0, salt: salt)) }
        #expect(engine == expected)
        let share = Double(engine.filter { $0 }.count) / Double(users.count)
        #expect(abs(share - 0.36) < 0.03, "\(share)")

        try await proxy.stop()
        for upstream in upstreams { try? await upstream.stop() }
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }
}
