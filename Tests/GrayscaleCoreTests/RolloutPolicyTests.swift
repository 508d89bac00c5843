import Foundation
import Testing
@testable import GrayscaleCore
import GrayscaleEdges

@Suite("Rollout policies")
struct RolloutPolicyTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let topFields = "name, service, steps, stepMinimum, nonAuthWeight, analysis, window, smokeChecks, slack, allowList, denyList, optIn, holdback, announce, rollback, mirror, webSocketDrain"

    /// Every broken policy in Fixtures/broken-policies and the exact error it must give.
    static let broken: [(file: String, message: String)] = [
        ("steps-decrease", "steps-decrease.yaml:5: steps: must increase (got 25 after 50)"),
        ("unknown-field", "unknown-field.yaml:3: stepz: unknown field (known fields: \(topFields))"),
        ("bad-duration", "bad-duration.yaml:2: stepMinimum: expected a duration such as 30s, 10m or 1h30m (got '10 minutes')"),
        ("bad-day", "bad-day.yaml:4: window.days: 'wendesday' is not a day of the week (monday … sunday)"),
        ("bad-timezone", "bad-timezone.yaml:3: window.timeZone: unknown time zone 'Mars/Olympus_Mons' (use an IANA name such as Asia/Shanghai or UTC)"),
        ("window-backwards", "window-backwards.yaml:3: window.end: end must be after start (got 18:00–14:00)"),
        ("alpha-too-large", "alpha-too-large.yaml:3: analysis.errorRate.alpha: must be greater than 0.0 and at most 0.5 (got '0.7')"),
        ("min-requests-text", "min-requests-text.yaml:3: analysis.minRequests: expected a whole number (got 'plenty')"),
        ("step-over-100", "step-over-100.yaml:1: steps[2]: expected a percent from 0 to 100 with at most two decimals (got '150')"),
        ("syntax-error", "syntax-error.yaml:2: yaml: while parsing a flow sequence did not find expected ',' or ']'"),
        ("allow-and-deny", "allow-and-deny.yaml:3: denyList: appId 'qa-2' is also on the allow list"),
        ("smoke-path", "smoke-path.yaml:3: smokeChecks[0].path: must start with / (got 'healthz')"),
        ("nested-unknown", "nested-unknown.yaml:4: analysis.errorRate.alfa: unknown field (known fields: alpha, beta, detectRatio)"),
        ("empty", "empty.yaml:1: document: the file is empty"),
        ("steps-not-list", "steps-not-list.yaml:1: steps: expected a list (got '25')"),
    ]

    @Test("a broken policy names the file, the line and the field", arguments: broken)
    func brokenPolicy(file: String, message: String) throws {
        let url = try #require(Bundle.module.url(forResource: file, withExtension: "yaml", subdirectory: "Fixtures/broken-policies"))
        let error = #expect(throws: GrayscaleError.self) { try RolloutPolicy.load(path: url.path) }
        let directory = url.deletingLastPathComponent().path + "/"
        #expect(error?.message == directory + message)
    }

    @Test("default.yaml spells out exactly the built-in defaults")
    func defaultFileMatchesBuiltIn() throws {
        let policy = try RolloutPolicy.load(path: Self.repositoryRoot.appendingPathComponent("policies/default.yaml").path)
        #expect(policy == RolloutPolicy.standard)
    }

    @Test("every shipped policy parses, and service policies override the defaults")
    func shippedPolicies() throws {
        let folder = Self.repositoryRoot.appendingPathComponent("policies")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }
        #expect(files.count >= 2)
        for file in files { _ = try RolloutPolicy.load(path: folder.appendingPathComponent(file).path) }

        let engine = try RolloutPolicy.load(path: folder.appendingPathComponent("engine.yaml").path)
        #expect(engine.name == "engine")
        #expect(engine.service == "engine")
        #expect(engine.steps == [50, 200, 1000, 2500, 5000, 10_000])
        #expect(engine.stepMinimum == 15 * 60)
        #expect(engine.analysis.latency.minDifferenceMs == 100)
        #expect(engine.allowList == ["sls-internal-qa", "sls-internal-ci"])
        #expect(engine.holdback == RolloutPolicy.standard.holdback)
        #expect(engine.analysis.errorRate.beta == RolloutPolicy.standard.analysis.errorRate.beta)
        #expect(engine.smokeChecks.map(\.path) == ["/healthz", "/v1/deploy/dry-run"])
        #expect(engine.smokeChecks[1].timeout == 10)
        #expect(engine.optIn)
    }

    @Test("a fixed non-auth weight, latency not judged, a holdback")
    func nonAuthAndNullBound() throws {
        let policy = try RolloutPolicy.parse("""
            nonAuthWeight: 12.5
            holdback: 2.5
            analysis:
              latency:
                minDifferenceMs: null
            """, file: "inline.yaml")
        #expect(policy.nonAuthWeight == .fixed(1250))
        #expect(policy.analysis.latency.minDifferenceMs == nil)
        #expect(policy.holdback == 250)
        #expect(policy.width(ofStep: policy.steps.count - 1) == 9750)
        #expect(policy.width(ofStep: 0) == 100)
        // Where a split set by hand (or resumed) stands: the held-back last step counts as the last.
        #expect([50, 100, 7999, 9750, 10_000].map(policy.step(forWidth:)) == [-1, 0, 3, 4, 4])
    }

    @Test("removed checks are refused with the reason, at their line")
    func removedFields() {
        let cases: [(String, String)] = [
            ("analysis:\n  failureLimit: 2\n", "removed.yaml:2: analysis.failureLimit: no longer supported: every check spends the rollout's one α, so a failing check rolls back at once"),
            ("analysis:\n  errorRate:\n    maxRate: 0.05\n", "removed.yaml:3: analysis.errorRate.maxRate: no longer supported: a fixed bound judged every interval rolled good releases back on noise; the canary is judged against stable"),
            ("analysis:\n  latency:\n    p99MaxRatio: 1.3\n", "removed.yaml:3: analysis.latency.p99MaxRatio: no longer supported: percentiles of one interval are noise and were judged outside α; latency is now one anytime-valid test of the whole distribution with minDifferenceMs as its minimum effect"),
            ("steps: [5, 97, 100]\nholdback: 5\n", "removed.yaml:2: holdback: step 97% is not below 100% minus the holdback (95%)"),
            ("steps: [5, 90, 100]\n", "removed.yaml:1: holdback: step 90% is not below 100% minus the holdback (80%)"),
        ]
        for (text, message) in cases {
            #expect(throws: GrayscaleError(message)) { try RolloutPolicy.parse(text, file: "removed.yaml") }
        }
    }

    @Test("durations read and print back")
    func durations() {
        #expect(parseDuration("90s") == 90)
        #expect(parseDuration("1h30m") == 5400)
        #expect(parseDuration("2d") == 172_800)
        #expect(parseDuration("10") == nil)
        #expect(parseDuration("m") == nil)
        #expect(parseDuration("5 m") == nil)
        #expect(formatDuration(5400) == "1h30m")
        #expect(formatDuration(61) == "1m1s")
    }
}
