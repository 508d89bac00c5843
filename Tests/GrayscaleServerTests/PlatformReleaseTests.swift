import Foundation
import GrayscaleCore
import GrayscaleServer
import GrayscaleStore
import Logging
import NIOConcurrencyHelpers
import Testing

/// Metrics per service: healthy, except for the services named in `failing` (half their
/// canary users fail) and in `silent` (no metrics: their verdicts lag).
final class PlatformMetrics: MetricsSource, Sendable {
    let failing = NIOLockedValueBox<Set<String>>([])
    let silent = NIOLockedValueBox<Set<String>>([])
    let database: GrayscaleDatabase

    init(database: GrayscaleDatabase) { self.database = database }

    func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        if silent.withLockedValue({ $0.contains(service) }) { throw GrayscaleError("\(service): no metrics yet") }
        guard failing.withLockedValue({ $0.contains(service) }) else {
            return try await HealthyMetrics().observe(service: service, canary: canary, stable: stable, from: from, to: to)
        }
        // Users the canary's range (as the split has it now) failed: what the proxy would report.
        let range = try database.split(service).range
        let failed = (0..<50).map { _ in UnitEvent(unit: "u:\(UUID().uuidString)", canary: true, lower: range.lower, upper: range.upper) }
        return IntervalObservation(from: from, to: to,
                                   canary: VersionObservation(requests: 100, errors: 50, evidence: VersionEvidence(requests: 100, failures: failed)),
                                   stable: VersionObservation(requests: 900, errors: 0, evidence: VersionEvidence(requests: 900)))
    }
}

/// Healthy metrics with mirrored pairs on the canary's side: 20 a span, 5 of them failing
/// on the canary only for the services in `failing`, none for those in `none`.
final class MirroredMetrics: MetricsSource, Sendable {
    let failing = NIOLockedValueBox<Set<String>>([])
    let none = NIOLockedValueBox<Set<String>>([])

    func observe(service: String, canary: ReleaseRef, stable: ReleaseRef, from: Date, to: Date) async throws -> IntervalObservation {
        var observed = try await HealthyMetrics().observe(service: service, canary: canary, stable: stable, from: from, to: to)
        guard !none.withLockedValue({ $0.contains(service) }) else { return observed }
        let failing = self.failing.withLockedValue { $0.contains(service) }
        var pairs = MirrorPairs()
        for index in 0..<20 { pairs.record(stableFailed: false, canaryFailed: failing && index < 5, stableMs: 40, canaryMs: 38) }
        observed.canary.evidence?.mirror = pairs
        return observed
    }
}

/// Engine, Registry and Events, each with a stable release, and platform release 2.1.1
/// (engine 8, registry 18, events 28) published over them; a platform policy with the
/// window always open.
struct PlatformFixture {
    let directory: URL
    let database: GrayscaleDatabase
    let policies: String
    static let services = ["engine", "events", "registry"]
    let clock = NIOLockedValueBox(Date(timeIntervalSince1970: 1_800_000_000))

    init(rollback: String = "together", extra: String = "") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-platform-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("policies"), withIntermediateDirectories: true)
        policies = directory.appendingPathComponent("policies").path
        try """
            service: platform
            steps: [5, 50, 100]
            stepMinimum: 1s
            analysis: {interval: 1s, minRequests: 10}
            window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
            slack: {channel: "#platform", operators: [U0OPERATOR]}
            rollback: \(rollback)
            \(extra)
            """.write(toFile: policies + "/platform.yaml", atomically: true, encoding: .utf8)
        database = try GrayscaleDatabase.open(path: directory.appendingPathComponent("grayscale.sqlite").path)
        let who = Attribution(actor: "test"), now = clock.withLockedValue { $0 }
        for (index, service) in Self.services.enumerated() {
            try database.publish(ReleaseDraft(service: service, number: 10 * index + 7, label: "v1.\(index).0", upstream: "http://127.0.0.1:1"),
                                 salt: "stable-\(service)", by: who, at: now)
        }
        let drafts = Self.services.enumerated().map { index, service in
            ReleaseDraft(service: service, number: 10 * index + 8, label: "v1.\(index).1", upstream: "http://127.0.0.1:2", platform: "2.1.1")
        }
        try database.publishPlatform("2.1.1", drafts, salt: "platform-salt", by: who, at: now)
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    func controller(_ metrics: PlatformMetrics) -> ControllerService {
        let clock = self.clock
        return ControllerService(database: database, policiesFolder: policies, metrics: metrics, now: { clock.withLockedValue { $0 } },
                                 logger: Logger(label: "test"))
    }

    /// One pass of the controller, then two seconds.
    func pass(_ controller: ControllerService) async {
        await controller.tickAll()
        clock.withLockedValue { $0 = $0.addingTimeInterval(2) }
    }

    /// Each service's canary width in hundredths of a percent, nil once it has no canary.
    func widths() throws -> [String: Int?] {
        var widths: [String: Int?] = [:]
        for service in Self.services {
            let state = try database.serviceState(service)
            widths[service] = state.canary == nil ? nil : state.split?.range.widthHundredths
        }
        return widths
    }

    func status(_ service: String, _ number: Int) throws -> ReleaseStatus? {
        try database.serviceState(service).release(number: number)?.status
    }
}

