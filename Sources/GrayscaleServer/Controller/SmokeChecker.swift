import Foundation
import GrayscaleCore
import GrayscaleIntegrations

/// Runs a policy's smoke checks against a release's upstream directly, through libcurl.
public struct SmokeChecker: Sendable {
    public let client: CurlHTTPClient

    public init(client: CurlHTTPClient = CurlHTTPClient()) { self.client = client }

    public func run(_ checks: [RolloutPolicy.SmokeCheck], release: ReleaseRef, upstream: String) async -> SmokeOutcome {
        var results: [SmokeOutcome.Check] = []
        let base = upstream.hasSuffix("/") ? String(upstream.dropLast()) : upstream
        for check in checks {
            do {
                let response = try await client.send(OutboundRequest(
                    method: check.method, url: base + check.path,
                    headers: [("X-Grayscale-Smoke-Check", check.name)], body: check.method == "POST" ? Data() : nil,
                    timeout: Double(check.timeout)))
                let passed = response.status == check.expectStatus
                results.append(.init(name: check.name, passed: passed,
                                     detail: "\(check.method) \(check.path): HTTP \(response.status)\(passed ? "" : ", expected \(check.expectStatus)")"))
            } catch {
                results.append(.init(name: check.name, passed: false, detail: error.message))
            }
        }
        return SmokeOutcome(release: release.number, checks: results)
    }
}
