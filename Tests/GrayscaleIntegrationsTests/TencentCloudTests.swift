import Foundation
import GrayscaleTestSupport
import Testing
import GrayscaleCore
@testable import GrayscaleIntegrations

@Suite("Tencent Cloud TC3-HMAC-SHA256")
struct TencentCloudSignerTests {
    /// Tencent's documented example.
    let signer = TencentCloudSigner(secretId: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", secretKey: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
                                    service: "cvm", host: "cvm.tencentcloudapi.com")
    let payload = #"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#
    let timestamp = 1_551_113_065

    @Test("the canonical request")
    func canonicalRequest() {
        #expect(signer.canonicalRequest(payload: payload) == """
            POST
            /

            content-type:application/json; charset=utf-8
            host:cvm.tencentcloudapi.com

            content-type;host
            35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064
            """)
    }

    @Test("the string to sign")
    func stringToSign() {
        #expect(signer.stringToSign(payload: payload, timestamp: timestamp) == """
            TC3-HMAC-SHA256
            1551113065
            2019-02-25/cvm/tc3_request
            5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031
            """)
    }

    @Test("the documented signature and Authorization header")
    func signature() {
        #expect(signer.signature(payload: payload, timestamp: timestamp) == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168")
        #expect(signer.authorization(payload: payload, timestamp: timestamp) ==
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168")
    }
}

@Suite("SCF alias routing")
struct SCFAliasTests {
    func split(_ percent: String?) throws -> TrafficSplit {
        let range = try percent.map { try CanaryRange.parse(percent: $0) }
        return TrafficSplit(service: "engine", revision: 3, stable: ReleaseRef(number: 7, label: "v2.1.0"),
                            canary: range.map { .init(release: ReleaseRef(number: 8, label: "v2.1.1"), salt: "s8", range: $0) },
                            nonAuthWeight: range?.widthHundredths ?? 0)
    }

    func golden(_ name: String, _ payload: String) throws {
        if ProcessInfo.processInfo.environment["GRAYSCALE_RECORD_GOLDEN"] == "1" {
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/scf/\(name).json")
            try payload.write(to: source, atomically: true, encoding: .utf8)
        }
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures/scf"))
        #expect(payload == (try String(contentsOf: url, encoding: .utf8)), "UpdateAlias payload \(name) differs from its golden file")
    }

    @Test("split → UpdateAlias payloads for 0%, 1%, 20:55, 100% and a rollback", arguments: [
        ("zero", "0"), ("one-percent", "1"), ("twenty-to-fifty-five", "20:55"), ("everyone", "100"), ("rollback", nil),
    ] as [(String, String?)])
    func payloads(name: String, percent: String?) throws {
        try golden(name, SCFAlias.updateAliasPayload(function: "sls-engine", alias: "grayscale", namespace: "default",
                                                     routingHeader: "X-Grayscale-Bucket", split: split(percent)))
    }

    @Test("the routing header makes the platform pick the version the split chose, for users, lists and anonymous requests")
    func routingBucket() throws {
        var split = try split("20:55")
        split.denyList = ["vip"]
        split.allowList = ["tester"]
        let range = try CanaryRange.parse(percent: "20:55")
        func platformPicks(_ bucket: Int) -> RouteTarget { bucket >= 0 && range.contains(Bucket(bucket)) ? .canary : .stable }
        // Users: their own bucket; lists: a bucket that makes the platform agree.
        for appId in ["app-42", "app-43", "vip", "tester"] + (0..<500).map({ "user-\($0)" }) {
            let route = split.route(appId: appId, requestedChannel: nil, anonymousDraw: Bucket(0))
            let bucket = split.routingBucket(for: route)
            #expect(platformPicks(bucket) == route.target, "\(appId)")
            if route.reason == .inRange || route.reason == .outOfRange { #expect(bucket == Bucket.of(appId: appId, salt: "s8").value) }
        }
        // Anonymous requests: inside the range with the non-auth weight (36%), outside otherwise.
        var inside = 0
        for draw in 0..<10_000 {
            let route = split.route(appId: nil, requestedChannel: nil, anonymousDraw: Bucket(draw))
            let bucket = split.routingBucket(for: route)
            #expect(platformPicks(bucket) == route.target)
            if platformPicks(bucket) == .canary { inside += 1 }
        }
        #expect(inside == 3600, "anonymous requests inside the canary range: \(inside) of 10,000")
        // A canary for everyone: a denied user must still reach stable.
        let everyone = try self.split("100")
        var denied = everyone
        denied.denyList = ["vip"]
        #expect(denied.routingBucket(for: denied.route(appId: "vip")) == -1)
    }
}

@Suite("SCF traffic driver against a fake SCF API", .serialized)
struct SCFTrafficDriverTests {
    func driver(_ fake: FakeSCF, secretKey: String = FakeSCF.secretKey) -> SCFTrafficDriver {
        SCFTrafficDriver(client: TencentCloudClient(endpoint: fake.endpoint, service: "scf", version: "2018-04-16", region: "ap-guangzhou",
                                                    secretId: FakeSCF.secretId, secretKey: secretKey, baseBackoff: 0.01),
                         function: "sls-engine", alias: "grayscale")
    }

    func split(_ percent: String?) throws -> TrafficSplit {
        let range = try percent.map { try CanaryRange.parse(percent: $0) }
        return TrafficSplit(service: "engine", revision: 1, stable: ReleaseRef(number: 7, label: "v2.1.0"),
                            canary: range.map { .init(release: ReleaseRef(number: 8, label: "v2.1.1"), salt: "s8", range: $0) },
                            nonAuthWeight: range?.widthHundredths ?? 0)
    }

    func alias(_ fake: FakeSCF) -> (version: String?, expression: String?) {
        fake.state.withLockedValue { state in
            let alias = state.aliases["default/sls-engine/grayscale"]
            return (alias?.functionVersion, alias?.matches.first?["Expression"])
        }
    }

    @Test("a whole rollout and its rollback, each step read back; throttling in the middle is retried")
    func rollout() async throws {
        let fake = try FakeSCF()
        defer { fake.stop() }
        let driver = driver(fake)
        for (percent, expression) in [("1", "[0,100)"), ("5", "[0,500)"), ("20:55", "[2000,5600)"), ("50", "[0,5000)"), ("100", "[0,10000)")] {
            if percent == "20:55" { fake.state.withLockedValue { $0.injectedErrors = ["RequestLimitExceeded", "RequestLimitExceeded"] } }
            try await driver.apply(split(percent))
            #expect(alias(fake).version == "7")
            #expect(alias(fake).expression == expression)
        }
        try await driver.apply(split(nil))  // rollback: the stable version only
        #expect(alias(fake).version == "7")
        #expect(alias(fake).expression == nil)
        let calls = fake.state.withLockedValue { $0.calls }
        #expect(calls.filter { $0 == "UpdateAlias" }.count == 8, "6 splits plus 2 throttled attempts")
        #expect(calls.filter { $0 == "GetAlias" }.count == 6)
        #expect(try await driver.publishVersion(description: "v2.1.2") == 2)
        #expect(try await driver.versions() == [1, 2])
    }

    @Test("a read-back mismatch is an error with Tencent's request id, not a success")
    func mismatch() async throws {
        let fake = try FakeSCF()
        defer { fake.stop() }
        fake.state.withLockedValue { $0.corruptReadBack = true }
        let error = await #expect(throws: TencentCloudError.self) { try await driver(fake).apply(split("5")) }
        #expect(error?.code == "ReadBackMismatch")
        #expect(error?.requestId?.isEmpty == false)
    }

    @Test("a wrong key is an auth failure, not retried; resource errors are not retried either")
    func authFailure() async throws {
        let fake = try FakeSCF()
        defer { fake.stop() }
        let error = await #expect(throws: TencentCloudError.self) { try await driver(fake, secretKey: "wrong").apply(split("5")) }
        #expect(error?.code == "AuthFailure.SignatureFailure")
        #expect(error?.requestId != nil)
        fake.state.withLockedValue { $0.injectedErrors = ["ResourceNotFound.Function"] }
        let missing = await #expect(throws: TencentCloudError.self) { try await driver(fake).apply(split("5")) }
        #expect(missing?.code == "ResourceNotFound.Function")
        #expect(fake.state.withLockedValue { $0.calls.count } == 1, "neither error may be retried")
    }
}

@Suite("grayscale release publish --scf-function", .serialized)
struct SCFPublishCLITests {
    @Test("publishes a new SCF version and records it as the release number")
    func publish() throws {
        let fake = try FakeSCF()
        defer { fake.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-scf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("grayscale")
        process.arguments = ["release", "publish", "--service", "engine", "--scf-function", "sls-engine", "--scf-endpoint", fake.endpoint,
                             "--label", "v2.1.1", "--upstream", "http://127.0.0.1:9000", "--db", directory.appendingPathComponent("g.sqlite").path,
                             "--format", "json"]
        var environment = ProcessInfo.processInfo.environment
        environment["TENCENTCLOUD_SECRET_ID"] = FakeSCF.secretId
        environment["TENCENTCLOUD_SECRET_KEY"] = FakeSCF.secretKey
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let release = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(release["number"] as? Int == 2)
        #expect(release["status"] as? String == "stable")
        #expect(fake.state.withLockedValue { $0.calls } == ["PublishVersion"])
    }
}