@Suite("Platform releases")
struct PlatformReleaseTests {
    @Test("one salt for the platform release: every service's canary draws the same users")
    func oneSalt() throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let salts = try PlatformFixture.services.map { try fixture.database.serviceState($0).canary?.salt }
        #expect(Set(salts) == ["platform-salt"])
        let platform = try #require(try fixture.database.currentPlatformRelease())
        #expect(platform.label == "2.1.1" && platform.services == ["engine", "events", "registry"] && platform.isActive)
    }

    @Test("a platform release is published whole or not at all: a reused label, a service without a stable release, a refused number")
    func publishWhole() throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let who = Attribution(actor: "test")
        func drafts(_ label: String, _ list: [(String, Int)]) -> [ReleaseDraft] {
            list.map { ReleaseDraft(service: $0.0, number: $0.1, label: "v\($0.1)", upstream: "http://127.0.0.1:3", platform: label) }
        }
        #expect(throws: GrayscaleError.self) {
            try fixture.database.publishPlatform("2.1.1", drafts("2.1.1", [("engine", 9), ("events", 29)]), salt: "x", by: who, at: Date())
        }
        // registry's number 5 is lower than its newest (18): nothing of 2.1.2 is stored, engine 9 neither.
        do {
            try fixture.database.publishPlatform("2.1.2", drafts("2.1.2", [("engine", 9), ("registry", 5)]), salt: "x", by: who, at: Date())
            Issue.record("a refused release published the rest")
        } catch {
            #expect(error.message.contains("platform release 2.1.2: registry: release number 5 is lower"), "\(error.message)")
        }
        #expect(try fixture.database.serviceState("engine").release(number: 9) == nil)
        do {
            try fixture.database.publishPlatform("2.1.3", drafts("2.1.3", [("engine", 9), ("gateway", 1)]), salt: "x", by: who, at: Date())
            Issue.record("a service without a stable release took a canary")
        } catch {
            #expect(error.message.contains("gateway has no stable release yet"), "\(error.message)")
        }
        #expect(try fixture.database.services() == ["engine", "events", "registry"])
        #expect(try fixture.database.auditLog().last?.outcome == "refused")
        #expect(throws: GrayscaleError.self) {
            try fixture.database.publish(ReleaseDraft(service: "platform", number: 1, label: "v1", upstream: "http://127.0.0.1:3"),
                                         salt: "x", by: who, at: Date())
        }
    }

    @Test("the services advance together: after every pass all three have the same users; one whose verdict lags holds the others")
    func advanceTogether() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let metrics = PlatformMetrics(database: fixture.database)
        metrics.silent.withLockedValue { $0 = ["events"] }
        let controller = fixture.controller(metrics)
        var seen: [Int] = []
        for pass in 0..<30 {
            if pass == 8 { metrics.silent.withLockedValue { $0 = [] } }
            await fixture.pass(controller)
            let widths = try fixture.widths()
            #expect(Set(widths.values.map { $0 ?? -1 }).count == 1, "pass \(pass): the services' canaries differ: \(widths)")
            if let width = widths["engine"] ?? nil, seen.last != width { seen.append(width) }
            if pass == 6 {
                // Engine and Registry passed step 1; Events has no verdict: all three stay at 5%.
                #expect(widths["engine"] == 500)
                let held = try #require(try fixture.database.rolloutState("engine"))
                #expect(held.holdReason?.contains("platform release 2.1.1 advances together: waiting for events Version 18(v 1.1.1)") == true,
                        "\(held.holdReason ?? "no hold")")
            }
        }
        #expect(seen == [500, 5000, 8000], "\(seen)")  // the last step keeps the 20% holdback on stable
        for (index, service) in PlatformFixture.services.enumerated() {
            #expect(try fixture.status(service, 10 * index + 8) == .stable, "\(service) was not promoted")
        }
    }

    @Test("mirror phases: the services start together once every one has passed its own; one that fails its mirror takes all back before any user")
    func mirrorPhases() async throws {
        let mirror = "mirror: {share: 20, duration: 4s, minRequests: 30, maxDuration: 1h}"
        do {
            let fixture = try PlatformFixture(extra: mirror)
            defer { fixture.remove() }
            let metrics = MirroredMetrics()
            metrics.none.withLockedValue { $0 = ["events"] }  // Events' copies have not come in yet
            let controller = ControllerService(database: fixture.database, policiesFolder: fixture.policies, metrics: metrics,
                                               now: { [clock = fixture.clock] in clock.withLockedValue { $0 } }, logger: Logger(label: "test"))
            for pass in 0..<20 {
                if pass == 8 { metrics.none.withLockedValue { $0 = [] } }
                await fixture.pass(controller)
                let widths = try fixture.widths()
                #expect(Set(widths.values.map { $0 ?? -1 }).count == 1, "pass \(pass): the services' canaries differ: \(widths)")
                if pass == 6 {
                    #expect(widths["engine"] == 0, "Engine and Registry passed their mirror phases; Events has not: no one starts")
                    let engine = try #require(try fixture.database.rolloutState("engine"))
                    #expect(engine.mirrorPassedAt != nil)
                    #expect(engine.holdReason?.contains("waiting for events") == true, "\(engine.holdReason ?? "")")
                    #expect(try fixture.database.serviceState("events").split?.canary?.mirror == 2000)
                }
            }
            #expect(try fixture.widths().values.allSatisfy { ($0 ?? 1) > 0 }, "all started (together: checked at every pass)")
            for service in PlatformFixture.services {
                #expect(try fixture.database.serviceState(service).split?.canary?.mirror == nil, "\(service): the first step ended its copies")
            }
        }
        do {
            let fixture = try PlatformFixture(extra: mirror)
            defer { fixture.remove() }
            let metrics = MirroredMetrics()
            metrics.failing.withLockedValue { $0 = ["registry"] }
            let controller = ControllerService(database: fixture.database, policiesFolder: fixture.policies, metrics: metrics,
                                               now: { [clock = fixture.clock] in clock.withLockedValue { $0 } }, logger: Logger(label: "test"))
            for _ in 0..<10 { await fixture.pass(controller) }
            for (index, service) in PlatformFixture.services.enumerated() {
                #expect(try fixture.status(service, 10 * index + 8) == .rolledBack, "\(service)")
                #expect(try fixture.database.splitHistory(service).allSatisfy { ($0.split.canary?.range.widthHundredths ?? 0) == 0 },
                        "\(service): no user was ever routed to its canary")
            }
            let registry = try #require(try fixture.database.rolloutState("registry"))
            #expect(registry.lastVerdict?.reason.contains("mirrored") == true, "\(registry.lastVerdict?.reason ?? "")")
        }
    }

    @Test("rollback: together — one service fails at step 2 and the whole platform release is rolled back in the same pass")
    func rollbackTogether() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let metrics = PlatformMetrics(database: fixture.database)
        let controller = fixture.controller(metrics)
        var passes = 0
        while try fixture.widths()["engine"] != 5000, passes < 20 {
            await fixture.pass(controller)
            passes += 1
        }
        #expect(try fixture.widths().values.allSatisfy { $0 == 5000 })
        metrics.failing.withLockedValue { $0 = ["registry"] }
        var rolledBack = false
        for _ in 0..<10 where !rolledBack {
            await fixture.pass(controller)
            let widths = try fixture.widths()
            // Never one service back on stable while another keeps its canary users.
            #expect(Set(widths.values.map { $0 ?? -1 }).count == 1, "\(widths)")
            rolledBack = widths.values.allSatisfy { $0 == nil }
        }
        #expect(rolledBack)
        for (index, service) in PlatformFixture.services.enumerated() {
            #expect(try fixture.status(service, 10 * index + 8) == .rolledBack)
            #expect(try fixture.database.serviceState(service).stable?.number == 10 * index + 7)
        }
        let engineAudit = try fixture.database.auditLog(service: "engine").map { $0.detail ?? "" }
        #expect(engineAudit.contains { $0.contains("platform release 2.1.1 rolls back together: registry Version 28(v 1.2.1) was rolled back") },
                "\(engineAudit)")
        #expect(try fixture.database.currentPlatformRelease()?.isActive == false)
    }

    @Test("rollback: alone — only the failing service goes back; the others go on without waiting for it and are promoted")
    func rollbackAlone() async throws {
        let fixture = try PlatformFixture(rollback: "alone")
        defer { fixture.remove() }
        let metrics = PlatformMetrics(database: fixture.database)
        metrics.failing.withLockedValue { $0 = ["registry"] }
        let controller = fixture.controller(metrics)
        for _ in 0..<30 { await fixture.pass(controller) }
        #expect(try fixture.status("registry", 28) == .rolledBack)
        #expect(try fixture.status("engine", 8) == .stable)
        #expect(try fixture.status("events", 18) == .stable)
    }

    @Test("the bot takes the platform as a module: -l lists every service, -g moves them all, -r rolls them all back")
    func bot() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let controller = fixture.controller(PlatformMetrics(database: fixture.database))
        let bot = ReleaseBot(database: fixture.database, controller: controller, policiesFolder: fixture.policies)
        let list = await bot.handle("-l -m platform", executor: "U0SOMEONE")
        #expect(list.hasPrefix("Platform release 2.1.1: engine Version 8(v 1.0.1), events Version 18(v 1.1.1), registry Version 28(v 1.2.1)"),
                "\(list)")
        for service in PlatformFixture.services { #expect(list.contains("[\(service)]")) }
        let gray = await bot.handle("-g -m platform -p 20:55", executor: "U0OPERATOR", commandId: "g-1")
        #expect(gray.components(separatedBy: "GrayScale Status: Done").count == 4, "\(gray)")
        for service in PlatformFixture.services {
            let split = try fixture.database.split(service)
            #expect(split.range.description == "[20 - 55]" && split.canary?.salt == "platform-salt", "\(service): \(split.range)")
        }
        // A retry of the same command id changes nothing.
        let revisions = try PlatformFixture.services.map { try fixture.database.split($0).revision }
        #expect(await bot.handle("-g -m platform -p 20:55", executor: "U0OPERATOR", commandId: "g-1") == gray)
        #expect(try PlatformFixture.services.map { try fixture.database.split($0).revision } == revisions)
        let refused = await bot.handle("-r -m platform", executor: "U0SOMEONE")
        #expect(refused.contains("may only list"))
        let rollback = await bot.handle("-r -m platform", executor: "U0OPERATOR")
        // The first service's rollback takes the others with it at once (rollback: together): they are no longer canaries when their turn comes.
        #expect(rollback.components(separatedBy: "GrayScale Status: Done").count == 2, "\(rollback)")
        #expect(rollback.components(separatedBy: "Not touched").count == 3, "\(rollback)")
        #expect(try fixture.widths().values.allSatisfy { $0 == nil })
    }

    /// Passes until every service is at `width`.
    func reach(_ width: Int, _ fixture: PlatformFixture, _ controller: ControllerService) async throws {
        var passes = 0
        while try fixture.widths().values.contains(where: { $0 != width }), passes < 20 {
            await fixture.pass(controller)
            passes += 1
        }
        #expect(try fixture.widths().values.allSatisfy { $0 == width })
    }

    @Test("a human's rollback of one service (-r -m registry) takes the others back at once, without waiting for a controller pass")
    func humanRollbackOfOne() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let controller = fixture.controller(PlatformMetrics(database: fixture.database))
        try await reach(500, fixture, controller)
        let bot = ReleaseBot(database: fixture.database, controller: controller, policiesFolder: fixture.policies)
        let reply = await bot.handle("-r -m registry", executor: "U0OPERATOR")
        #expect(reply.contains("GrayScale Status: Done"), "\(reply)")
        let widths = try fixture.widths()
        #expect(widths.values.allSatisfy { $0 == nil }, "\(widths)")
        #expect(try fixture.status("engine", 8) == .rolledBack)
        #expect(try fixture.status("events", 18) == .rolledBack)
    }

    @Test("finish of one service after another was rolled back is refused, and that service is rolled back too")
    func finishAfterAPeerFailed() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let controller = fixture.controller(PlatformMetrics(database: fixture.database))
        try await reach(500, fixture, controller)
        // Registry goes back outside the controller (grayscale release rollback): the others have not followed yet.
        try fixture.database.rollBack("registry", by: Attribution(actor: "cli"), at: fixture.clock.withLockedValue { $0 })
        let bot = ReleaseBot(database: fixture.database, controller: controller, policiesFolder: fixture.policies)
        let reply = await bot.handle("-f --force -m events", executor: "U0OPERATOR")
        #expect(reply.contains("Refused: platform release 2.1.1 rolls back together: registry Version 28(v 1.2.1) was rolled back"), "\(reply)")
        #expect(try fixture.status("events", 18) == .rolledBack, "a finish promoted a service whose platform release failed")
        #expect(try fixture.database.auditLog(service: "events").contains { $0.action == "finish" && $0.outcome == "refused" })
    }

    @Test("-m platform changes only the services whose canary is still the platform release's: one released on its own since is not touched")
    func platformCommandSkipsALeaver() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let controller = fixture.controller(PlatformMetrics(database: fixture.database))
        try fixture.database.publish(ReleaseDraft(service: "engine", number: 9, label: "v1.0.2", upstream: "http://127.0.0.1:3"), salt: "own",
                                     by: Attribution(actor: "test"), at: Date())
        let bot = ReleaseBot(database: fixture.database, controller: controller, policiesFolder: fixture.policies)
        let reply = await bot.handle("-r -m platform", executor: "U0OPERATOR")
        #expect(reply.contains("[engine]\nNot touched: Version 8(v 1.0.1) is no longer its canary"), "\(reply)")
        #expect(try fixture.database.serviceState("engine").canary?.number == 9, "engine 9 was rolled back by a command for the platform")
        #expect(try fixture.status("registry", 28) == .rolledBack)
        #expect(try fixture.status("events", 18) == .rolledBack)
        // Once nothing of it is rolling out, a changing command for the platform is refused whole.
        let ended = await bot.handle("-g -m platform -p 10", executor: "U0OPERATOR")
        #expect(ended.contains("Refused: platform release 2.1.1 has ended"), "\(ended)")
        // Both are in the audit trail of the services they did not touch.
        let engineAudit = try fixture.database.auditLog(service: "engine")
        #expect(engineAudit.contains { $0.outcome == "refused" && $0.action == "rollback" && ($0.detail ?? "").contains("not touched") })
        #expect(engineAudit.last.map { $0.outcome == "refused" && $0.action == "set-traffic" && ($0.detail ?? "").contains("has ended") } == true)
        #expect(try fixture.database.serviceState("engine").split?.range.isEmpty == true)
    }

    @Test("a retried -r -m platform gets its first answer and does not roll back a platform release published since")
    func retryGoesWhereTheCommandWent() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let bot = ReleaseBot(database: fixture.database, controller: fixture.controller(PlatformMetrics(database: fixture.database)),
                             policiesFolder: fixture.policies)
        let first = await bot.handle("-r -m platform", executor: "U0OPERATOR", commandId: "r-1")
        #expect(try fixture.widths().values.allSatisfy { $0 == nil })
        let drafts = PlatformFixture.services.enumerated().map { index, service in
            ReleaseDraft(service: service, number: 10 * index + 9, label: "v1.\(index).2", upstream: "http://127.0.0.1:2", platform: "2.1.2")
        }
        try fixture.database.publishPlatform("2.1.2", drafts, salt: "next", by: Attribution(actor: "test"), at: Date())
        let retried = await bot.handle("-r -m platform", executor: "U0OPERATOR", commandId: "r-1")
        // The same answers (the header now says the platform release has ended).
        #expect(retried.split(separator: "\n").dropFirst() == first.split(separator: "\n").dropFirst(), "\(retried)")
        #expect(retried.hasPrefix("Platform release 2.1.1 (ended)"))
        for (index, service) in PlatformFixture.services.enumerated() {
            #expect(try fixture.status(service, 10 * index + 9) == .canary, "\(service): the retry rolled back the new platform release")
        }
    }

    @Test("a service that may not start yet (not announced) holds the whole platform release, and says why")
    func unannouncedServiceHoldsAll() async throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        let policy = try String(contentsOfFile: fixture.policies + "/platform.yaml", encoding: .utf8) + "\nannounce: 1h\n"
        try policy.write(toFile: fixture.policies + "/platform.yaml", atomically: true, encoding: .utf8)
        let past = fixture.clock.withLockedValue { $0 }.addingTimeInterval(-2 * 86_400)
        for (service, number) in [("engine", 8), ("events", 18)] {
            _ = try fixture.database.announce(service, number: number, notes: "", by: Attribution(actor: "test"), channel: "#p", at: past) { _, _ in "" }
        }
        let controller = fixture.controller(PlatformMetrics(database: fixture.database))
        for _ in 0..<5 { await fixture.pass(controller) }
        let held = try fixture.widths()
        #expect(held.values.allSatisfy { $0 == 0 }, "\(held)")
        let engine = try #require(try fixture.database.rolloutState("engine"))
        #expect(engine.holdReason?.contains("waiting for registry Version 28(v 1.2.1) to be free to start (release 28 was not announced") == true,
                "\(engine.holdReason ?? "no hold")")
        _ = try fixture.database.announce("registry", number: 28, notes: "", by: Attribution(actor: "test"), channel: "#p", at: past) { _, _ in "" }
        await fixture.pass(controller)
        let started = try fixture.widths()
        #expect(started.values.allSatisfy { $0 == 500 }, "\(started)")
    }

    @Test("a tick that decided on another service as it was read does not commit when that service changed meanwhile, unless it rolls back")
    func peerChangedBeforeCommit() throws {
        let fixture = try PlatformFixture()
        defer { fixture.remove() }
        var library = PolicyLibrary(folder: fixture.policies)
        try library.reload()
        let now = fixture.clock.withLockedValue { $0 }
        let snapshot = try fixture.database.controllerSnapshot("engine")
        #expect(snapshot.platform?.peers.map(\.service) == ["events", "registry"])
        let transition = Reconciler.reconcile(ReconcileInput(policy: library.policy(for: "platform"), service: snapshot.service,
                                                             rollout: snapshot.rollout, platform: snapshot.platform, now: now))
        try fixture.database.rollBack("registry", by: Attribution(actor: "cli"), at: now)
        do {
            try fixture.database.commitTick(snapshot, transition, fence: nil, notifyChannel: "#p", at: now)
            Issue.record("committed a decision made on a peer that changed")
        } catch {
            #expect(error.kind == .conflict && error.message.contains("another service of platform release 2.1.1 changed"), "\(error.message)")
        }
        // A rollback decided on peers that changed meanwhile still commits: nothing holds a rollback back.
        let again = try fixture.database.controllerSnapshot("events")
        let rollback = Reconciler.reconcile(ReconcileInput(policy: library.policy(for: "platform"), service: again.service, rollout: again.rollout,
                                                           commands: [HumanCommand(.rollback, actor: "oncall")], platform: again.platform, now: now))
        try fixture.database.rollBack("engine", by: Attribution(actor: "cli"), at: now)
        try fixture.database.commitTick(again, rollback, fence: nil, notifyChannel: "#p", at: now)
        #expect(try fixture.status("events", 18) == .rolledBack)
    }
}
