import Foundation
import GrayscaleCore
import GrayscaleServer
import Testing

@Suite("serve configuration")
struct ServeConfigurationTests {
    @Test("the example configuration parses")
    func example() throws {
        let configuration = try ServeConfiguration.load(path: ServeHarness.root.appendingPathComponent("grayscale.example.yaml").path)
        #expect(configuration.proxyListen == "127.0.0.1:8080")
        #expect(configuration.hosts["engine.example.com"] == "engine")
        #expect(configuration.prefixes.map(\.prefix) == ["/engine"])
        #expect(configuration.operators == ["U0LAN0Z89"])
    }

    @Test("a bad configuration is refused with file:line: field: reason", arguments: [
        ("proxy:\n  listen: localhost\n", "grayscale.yaml:2: proxy.listen: expected HOST:PORT, e.g. 127.0.0.1:8080 (got 'localhost')"),
        ("proxy:\n  identity: bearer\n", "grayscale.yaml:2: proxy.identity: expected jwt, jwt:CLAIM, header:NAME, cookie:NAME or query:NAME (got 'bearer')"),
        ("admin: {listen: 127.0.0.1:8081, token: secret}\n", "grayscale.yaml:1: admin.token: unknown field (known fields: listen)"),
        ("services:\n  Engine!: {hosts: [a]}\n", "grayscale.yaml:2: services.Engine!: service name must be 1 to 64 lowercase letters, digits, '_' or '-', e.g. engine (got 'Engine!')"),
        ("services:\n  engine: {prefixes: [engine]}\n", "grayscale.yaml:2: services.engine.prefixes[0]: must start with / (got 'engine')"),
        ("controller:\n  tick: soon\n", "grayscale.yaml:2: controller.tick: expected a duration such as 30s, 10m or 1h30m (got 'soon')"),
        ("databse: x.sqlite\n", "grayscale.yaml:1: databse: unknown field (known fields: database, policies, proxy, admin, services, controller, slack)"),
    ])
    func broken(text: String, message: String) {
        #expect(throws: GrayscaleError(message)) { try ServeConfiguration.parse(text, file: "grayscale.yaml") }
    }
}
