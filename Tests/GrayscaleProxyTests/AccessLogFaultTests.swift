import Foundation
import GrayscaleProxy
import NIOConcurrencyHelpers
import Testing

/// The access log never stops the proxy: a full disk, its own growth, logrotate.
@Suite("Access log faults", .serialized)
struct AccessLogFaultTests {
    static func line(_ n: Int) -> AccessLogLine {
        AccessLogLine(time: Date(), service: "engine", release: 8, label: "v2.1.1", route: "canary", appId: "user-\(n)", bucket: n % 10_000,
                      method: "GET", path: "/items/\(n)", status: 200, latencyMs: 1.5, upstream: "http://127.0.0.1:9008", bytesIn: 0,
                      bytesOut: 41, error: nil)
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    static func directory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-log-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test("disk full: the proxy keeps answering, dropped lines are counted and said once; logging resumes when space returns")
    func diskFull() async throws {
        let harness = try ProxyHarness()
        // The log's path leads to /dev/full: every write fails with ENOSPC.
        try FileManager.default.createSymbolicLink(atPath: harness.accessLogPath, withDestinationPath: "/dev/full")
        try await harness.start()
        do {
            let problems = NIOLockedValueBox<[String]>([])
            // The harness's log reports nowhere; a log of our own over the same path sees what the operator would.
            let log = try AccessLog(path: harness.accessLogPath, flushInterval: 3600, onProblem: { problem in problems.withLockedValue { $0.append(problem) } })
            for n in 0..<10 { log.append(Self.line(n)) }
            log.flush()
            for n in 10..<20 { log.append(Self.line(n)) }
            log.flush()
            #expect(log.health.droppedLines == 20)
            #expect(log.health.problem == "No space left on device")
            #expect(problems.withLockedValue { $0 }.count == 1, "said once per episode: \(problems.withLockedValue { $0 })")

            let statuses = try await TestHTTPClient.withConnection(port: harness.port, group: harness.clientGroup) { client in
                var statuses: [Int] = []
                for _ in 0..<20 { statuses.append(try await client.send("/").status) }
                return statuses
            }
            #expect(statuses == Array(repeating: 200, count: 20), "the proxy answers while its log cannot be written")
            try await Task.sleep(for: .milliseconds(100))
            #expect(harness.accessLog.health.droppedLines >= 20)
            #expect(harness.proxy.statistics.snapshot().versions.reduce(0) { $0 + $1.totals.requests } == 20, "still counted by version")

            // Space returns (the path leads to a real file again) and logrotate's signal reopens it.
            let file = harness.directory.appendingPathComponent("access-real.log").path
            try FileManager.default.removeItem(atPath: harness.accessLogPath)
            try FileManager.default.createSymbolicLink(atPath: harness.accessLogPath, withDestinationPath: file)
            log.reopen()
            for n in 20..<25 { log.append(Self.line(n)) }
            log.flush()
            #expect(log.health.problem == nil)
            #expect(log.health.writtenLines == 5)
            #expect(problems.withLockedValue { $0 }.last?.contains("writes again") == true)
            #expect(Self.lines(file).count == 5)
            #expect(Self.lines(file).allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil })
            log.close()
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }

    @Test("rotated by size with a retention limit; every kept line whole")
    func rotation() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("access.log").path
        let log = try AccessLog(path: path, flushInterval: 3600, limits: .init(maxFileBytes: 4_000, keep: 2))
        for n in 0..<200 {
            log.append(Self.line(n))
            log.flush()
        }
        log.close()
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(files == ["access.log", "access.log.1", "access.log.2"], "\(files)")
        for name in files {
            let size = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(name).path)[.size] as! Int
            #expect(size <= 4_000, "\(name) is \(size) bytes")
            #expect(Self.lines(directory.appendingPathComponent(name).path).allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil })
        }
        // The newest lines are in access.log, the ones before in .1 and .2.
        let kept = ["access.log.2", "access.log.1", "access.log"].flatMap { Self.lines(directory.appendingPathComponent($0).path) }
        #expect(kept.last?.contains("\"appId\":\"user-199\"") == true)
        #expect(log.health.rotations > 2)
        #expect(log.health.droppedLines == 0)
    }

    @Test("logrotate moves the file away; reopen writes to a new file at the path")
    func reopen() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("access.log").path
        let log = try AccessLog(path: path, flushInterval: 3600)
        log.append(Self.line(1))
        log.flush()
        try FileManager.default.moveItem(atPath: path, toPath: path + ".old")
        log.append(Self.line(2))
        log.flush()
        log.reopen()
        log.append(Self.line(3))
        log.flush()
        log.close()
        // After close: nothing is written, nothing reopened, and the line is counted as dropped.
        log.append(Self.line(4))
        log.flush()
        log.close()
        #expect(log.health.droppedLines == 1)
        #expect(Self.lines(path + ".old").count == 2, "before the reopen, lines follow the moved file")
        #expect(Self.lines(path).count == 1)
        #expect(Self.lines(path).first?.contains("user-3") == true)
    }

    @Test("lines waiting beyond the buffer's limit are dropped and counted, never queued without bound")
    func boundedBuffer() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("access.log").path
        let log = try AccessLog(path: path, flushInterval: 3600, limits: .init(maxPendingBytes: 3_000))
        for n in 0..<100 { log.append(Self.line(n)) }
        let dropped = log.health.droppedLines
        #expect(dropped > 80 && dropped < 100, "\(dropped)")
        log.flush()
        log.close()
        #expect(Self.lines(path).count == 100 - dropped)
        #expect(log.health.writtenLines == 100 - dropped)
    }
}
