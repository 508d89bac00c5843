import Foundation
import Testing
@testable import GrayscaleCore

@Suite("Bot command grammar")
struct BotCommandTests {
    @Test("the design document's examples and the long forms", arguments: [
        ("@sls-release-bot -c -m sls_gray_test", BotCommand(action: .initialize, service: "sls_gray_test")),
        ("@sls-release-bot -g -m sls_gray_test -p 30", BotCommand(action: .gray(try! .parse(percent: "30"), nonAuthWeight: nil), service: "sls_gray_test")),
        ("@sls-release-bot -g -m sls_gray_test -p 20:55", BotCommand(action: .gray(try! .parse(percent: "20:55"), nonAuthWeight: nil), service: "sls_gray_test")),
        ("@sls-release-bot -f -m sls_gray_test", BotCommand(action: .finish(force: false), service: "sls_gray_test")),
        ("@sls-release-bot -r -m sls_gray_test", BotCommand(action: .rollback, service: "sls_gray_test")),
        ("@sls-release-bot -l -m sls_gray_test", BotCommand(action: .list, service: "sls_gray_test")),
        ("<@U0LAN0Z89> -g -m engine -p 0.5", BotCommand(action: .gray(try! .parse(percent: "0.5"), nonAuthWeight: nil), service: "engine")),
        ("<@U0LAN0Z89|sls-release-bot>   -g   -m engine   -p 20:55 --non-auth 10", BotCommand(action: .gray(try! .parse(percent: "20:55"), nonAuthWeight: 1000), service: "engine")),
        ("--gray --module engine --percent 30", BotCommand(action: .gray(try! .parse(percent: "30"), nonAuthWeight: nil), service: "engine")),
        ("--init --service engine", BotCommand(action: .initialize, service: "engine")),
        ("--finish --force -m engine", BotCommand(action: .finish(force: true), service: "engine")),
        ("-f -m engine --force", BotCommand(action: .finish(force: true), service: "engine")),
        ("--rollback -m engine", BotCommand(action: .rollback, service: "engine")),
        ("--list -m engine", BotCommand(action: .list, service: "engine")),
        ("rules -m engine", BotCommand(action: .rules, service: "engine")),
        ("--rules -m engine", BotCommand(action: .rules, service: "engine")),
        ("pause -m engine", BotCommand(action: .pause, service: "engine")),
        ("--pause -m engine", BotCommand(action: .pause, service: "engine")),
        ("resume -m engine", BotCommand(action: .resume, service: "engine")),
        ("--resume -m engine", BotCommand(action: .resume, service: "engine")),
        ("status -m engine", BotCommand(action: .status, service: "engine")),
        ("--status -m engine", BotCommand(action: .status, service: "engine")),
        ("help", BotCommand(action: .help, service: nil)),
        ("@sls-release-bot --help", BotCommand(action: .help, service: nil)),
        ("-h", BotCommand(action: .help, service: nil)),
        ("-m engine -g -p 5", BotCommand(action: .gray(try! .parse(percent: "5"), nonAuthWeight: nil), service: "engine")),
    ])
    func valid(text: String, expected: BotCommand) throws {
        #expect(try BotCommand.parse(text) == expected)
    }

    static let usage = BotCommand.usage

    /// Each malformed command and the exact first problem its reply names.
    static let malformed: [(String, String)] = [
        ("", "nothing to do"),
        ("   ", "nothing to do"),
        ("@sls-release-bot", "nothing to do"),
        ("<@U0LAN0Z89>", "nothing to do"),
        ("-x -m engine", "unknown option -x"),
        ("-g -m engine -p 30 --verbose", "unknown option --verbose"),
        ("deploy -m engine", "unexpected 'deploy'"),
        ("-g -m engine -p 55:20", "-p percent range '55:20': buckets run 0 to 99 and LOW must not exceed HIGH"),
        ("-g -m engine -p 101", "-p percent '101': expected a percent from 0 to 100 with at most two decimals (30, 0.5) or a range LOW:HIGH (20:55)"),
        ("-g -m engine -p -3", "-p percent '-3': expected a percent from 0 to 100 with at most two decimals (30, 0.5) or a range LOW:HIGH (20:55)"),
        ("-g -m engine -p 20:", "-p percent range '20:': expected whole percent buckets LOW:HIGH, e.g. 20:55"),
        ("-g -m engine -p :55", "-p percent range ':55': expected whole percent buckets LOW:HIGH, e.g. 20:55"),
        ("-g -m engine -p 20:100", "-p percent range '20:100': buckets run 0 to 99 and LOW must not exceed HIGH"),
        ("-g -m engine -p 0.125", "-p percent '0.125': expected a percent from 0 to 100 with at most two decimals (30, 0.5) or a range LOW:HIGH (20:55)"),
        ("-g -m engine -p thirty", "-p percent 'thirty': expected a percent from 0 to 100 with at most two decimals (30, 0.5) or a range LOW:HIGH (20:55)"),
        ("-g -m engine -p 30%", "-p percent '30%': expected a percent from 0 to 100 with at most two decimals (30, 0.5) or a range LOW:HIGH (20:55)"),
        ("-g -m engine -p", "-p needs a value"),
        ("-g -m engine", "-g needs -p <percent>, e.g. -p 30 or -p 20:55"),
        ("-g -p 30", "missing -m <service>"),
        ("-r", "missing -m <service>"),
        ("-g -m -p 30", "-m needs a value"),
        ("-m engine", "no action: give one of -g, -c, -f, -r, -l, rules, pause, resume, status, help"),
        ("-g -r -m engine", "two actions at once: -g and -r; give one"),
        ("-l -f -m engine", "two actions at once: -l and -f; give one"),
        ("pause resume -m engine", "two actions at once: pause and resume; give one"),
        ("-c -c -m engine", "two actions at once: -c and -c; give one"),
        ("-r -m engine -p 30", "-p only goes with -g"),
        ("-l -m engine --non-auth 5", "--non-auth only goes with -g"),
        ("-r -m engine --force", "--force only goes with -f"),
        ("-g -m engine -m events -p 30", "-m given twice"),
        ("-g -m engine -p 30 -p 40", "-p given twice"),
        ("-g -m Engine! -p 30", "-m: service name must be 1 to 64 lowercase letters, digits, '_' or '-', e.g. engine (got 'Engine!')"),
        ("-g -m engine -p 30 --non-auth 150", "--non-auth '150': expected a percent from 0 to 100"),
        ("-g -m engine -p 30 extra", "unexpected 'extra'"),
    ]

