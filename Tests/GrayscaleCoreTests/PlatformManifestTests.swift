import Foundation
import Testing
@testable import GrayscaleCore

/// A platform release's manifest and the policy's `rollback:`: every mistake names the
/// file, the line and the field.
@Suite("Platform manifest")
struct PlatformManifestTests {
    static let good = """
        platform: 2.1.1
        ref: 3f2c1a9
        services:
          engine:   { number: 8, label: v2.1.1, upstream: "http://127.0.0.1:9008" }
          registry: { number: 5, label: v1.4.0, upstream: "http://127.0.0.1:9105", ref: 77aa01 }
        """

    @Test("a manifest gives one draft per service, marked with the platform, with the shared or its own ref")
    func parses() throws {
        let (label, drafts) = try PlatformManifest.parse(Self.good, file: "p.yaml")
        #expect(label == "2.1.1")
        #expect(drafts.map(\.service) == ["engine", "registry"])
        #expect(drafts.allSatisfy { $0.platform == "2.1.1" })
        #expect(drafts.map(\.sourceRef) == ["3f2c1a9", "77aa01"])
        #expect(drafts[1].number == 5 && drafts[1].upstream == "http://127.0.0.1:9105")
    }

    @Test("bad manifests are refused with file:line: field: reason", arguments: [
        ("services:\n  engine: {number: 8, label: v1, upstream: \"http://h:1\"}\n  events: {number: 3, label: v1, upstream: \"http://h:2\"}\n",
         "m.yaml:1: platform: required: the platform release's label, e.g. 2.1.1"),
        ("platform: 2.1.1\nservices:\n  engine: {number: 8, label: v1, upstream: \"http://h:1\"}\n",
         "m.yaml:3: services: platform release 2.1.1 needs at least two services (got 1); publish a single service on its own"),
        ("platform: 2.1.1\nservices:\n  engine: {number: 8, label: v1, upstream: \"http://h:1\"}\n  events: {number: 0, label: v1, upstream: \"http://h:2\"}\n",
         "m.yaml:4: services.events.number: must be between 1 and 2147483647 (got 0)"),
        ("platform: 2.1.1\nservices:\n  engine: {number: 8, label: v1, upstream: \"ftp://h:1\"}\n  events: {number: 3, label: v1, upstream: \"http://h:2\"}\n",
         "m.yaml:3: services.engine: upstream must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:9008 (got 'ftp://h:1')"),
        ("platform: 2.1.1\nservices:\n  platform: {number: 8, label: v1, upstream: \"http://h:1\"}\n  events: {number: 3, label: v1, upstream: \"http://h:2\"}\n",
         "m.yaml:3: services.platform: 'platform' names every service of a platform release (the bot's -m platform); a service cannot be called that"),
        ("platform: 2.1.1\nservices:\n  engine: {number: 8, label: v1, upstream: \"http://h:1\", salt: x}\n  events: {number: 3, label: v1, upstream: \"http://h:2\"}\n",
         "m.yaml:3: services.engine.salt: unknown field (known fields: number, label, upstream, ref)"),
        ("platform: 2 1 1\nservices: {}\n",
         "m.yaml:1: platform: platform release label must be 1 to 64 characters without spaces, e.g. 2.1.1 (got '2 1 1')"),
    ])
    func refused(_ text: String, _ message: String) {
        #expect(throws: GrayscaleError(message)) { try PlatformManifest.parse(text, file: "m.yaml") }
    }

    @Test("the policy's rollback is together by default, alone when it says so, and anything else is refused where it stands")
    func rollbackField() throws {
        #expect(try RolloutPolicy.parse("service: platform\n", file: "p.yaml").rollback == .together)
        #expect(try RolloutPolicy.parse("service: platform\nrollback: alone\n", file: "p.yaml").rollback == .alone)
        #expect(throws: GrayscaleError("p.yaml:2: rollback: must be together or alone (got 'sideways')")) {
            try RolloutPolicy.parse("service: platform\nrollback: sideways\n", file: "p.yaml")
        }
    }
}
