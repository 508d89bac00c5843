import Foundation
import GrayscaleCore
@testable import GrayscaleStore
import GrayscaleTestSupport
import NIOConcurrencyHelpers
import Testing

/// What only the shared engine has: several processes on one database, its URL and
/// password, its schema version, a server that goes away and comes back, and moving an
/// installation onto it. Against a real PostgreSQL server.
@Suite("PostgreSQL store", .serialized)
struct PostgresStoreTests {
    @Test("the URL names user, host, port and database; a password in it is refused without being repeated; it comes from the environment or a file")
    func location() throws {
        let plain = try PostgresLocation(url: "postgres://grayscale@db.internal:6543/releases", environment: [:])
        #expect(plain.user == "grayscale" && plain.host == "db.internal" && plain.port == 6543 && plain.database == "releases")
        #expect(plain.password == nil)
        #expect(try PostgresLocation(url: "postgresql://g@h/d", environment: [:]).port == 5432)
        let withPassword = #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://grayscale:hunter2@db/releases", environment: [:]) }
        #expect(withPassword?.message.contains("never in an argument") == true)
        #expect(withPassword?.message.contains("hunter2") == false, "the refused password is not repeated")
        let noDatabase = #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://grayscale@db", environment: [:]) }
        #expect(noDatabase?.message.contains("no database name") == true)
        #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://@db/x", environment: [:]) }
        #expect(try PostgresLocation(url: "postgres://g@h/d", environment: ["GRAYSCALE_DB_PASSWORD": "s3"]).password == "s3")
        let directory = try TemporaryDirectory()
        let file = directory.url.appendingPathComponent("pw").path
        try "from-a-file\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try PostgresLocation(url: "postgres://g@h/d", environment: ["GRAYSCALE_DB_PASSWORD_FILE": file]).password == "from-a-file")
        #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://g@h/d", environment: ["GRAYSCALE_DB_PASSWORD_FILE": file + ".missing"]) }
        #expect("\(plain)" == "postgres://grayscale@db.internal:6543/releases")
        // TLS: required (certificate verified) unless on loopback or told otherwise.
        #expect(plain.tls == .require)
        #expect(try PostgresLocation(url: "postgres://g@127.0.0.1/d", environment: [:]).tls == .prefer)
        let custom = try PostgresLocation(url: "postgres://g@db/d?sslmode=require&sslrootcert=/etc/ssl/our-ca.pem", environment: [:])
        #expect(custom.tls == .require && custom.rootCertificate == "/etc/ssl/our-ca.pem")
        #expect(try PostgresLocation(url: "postgres://g@db/d?sslmode=disable", environment: [:]).tls == .disable)
        #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://g@db/d?sslmode=maybe", environment: [:]) }
        #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://g@db/d?password=x", environment: [:]) }
        // A password that makes the URL unparsable is not repeated either.
        let unparsable = #expect(throws: GrayscaleError.self) { try PostgresLocation(url: "postgres://g:pa ss#wd@db/d", environment: [:]) }
        #expect(unparsable?.message.contains("pa ss") == false, "\(unparsable?.message ?? "")")
    }

    @Test("a server nobody listens on gives a clear, retryable error, not a hang or a crash")
    func unreachable() throws {
        let url = "postgres://grayscale@127.0.0.1:\(PostgresServer.freePort())/nothing"
        let error = #expect(throws: GrayscaleError.self) { try GrayscaleDatabase.open(path: url, busyTimeout: 1) }
        #expect(error?.kind == .busy)
        #expect(error?.message.contains("unreachable") == true, "\(error?.message ?? "")")
    }

