import Foundation
import Testing
import GrayscaleCore

@Suite("grayscale CLI end to end")
struct CLITests {
    let cli: CLIRunner

    init() throws { cli = try CLIRunner() }

    func publishSevenAndEight() throws {
        for (number, label) in [(7, "v2.1.0"), (8, "v2.1.1")] {
            let output = try cli.run(["release", "publish", "--service", "engine", "--number", "\(number)", "--label", label,
                                      "--upstream", "http://127.0.0.1:90\(number)"])
            #expect(output.status == 0, "\(output.stderr)")
        }
    }

    @Test("publish two releases, set --range 20:55; a new process shows range 20–55 and non-auth weight 36")
    func rangeSurvivesRestart() throws {
        defer { cli.remove() }
        try publishSevenAndEight()
        let set = try cli.run(["traffic", "set", "--service", "engine", "--range", "20:55", "--as", "kaiyuzeng"])
        #expect(set.status == 0, "\(set.stderr)")
        #expect(set.stdout.contains("Canary Version 8(v 2.1.1) appid range: [20 - 55]"))
        #expect(set.stdout.contains("Non-Auth GrayScale Weight: 36%"))

        let shown = try #require(try cli.json(["traffic", "show", "--service", "engine"]) as? [String: Any])
        let canary = try #require(shown["canary"] as? [String: Any])
        let range = try #require(canary["range"] as? [String: Any])
        #expect(canary["number"] as? Int == 8)
        #expect(range["fromBucket"] as? Int == 2000)
        #expect(range["toBucket"] as? Int == 5600)
        #expect(range["text"] as? String == "[20 - 55]")
        #expect(shown["nonAuthWeightPercent"] as? Double == 36)
        #expect((shown["stable"] as? [String: Any])?["number"] as? Int == 7)

        // And once more from yet another process: nothing was kept only in memory.
        let again = try cli.run(["traffic", "show", "--service", "engine"])
        #expect(again.stdout.contains("appid range: [20 - 55]"))
    }

    @Test("release announce: the notes file goes to the policy's channel, the lead says when it may start, a second one changes nothing; announce-override needs a reason")
    func announce() throws {
        defer { cli.remove() }
        try publishSevenAndEight()
        let policies = cli.directory.appendingPathComponent("policies")
        try FileManager.default.createDirectory(at: policies, withIntermediateDirectories: true)
        try "service: engine\nannounce: 24h\nslack:\n  channel: \"#release\"\n".write(to: policies.appendingPathComponent("engine.yaml"),
                                                                                         atomically: true, encoding: .utf8)
        let notes = cli.directory.appendingPathComponent("notes.md")
        try "Engine v2.1.1: the name rule accepts dots again.\n".write(to: notes, atomically: true, encoding: .utf8)
        let announced = try cli.run(["release", "announce", "--service", "engine", "--number", "8", "--notes", notes.path,
                                     "--policies", policies.path])
        #expect(announced.status == 0, "\(announced.stderr)")
        #expect(announced.stdout.contains("Announced engine release 8"))
        #expect(announced.stdout.contains("in #release"))
        #expect(announced.stdout.contains("asks for 1d: it starts no earlier than Wed "))
        let outbox = try #require(try cli.json(["audit", "--service", "engine"]) as? [[String: Any]])
        #expect(outbox.contains { $0["action"] as? String == "announce" && $0["actor"] as? String == "cli-test" })
        let again = try cli.run(["release", "announce", "--service", "engine", "--number", "8", "--policies", policies.path])
        #expect(again.status == 0)
        #expect(again.stdout.contains("was announced before"))
        let stable = try cli.run(["release", "announce", "--service", "engine", "--number", "7", "--policies", policies.path])
        #expect(stable.status != 0)
        #expect(stable.stderr.contains("only a release still to roll out is announced"))
        let missingNotes = try cli.run(["release", "announce", "--service", "engine", "--number", "8", "--notes", "/nonexistent/notes.md"])
        #expect(missingNotes.status != 0)
        #expect(missingNotes.stderr.contains("/nonexistent/notes.md: cannot read the release notes"))
        let device = try cli.run(["release", "announce", "--service", "engine", "--number", "8", "--notes", "/dev/zero"])
        #expect(device.status != 0)
        #expect(device.stderr.contains("/dev/zero: cannot read the release notes (not a regular file)"))
        let noPolicies = try cli.run(["release", "announce", "--service", "engine", "--number", "8", "--policies", "/nonexistent/policies"])
        #expect(noPolicies.status != 0)
        #expect(noPolicies.stderr.contains("/nonexistent/policies: cannot read the policies folder"))
        let noReason = try cli.run(["rollout", "order", "--service", "engine", "announce-override"])
        #expect(noReason.status != 0)
        #expect(noReason.stderr.contains("announce-override needs --reason"))
        let noNumber = try cli.run(["rollout", "order", "--service", "engine", "announce-override", "--reason", "hotfix"])
        #expect(noNumber.status != 0)
        #expect(noNumber.stderr.contains("announce-override needs --number"))
        let override = try cli.run(["rollout", "order", "--service", "engine", "announce-override", "--number", "8",
                                    "--reason", "hotfix for incident 42"])
        #expect(override.status == 0, "\(override.stderr)")
    }