    @Test("malformed commands get a usage reply naming the first problem", arguments: malformed)
    func malformedCommand(text: String, problem: String) {
        let error = #expect(throws: BotCommandError.self) { try BotCommand.parse(text) }
        #expect(error?.description == "Sorry, I could not run that: \(problem).\n\(Self.usage)")
    }
}

@Suite("Bot replies (golden files)")
struct BotReplyTests {
    static let fixtures = Bundle.module.url(forResource: "bot-replies", withExtension: nil, subdirectory: "Fixtures")!

    func golden(_ name: String, _ reply: String) throws {
        let url = Self.fixtures.appendingPathComponent("\(name).txt")
        if ProcessInfo.processInfo.environment["GRAYSCALE_RECORD_GOLDEN"] == "1" {
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/bot-replies/\(name).txt")
            try reply.write(to: source, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOf: url, encoding: .utf8)
        #expect(reply == expected, "reply \(name) differs from its golden file")
    }

    func split(_ range: String?) throws -> TrafficSplit {
        TrafficSplit(service: "sls_gray_test", revision: 4, stable: ReleaseRef(number: 7, label: "v2.1.0"),
                     canary: try range.map { .init(release: ReleaseRef(number: 8, label: "v2.1.1"), salt: "9f3a0c1d2e4b5a69", range: try .parse(percent: $0)) },
                     nonAuthWeight: try range.map { try CanaryRange.parse(percent: $0).widthHundredths } ?? 0,
                     allowList: ["qa-1"], denyList: [], optInAllowed: true)
    }

    func rollout(manual: Bool, verdict: Verdict?) -> RolloutState {
        var state = RolloutState(service: "sls_gray_test", release: ReleaseRef(number: 8, label: "v2.1.1"), phase: manual ? .holding : .progressing,
                                 evidence: CanaryEvidence(policy: .standard), splitRevision: 4, now: Date(timeIntervalSince1970: 0))
        state.step = 1
        state.manual = manual
        state.lastVerdict = verdict
        return state
    }

    @Test("-g -p 20:55 in the design document's shape")
    func grayReply() throws {
        try golden("gray-20-55", BotReply.status(executor: "kaiyuzeng", status: "Done", split: split("20:55"),
                                                 rollout: rollout(manual: true, verdict: nil), steps: 5))
    }

    @Test("status with a passing verdict")
    func statusReply() throws {
        try golden("status-pass", BotReply.status(executor: "kaiyuzeng", status: "Done", split: split("5"),
                                                  rollout: rollout(manual: false, verdict: Verdict(.pass, "canary healthy: 0 of 120 requests failed")), steps: 5))
    }

    @Test("rollback")
    func rollbackReply() throws {
        try golden("rollback", BotReply.status(executor: "kaiyuzeng", status: "Done", split: split(nil), rollout: nil, steps: 5))
    }

    @Test("a refused finish")
    func refusedReply() throws {
        try golden("finish-refused", BotReply.status(
            executor: "kaiyuzeng", status: "Refused: the last verdict failed (canary p99 latency 9000 ms is over the 2000 ms bound); use --force to finish anyway",
            split: split("5"), rollout: rollout(manual: false, verdict: Verdict(.fail, "canary p99 latency 9000 ms is over the 2000 ms bound")), steps: 5))
    }

    @Test("rules")
    func rulesReply() throws {
        try golden("rules", BotReply.rules(executor: "kaiyuzeng", split: split("20:55"), policy: .standard))
    }

    @Test("help")
    func helpReply() throws {
        try golden("help", BotReply.help)
    }
}
