import Foundation
import Testing
import GrayscaleCore
import GrayscaleStore

/// `grayscale release announce` through the store, on each engine: the announcement, its
/// audit entry and its message are written together; the first one stands; the controller
/// reads it with the canary.
@Suite("Announcements")
struct AnnouncementStoreTests {
    @Test("announce a canary: stored, audited, queued for the channel, read by the controller; again: the first stands", arguments: StoreBackend.allCases)
    func announce(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        try database.publish(draft(6, "v2.0.1"), salt: "s6", by: operatorAlice, at: minutes(0))
        try database.publish(draft(7, "v2.1.0"), salt: "s7", by: operatorAlice, at: minutes(1))
        let (first, new) = try database.announce("engine", number: 7, notes: "fixes the name rule", by: operatorAlice, channel: "#release",
                                                 at: minutes(2)) { announcement, release in "announcing \(release.ref): \(announcement.notes)" }
        #expect(new)
        #expect(first.at == minutes(2))
        let reopened = try store.open()
        #expect(try reopened.announcement("engine", number: 7) == first)
        #expect(try reopened.controllerSnapshot("engine").announcement == first)
        let queued = try reopened.dueNotifications(at: minutes(3))
        #expect(queued.map(\.text) == ["announcing Version 7(v 2.1.0): fixes the name rule"])  // the notes reach the channel
        #expect(queued.map(\.channel) == ["#release"])
        #expect(try reopened.auditLog(service: "engine").contains { $0.action == "announce" && $0.actor == "alice" })

        let bob = Attribution(actor: "bob")
        let (again, newAgain) = try database.announce("engine", number: 7, notes: "other notes", by: bob, channel: "#release",
                                                      at: minutes(30)) { _, _ in "again" }
        #expect(!newAgain)
        #expect(again == first)
        #expect(try store.open().dueNotifications(at: minutes(31)).count == 1)  // nothing more queued
    }

    @Test("only a canary is announced: an unknown release or the stable one is refused and nothing is written", arguments: StoreBackend.allCases)
    func refusals(_ backend: StoreBackend) throws {
        let store = try TestStore(backend)
        let database = try store.open()
        try database.publish(draft(6, "v2.0.1"), salt: "s6", by: operatorAlice, at: minutes(0))
        #expect(throws: GrayscaleError.self) {
            _ = try database.announce("engine", number: 9, notes: "", by: operatorAlice, channel: "#r", at: minutes(1)) { _, _ in "x" }
        }
        #expect(throws: GrayscaleError.self) {
            _ = try database.announce("engine", number: 6, notes: "", by: operatorAlice, channel: "#r", at: minutes(1)) { _, _ in "x" }
        }
        #expect(try store.open().dueNotifications(at: minutes(2)).isEmpty)
        #expect(try store.open().announcement("engine", number: 6) == nil)
    }
}