    @Test("while PostgreSQL is unreachable, calls fail at once with why instead of each trying to connect: one attempt per second")
    func failFast() throws {
        let server = try PostgresServer.start()
        let url = try server.createDatabase()
        let database = try GrayscaleDatabase.open(path: url, busyTimeout: 1)
        let engine = try #require(database.engine as? PostgresEngine)
        try server.stopServer()
        let before = engine.connectAttempts.withLockedValue { $0 }
        let started = ContinuousClock.now
        var failures = 0
        while ContinuousClock.now - started < .milliseconds(500) {
            do { _ = try database.services() } catch { failures += 1; #expect(error.kind == .busy) }
        }
        #expect(failures > 10)
        #expect(engine.connectAttempts.withLockedValue { $0 } - before <= 1, "at most one connection attempt in half a second")
        try server.startServer()
        var back = false
        for _ in 0..<100 where !back {
            back = (try? database.services()) != nil
            if !back { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(back, "calls work again once PostgreSQL is back")
    }

    @Test("a database written by a newer Grayscale is refused and left untouched")
    func newerSchema() throws {
        let server = try PostgresServer.shared.get()
        let url = try server.createDatabase()
        let database = try GrayscaleDatabase.open(path: url)
        try database.publish(draft(7, "v2.1.0"), salt: "s", by: operatorAlice, at: t0)
        try server.psql(url, "INSERT INTO grayscale_migrations (identifier, appliedAt) VALUES ('v99-from-the-future', now())")
        let error = #expect(throws: GrayscaleError.self) { try GrayscaleDatabase.open(path: url) }
        #expect(error?.message.contains("newer Grayscale") == true)
        #expect(error?.message.contains("v99-from-the-future") == true)
        #expect(try database.serviceState("engine").releases.count == 1)
    }

    @Test("writers on several connections are serialized: 4 processes' worth of concurrent changes, every revision once, none lost")
    func serializedWriters() async throws {
        let url = try PostgresServer.shared.get().createDatabase()
        let setup = try GrayscaleDatabase.open(path: url)
        try setup.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: t0)
        try setup.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0)
        let before = try setup.split("engine").revision
        // Four handles, as four replicas would have, each changing the split 25 times at once.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    let database = try GrayscaleDatabase.open(path: url)
                    for change in 0..<25 {
                        let upper = 1 + (writer * 25 + change) % 99
                        try database.setCanaryTraffic("engine", range: try CanaryRange(lower: 0, upper: upper), by: Attribution(actor: "w\(writer)"), at: t0)
                    }
                }
            }
            try await group.waitForAll()
        }
        let history = try setup.splitHistory("engine")
        let revisions = history.map(\.revision)
        #expect(revisions == Array(1...revisions.count), "contiguous: no revision twice, none skipped")
        #expect(try setup.split("engine").revision == before + 100, "every one of the 100 changes was kept")
    }

    @Test("two controllers committing from the same snapshot: exactly one commit lands, the other is told of the conflict")
    func compareAndSwap() async throws {
        let url = try PostgresServer.shared.get().createDatabase()
        let a = try GrayscaleDatabase.open(path: url), b = try GrayscaleDatabase.open(path: url)
        try a.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: t0)
        try a.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0)
        let snapshot = try a.controllerSnapshot("engine")
        let transition = Reconciler.reconcile(ReconcileInput(policy: .standard, service: snapshot.service, rollout: snapshot.rollout,
                                                             commands: [HumanCommand(.rollback, actor: "alice")], now: minutes(1)))
        let outcomes = NIOLockedValueBox<[String]>([])
        await withTaskGroup(of: Void.self) { group in
            for database in [a, b] {
                group.addTask {
                    do {
                        try database.commitTick(snapshot, transition, fence: nil, notifyChannel: "#c", at: minutes(1))
                        outcomes.withLockedValue { $0.append("committed") }
                    } catch let error as GrayscaleError {
                        outcomes.withLockedValue { $0.append(error.kind == .conflict ? "conflict" : "other: \(error.message)") }
                    } catch {
                        outcomes.withLockedValue { $0.append("other: \(error)") }
                    }
                }
            }
        }
        #expect(outcomes.withLockedValue { $0 }.sorted() == ["committed", "conflict"])
        #expect(try a.auditLog(service: "engine").filter { $0.actor == "alice" && $0.action != "publish" }.count <= 1)
    }

    @Test("a routing change written through one replica reaches another's watch by NOTIFY")
    func notify() async throws {
        let url = try PostgresServer.shared.get().createDatabase()
        let writer = try GrayscaleDatabase.open(path: url), watcher = try GrayscaleDatabase.open(path: url)
        try writer.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: t0)
        let seen = NIOLockedValueBox<[Int]>([])
        // A poll interval of a minute: only a pushed notification can deliver the change in time.
        let watch = Task {
            await watcher.watchServiceStates(every: .seconds(60), onChange: { states in
                seen.withLockedValue { $0.append(states.first?.split?.revision ?? 0) }
            })
        }
        defer { watch.cancel() }
        try await waitUntil { seen.withLockedValue { !$0.isEmpty } }
        try writer.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0)
        try writer.setCanaryTraffic("engine", range: try CanaryRange(lower: 0, upper: 5), by: operatorAlice, at: t0)
        let latest = try writer.split("engine").revision
        try await waitUntil { seen.withLockedValue { $0.last == latest } }
    }

    @Test("PostgreSQL stopped and started again: calls fail with a retryable error while it is down, then work on new connections; the watch picks up")
    func restart() async throws {
        let server = try PostgresServer.start()
        let url = try server.createDatabase()
        let database = try GrayscaleDatabase.open(path: url, busyTimeout: 1)
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: t0)
        let seen = NIOLockedValueBox<[Int]>([]), problems = NIOLockedValueBox(0)
        let watch = Task {
            await database.watchServiceStates(every: .milliseconds(100), maxBackoff: .milliseconds(400), onChange: { states in
                seen.withLockedValue { $0.append(states.first?.releases.count ?? 0) }
            }, onProblem: { _, _ in problems.withLockedValue { $0 += 1 } })
        }
        defer { watch.cancel() }
        try await waitUntil { seen.withLockedValue { $0.last == 1 } }
        try server.stopServer()
        let down = #expect(throws: GrayscaleError.self) { try database.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0) }
        #expect(down?.kind == .busy, "\(down?.message ?? "")")
        try await waitUntil { problems.withLockedValue { $0 > 0 } }
        try server.startServer()
        try await waitUntil {
            (try? database.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0)) != nil
        }
        #expect(try database.serviceState("engine").releases.map(\.number) == [7, 8])
        try await waitUntil { seen.withLockedValue { $0.last == 2 } }
    }

    @Test("db copy: every table of a used SQLite file lands in PostgreSQL and compares equal; a non-empty target is refused unless replacing")
    func copy() throws {
        let directory = try TemporaryDirectory()
        let source = try GrayscaleDatabase.open(path: directory.databasePath)
        try source.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: t0)
        try source.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: minutes(1))
        try source.setRules("engine", allowList: ["qa-1"], by: operatorAlice, at: minutes(2))
        guard case .leading(let lease) = try source.claimLease(holder: "c1", period: 15, at: minutes(2)) else { Issue.record("c1 leads"); return }
        let command = HumanCommand(.rollback, actor: "alice", id: "T1")
        let snapshot = try source.controllerSnapshot("engine")
        try source.commitTick(snapshot, Reconciler.reconcile(ReconcileInput(policy: .standard, service: snapshot.service, rollout: nil,
                                                                             commands: [command], now: minutes(3))),
                              command: command, fence: lease.token, notifyChannel: "#releases", at: minutes(3))
        try source.record([MetricSample(service: "engine", releaseNumber: 8, route: .canary, windowStart: minutes(1), windowEnd: minutes(2),
                                        requests: 90, errors: 3, latencyP50Ms: 12.5, latencyP99Ms: 80.25, histogram: Data([0, 1, 2, 255]))])
        let queued = try source.enqueue(channel: "#releases", text: "hello", service: "engine", at: minutes(4))
        try source.markDead(queued.id!, error: "channel_not_found", at: minutes(5))
        _ = try source.markSlackEventHandled("Ev1", at: minutes(5))

        let url = try PostgresServer.shared.get().createDatabase()
        let target = try GrayscaleDatabase.open(path: url)
        let report = try source.copy(to: target)
        #expect(report.rows.first { $0.table == "audit" }?.count == (try source.auditLog().count))
        #expect(try source.compare(with: target).isEmpty)
        #expect(try target.serviceState("engine") == (try source.serviceState("engine")))
        #expect(try target.auditLog() == (try source.auditLog()))
        #expect(try target.splitHistory("engine") == (try source.splitHistory("engine")))
        #expect(try target.samples("engine", release: 8, since: t0) == (try source.samples("engine", release: 8, since: t0)))
        #expect(try target.commandResult("T1") == (try source.commandResult("T1")))
        #expect(try target.deadNotifications().map(\.text) == ["hello"])
        #expect(try target.controllers(seenSince: t0).lease == lease)
        // New rows get ids after the copied ones.
        let next = try target.enqueue(channel: "#releases", text: "after the move", service: "engine", at: minutes(6))
        #expect(next.id! > queued.id!)

        let outboxBefore = try target.undeliveredNotifications()
        #expect(outboxBefore.last?.text == "after the move")
        let refused = #expect(throws: GrayscaleError.self) { try source.copy(to: target) }
        #expect(refused?.message.contains("not empty") == true)
        #expect(try target.undeliveredNotifications() == outboxBefore, "a refused copy changed nothing")
        #expect(try target.deadNotifications().map(\.text) == ["hello"])
        _ = try source.copy(to: target, replacing: true)
        #expect(try source.compare(with: target).isEmpty)
    }

    @Test("a replica frozen in the middle of a write, holding the writers' lock, stops the others only until the server ends its session")
    func frozenWriter() async throws {
        let url = try PostgresServer.shared.get().createDatabase()
        // busyTimeout 1 s: the lock is waited for 1 s, a session idle in a transaction is ended after 5 s.
        let frozen = try GrayscaleDatabase.open(path: url, busyTimeout: 1), other = try GrayscaleDatabase.open(path: url, busyTimeout: 1)
        try other.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: t0)
        let woke = NIOLockedValueBox(false), holding = NIOLockedValueBox(false)
        Thread {
            // In a write transaction (the lock taken), then frozen: nothing sent for 20 s.
            _ = try? frozen.engine.write { _ in
                holding.withLockedValue { $0 = true }
                Thread.sleep(forTimeInterval: 20)
            }
            woke.withLockedValue { $0 = true }
        }.start()
        try await waitUntil { holding.withLockedValue { $0 } }
        let blocked = #expect(throws: GrayscaleError.self) { try other.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0) }
        #expect(blocked?.kind == .busy, "\(blocked?.message ?? "")")
        try await waitUntil { (try? other.publish(draft(8, "v2.1.1"), salt: "s8", by: operatorAlice, at: t0)) != nil }
        #expect(!woke.withLockedValue { $0 }, "the write went through while the frozen replica still slept")
        #expect(try other.serviceState("engine").canary?.number == 8)
    }

    @Test("dates keep their millisecond on both engines", arguments: StoreBackend.allCases)
    func milliseconds(_ backend: StoreBackend) throws {
        let database = try TestStore(backend).open()
        let instants = (0..<60).map { t0.addingTimeInterval(Double($0 * 16_661 % 1000) / 1000 + Double($0)) }
        for (index, instant) in instants.enumerated() {
            try database.enqueue(channel: "#c", text: "\(index)", service: nil, at: instant)
        }
        let stored = try database.undeliveredNotifications().map(\.createdAt)
        #expect(stored.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) } == instants.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) })
        if backend == .postgres {
            // Exactly the millisecond, not a microsecond off it.
            #expect(stored == instants.map { Date(timeIntervalSince1970: ($0.timeIntervalSince1970 * 1000).rounded() / 1000) })
        }
    }

    func waitUntil(timeout: Duration = .seconds(90), _ condition: () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while try !condition() {
            guard ContinuousClock.now < deadline else { Issue.record("timed out"); return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