    @Test("release publish-platform: one salt for every service, traffic show --service platform lists them, announce --platform once; a bad manifest names file:line")
    func publishPlatform() throws {
        defer { cli.remove() }
        for (service, number) in [("engine", 7), ("registry", 4)] {
            let output = try cli.run(["release", "publish", "--service", service, "--number", "\(number)", "--label", "v\(number)",
                                      "--upstream", "http://127.0.0.1:90\(number)"])
            #expect(output.status == 0, "\(output.stderr)")
        }
        let manifest = cli.directory.appendingPathComponent("platform.yaml")
        try """
            platform: 2.1.1
            services:
              engine:   { number: 8, label: v2.1.1, upstream: "http://127.0.0.1:9008" }
              registry: { number: 5, label: v1.4.0, upstream: "http://127.0.0.1:9105" }
            """.write(to: manifest, atomically: true, encoding: .utf8)
        let published = try cli.run(["release", "publish-platform", manifest.path])
        #expect(published.status == 0, "\(published.stderr)")
        #expect(published.stdout.contains("Published platform release 2.1.1: 2 canaries with one salt"))
        let shown = try cli.run(["traffic", "show", "--service", "platform"])
        #expect(shown.stdout.contains("Platform release 2.1.1: engine Version 8(v 2.1.1) (canary), registry Version 5(v 1.4.0) (canary)"),
                "\(shown.stdout)")
        let splits = try #require(try cli.json(["traffic", "show", "--service", "platform"]) as? [[String: Any]])
        let salts = splits.compactMap { ($0["canary"] as? [String: Any])?["salt"] as? String }
        #expect(salts.count == 2 && Set(salts).count == 1, "\(salts)")
        let engine = try cli.run(["traffic", "show", "--service", "engine"])
        #expect(engine.stdout.contains("Platform release 2.1.1"))
        let policies = cli.directory.appendingPathComponent("policies")
        try FileManager.default.createDirectory(at: policies, withIntermediateDirectories: true)
        try "service: platform\nslack: {channel: \"#platform\"}\n".write(to: policies.appendingPathComponent("platform.yaml"), atomically: true, encoding: .utf8)
        let announced = try cli.run(["release", "announce", "--platform", "2.1.1", "--policies", policies.path])
        #expect(announced.status == 0, "\(announced.stderr)")
        #expect(announced.stdout.contains("Announced engine release 8") && announced.stdout.contains("Announced registry release 5"),
                "\(announced.stdout)")
        #expect(announced.stdout.contains("in #platform (platform release 2.1.1)"))
        let again = try cli.run(["release", "publish-platform", manifest.path])
        #expect(again.status != 0)
        #expect(again.stderr.contains("platform release 2.1.1 was published already"), "\(again.stderr)")
        try "platform: 2.1.2\nservices:\n  engine: {number: 9, label: v2.1.2}\n  registry: {number: 6, label: v1.4.1, upstream: \"http://h:1\"}\n"
            .write(to: manifest, atomically: true, encoding: .utf8)
        let bad = try cli.run(["release", "publish-platform", manifest.path])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("\(manifest.path):3: services.engine.upstream: required"), "\(bad.stderr)")
    }

    @Test("a duplicate or non-increasing release number is refused with a clear message")
    func duplicateNumber() throws {
        defer { cli.remove() }
        try publishSevenAndEight()
        let duplicate = try cli.run(["release", "publish", "--service", "engine", "--number", "8", "--label", "v2.1.2",
                                     "--upstream", "http://127.0.0.1:9009"])
        #expect(duplicate.status != 0)
        #expect(duplicate.stderr.contains("engine: release number 8 already exists (Version 8(v 2.1.1), canary); numbers are never reused"))
        let lower = try cli.run(["release", "publish", "--service", "engine", "--number", "3", "--label", "v1.0.0",
                                 "--upstream", "http://127.0.0.1:9003"])
        #expect(lower.stderr.contains("release number 3 is lower than the newest release 8"))
        let releases = try #require(try cli.json(["release", "list", "--service", "engine"]) as? [[String: Any]])
        #expect(releases.map { $0["number"] as? Int } == [8, 7])
        #expect(releases.map { $0["status"] as? String } == ["canary", "stable"])
    }

    @Test("traffic which explains the salt, the bucket and the rule")
    func which() throws {
        defer { cli.remove() }
        try publishSevenAndEight()
        try cli.run(["traffic", "set", "--service", "engine", "--percent", "100"])
        let answer = try #require(try cli.json(["traffic", "which", "--service", "engine", "--app-id", "app-42"]) as? [String: Any])
        let salt = try #require(answer["salt"] as? String)
        #expect(answer["bucket"] as? Int == Bucket.of(appId: "app-42", salt: salt).value)
        #expect(answer["target"] as? String == "canary")
        #expect(answer["reason"] as? String == "inRange")
        try cli.run(["traffic", "rules", "--service", "engine", "--deny", "app-42"])
        let denied = try #require(try cli.json(["traffic", "which", "--service", "engine", "--app-id", "app-42"]) as? [String: Any])
        #expect(denied["target"] as? String == "stable")
        #expect(denied["reason"] as? String == "denyList")
        #expect((denied["version"] as? [String: Any])?["number"] as? Int == 7)
    }

    @Test("rollback through the CLI sends everyone to stable and is in the audit log")
    func rollback() throws {
        defer { cli.remove() }
        try publishSevenAndEight()
        try cli.run(["traffic", "set", "--service", "engine", "--percent", "30"])
        let rolledBack = try cli.run(["release", "rollback", "--service", "engine", "--as", "oncall", "--reason", "errors up"])
        #expect(rolledBack.status == 0)
        #expect(rolledBack.stdout.contains("Canary: none (all traffic to stable)"))
        // No canary is `"canary": null`, as the README documents, not a missing key.
        let shown = try #require(try cli.json(["traffic", "show", "--service", "engine"]) as? [String: Any])
        #expect(shown.keys.contains("canary") && shown["canary"] is NSNull)
        let audit = try #require(try cli.json(["audit", "--service", "engine"]) as? [[String: Any]])
        let last = try #require(audit.last)
        #expect(last["action"] as? String == "rollback")
        #expect(last["actor"] as? String == "oncall")
        #expect(last["reason"] as? String == "errors up")
        #expect((last["command"] as? String)?.hasPrefix("grayscale release rollback") == true)
    }

    @Test("policy check reports file:line: field: reason and exits non-zero")
    func policyCheck() throws {
        defer { cli.remove() }
        let bad = cli.directory.appendingPathComponent("bad.yaml")
        try "steps: [5, 50]\nwindow:\n  days: [someday]\n".write(to: bad, atomically: true, encoding: .utf8)
        let output = try cli.run(["policy", "check", bad.path], database: false)
        #expect(output.status == 1)
        #expect(output.stdout.contains("\(bad.path):3: window.days: 'someday' is not a day of the week"))
    }

    @Test("two processes changing the same split at once never lose an update")
    func concurrentWriters() async throws {
        defer { cli.remove() }
        try publishSevenAndEight()
        let perProcess = 12
        let runner = cli
        async let first: [Int32] = Task.detached {
            try (1...perProcess).map { try runner.run(["traffic", "set", "--service", "engine", "--percent", "\($0)", "--as", "first"]).status }
        }.value
        async let second: [Int32] = Task.detached {
            try (1...perProcess).map { try runner.run(["traffic", "set", "--service", "engine", "--range", "60:\(60 + $0)", "--as", "second"]).status }
        }.value
        let statuses = try await first + second
        #expect(statuses.allSatisfy { $0 == 0 })

        let history = try #require(try cli.json(["traffic", "history", "--service", "engine"]) as? [[String: Any]])
        // Two publishes, then every one of the 24 changes, with contiguous revisions.
        #expect(history.count == 2 + 2 * perProcess)
        #expect(history.compactMap { $0["revision"] as? Int } == Array(1...history.count))
        func texts(by actor: String) -> [String] {
            history.filter { $0["actor"] as? String == actor }
                .compactMap { (($0["split"] as? [String: Any])?["canary"] as? [String: Any]).flatMap { ($0["range"] as? [String: Any])?["text"] as? String } }
        }
        #expect(texts(by: "first") == (1...perProcess).map { "[0 - \($0 - 1)]" })
        #expect(texts(by: "second") == (1...perProcess).map { "[60 - \(60 + $0)]" })

        // Each change saw the split the previous one left: no change was made on a stale read.
        let audit = try #require(try cli.json(["audit", "--service", "engine", "--limit", "100"]) as? [[String: Any]])
        let sets = audit.filter { $0["action"] as? String == "set-traffic" }
        #expect(sets.count == 2 * perProcess)
        for (previous, next) in zip(sets, sets.dropFirst()) {
            let after = (previous["splitAfter"] as? [String: Any])?["revision"] as? Int
            let before = (next["splitBefore"] as? [String: Any])?["revision"] as? Int
            #expect(after != nil && after == before)
        }
    }

    @Test("logs filters the access log by service, version, status class, user and time")
    func logs() throws {
        defer { cli.remove() }
        let now = ISO8601DateFormatter().string(from: Date())
        func line(_ release: Int, _ appId: String, _ status: Int, time: String? = nil) -> String {
            #"{"time":"\#(time ?? now)","service":"engine","release":\#(release),"label":"v\#(release)","route":"canary","appId":"\#(appId)","bucket":1,"method":"GET","path":"/","status":\#(status),"latencyMs":1.5,"upstream":"127.0.0.1:1","bytesIn":0,"bytesOut":2,"error":null}"#
        }
        let file = cli.directory.appendingPathComponent("access.log")
        try [line(8, "a", 200), line(8, "b", 502), line(7, "c", 503), line(8, "b", 504, time: "2020-01-01T00:00:00.000Z"), "garbage"]
            .joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        let output = try cli.run(["logs", "--file", file.path, "--service", "engine", "--version", "8", "--status", "5xx",
                                  "--since", "1h", "--format", "json"], database: false)
        #expect(output.status == 0, "\(output.stderr)")
        // JSON lines: one object per line.
        let lines = try output.stdout.split(separator: "\n").map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(lines.map { $0["status"] as? Int } == [502])
        #expect(output.stderr.contains("access.log:5: not an access-log line, skipped"))
        let byUser = try cli.run(["logs", "--file", file.path, "--app-id", "c"], database: false)
        #expect(byUser.stdout.contains("7 (v7)"))
        #expect(!byUser.stdout.contains("8 (v8)"))

        // The proxy's own lines (milliseconds, its key order) take the byte path; the same answers.
        let ours = { (release: Int, appId: String, status: Int, path: String, time: String) in
            #"{"time":"\#(time)","service":"engine","release":\#(release),"label":"v\#(release)","route":"canary","appId":"\#(appId)","bucket":1,"method":"GET","path":"\#(path)","status":\#(status),"latencyMs":1.500,"upstream":"127.0.0.1:1","bytesIn":0,"bytesOut":2,"error":null}"#
        }
        let recent = "2099-01-01T00:00:00.000Z", old = "2020-01-01T00:00:00.000Z"
        // A path that spells another line's fields inside a string (escaped quotes) matches nothing it should not.
        let tricky = #"/x\",\"release\":8,\"label\":\"x"#
        try [ours(7, "a", 500, tricky, recent), ours(8, "b", 503, "/", recent), ours(8, "c", 200, "/", recent), ours(8, "d", 5000, "/", recent),
             ours(8, "e", 504, "/", old), ours(8, "ab", 502, "/", recent)]
            .joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        func statuses(_ arguments: [String]) throws -> [Int] {
            let run = try cli.run(["logs", "--file", file.path, "--format", "json"] + arguments, database: false)
            #expect(run.status == 0, "\(run.stderr)")
            return try run.stdout.split(separator: "\n").map { try #require((try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["status"] as? Int) }
        }
        #expect(try statuses(["--version", "8", "--status", "5xx", "--since", "1h"]) == [503, 502])
        #expect(try statuses(["--version", "8"]) == [503, 200, 5000, 504, 502])
        #expect(try statuses(["--app-id", "a"]) == [500], "not ab")
        #expect(try statuses(["--status", "503"]) == [503])
        #expect(try statuses(["--service", "registry"]) == [])

        // Rotated files, oldest first, a gzip-compressed one among them.
        try ours(8, "r2", 501, "/", recent).write(toFile: file.path + ".2", atomically: true, encoding: .utf8)
        try (ours(8, "r1", 502, "/", recent) + "\n").write(toFile: file.path + ".1", atomically: true, encoding: .utf8)
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = [file.path + ".1"]
        try gzip.run()
        gzip.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: file.path + ".1.gz"))
        #expect(try statuses(["--rotated", "--app-id", "r2"]) == [501])
        #expect(try statuses(["--rotated", "--version", "8", "--status", "5xx"]) == [501, 502, 503, 504, 502])
        #expect(try statuses(["--version", "8", "--status", "5xx"]) == [503, 504, 502], "without --rotated only the file itself")
    }

    @Test("logs --follow prints lines appended after it started, and goes on after the file is rotated")
    func logsFollow() async throws {
        defer { cli.remove() }
        let file = cli.directory.appendingPathComponent("follow.log")
        func line(_ status: Int) -> String {
            #"{"time":"2099-01-01T00:00:00.000Z","service":"engine","release":8,"label":"v8","route":"canary","appId":"a","bucket":1,"method":"GET","path":"/","status":\#(status),"latencyMs":1.000,"upstream":"u","bytesIn":0,"bytesOut":2,"error":null}"# + "\n"
        }
        try line(500).write(to: file, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = CLIRunner.binary
        process.arguments = ["logs", "--file", file.path, "--follow", "--format", "json", "--status", "5xx"]
        let outputFile = cli.directory.appendingPathComponent("follow.out")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: outputFile)
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let handle = try FileHandle(forWritingTo: file)
        handle.seekToEndOfFile()
        handle.write(Data((line(200) + line(502)).utf8))
        try handle.close()
        try await Task.sleep(for: .milliseconds(600))
        // logrotate: the file moves away, a new one takes its place.
        try FileManager.default.moveItem(at: file, to: URL(fileURLWithPath: file.path + ".1"))
        try line(503).write(to: file, atomically: true, encoding: .utf8)
        var seen = ""
        for _ in 0..<300 where !seen.contains(#""status":503"#) {
            try await Task.sleep(for: .milliseconds(100))
            seen = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
        }
        process.terminate()
        for _ in 0..<50 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!process.isRunning, "SIGTERM ends --follow")
        let statuses = seen.split(separator: "\n").compactMap { ($0.split(separator: ",").first { $0.hasPrefix(#""status":"#) }).map { String($0.dropFirst(9)) } }
        #expect(Set(statuses) == ["500", "502", "503"], "\(seen)")
        #expect(!seen.contains(#""status":200"#))
    }

    @Test("simulate runs the incident library from the repository root and fails when an expectation does")
    func simulateLibrary() throws {
        defer { cli.remove() }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = CLIRunner.binary
        process.arguments = ["simulate", "simulations/"]
        process.currentDirectoryURL = root
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("passed, 0 failed"))

        // The same incident with an expectation it cannot meet exits 1.
        let strict = try String(contentsOf: root.appendingPathComponent("simulations/yaml-name-rule.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "affectedUsersAtMost: 5", with: "affectedUsersAtMost: 0")
            .replacingOccurrences(of: "policy: policies/default.yaml", with: "policy: \(root.path)/policies/default.yaml")
        let file = cli.directory.appendingPathComponent("strict.yaml")
        try strict.write(to: file, atomically: true, encoding: .utf8)
        let failed = try cli.run(["simulate", file.path], database: false)
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("expect affectedUsersAtMost ≤ 0"))
        #expect(failed.stdout.contains("FAILED"))
    }
}
