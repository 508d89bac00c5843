import Foundation
import GrayscaleCore
import Yams

/// `grayscale serve --config grayscale.yaml`. Every field is optional; secrets (the
/// admin token, Slack's signing secret and bot token, the JWT secret) come from the
/// environment or files, never from this file.
public struct ServeConfiguration: Sendable {
    public var database = "grayscale.sqlite"
    public var policies = "policies"
    public var proxyListen = "127.0.0.1:8080"
    public var adminListen = "127.0.0.1:8081"
    /// jwt, jwt:CLAIM, header:NAME, cookie:NAME or query:NAME.
    public var identity = "jwt"
    public var accessLog = "grayscale-access.log"
    /// Rotate the access log past this size, keeping this many old files.
    public var accessLogMaxMiB = 256
    public var accessLogKeep = 5
    public var maxBodyBytes = 10 * 1024 * 1024
    public var maxHeaderBytes = 32 * 1024
    public var maxConnections = 10_000
    public var idleTimeout = 60
    public var upstreamTimeout = 30
    /// Seconds per statistics window; also how often the embedded controller sees new evidence.
    public var statsWindow = 1
    /// The header the proxy writes each request's bucket into (for SCF alias rules).
    public var routingHeader: String?
    /// service → hosts and path prefixes that route to it.
    public var hosts: [String: String] = [:]
    public var prefixes: [(prefix: String, service: String)] = []
    /// Services whose splits also drive a Tencent SCF alias.
    public var scf: [String: SCFSettings] = [:]

    public struct SCFSettings: Sendable, Equatable {
        public var function: String
        public var alias: String
        public var region: String
        public var namespace = "default"
        public var routingHeader = "X-Grayscale-Bucket"
        public var endpoint = "https://scf.tencentcloudapi.com/"
    }
    /// How often the controller wakes, in milliseconds.
    public var controllerTickMs = 250
    /// The controller's lease, in milliseconds: a standby takes over within two of them.
    public var controllerLeaseMs = 15_000
    /// Admin URLs of fleet proxies whose /stats the controller adds to this process's own.
    public var fleetStats: [String] = []
    /// A Prometheus server that answers the policies' own metrics (`analysis.metrics`).
    public var prometheus: String?
    public var analysisInterval: Int?
    public var defaultChannel = "#grayscale"
    /// Slack users allowed to change traffic, besides each policy's operators.
    public var operators: [String] = []

    public init() {}

    public static func load(path: String) throws(GrayscaleError) -> ServeConfiguration {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw GrayscaleError("\(path): cannot read the configuration (\(error.localizedDescription))")
        }
        return try parse(text, file: path)
    }

    public static func parse(_ text: String, file: String) throws(GrayscaleError) -> ServeConfiguration {
        let reader = YAMLReader(file: file)
        let root = try reader.root(of: text)
        let top = try reader.fields(root, "", known: ["database", "policies", "proxy", "admin", "services", "controller", "slack"])
        var configuration = ServeConfiguration()
        if let node = top["database"] { configuration.database = try reader.string(node, "database") }
        if let node = top["policies"] { configuration.policies = try reader.string(node, "policies") }
        func address(_ node: Node, _ field: String) throws(GrayscaleError) -> String {
            let text = try reader.string(node, field)
            guard HostPort(parsing: text) != nil else {
                throw reader.error(node, field, "expected HOST:PORT, e.g. 127.0.0.1:8080 (got '\(text)')")
            }
            return text
        }
        if let node = top["proxy"] {
            let fields = try reader.fields(node, "proxy", known: ["listen", "identity", "accessLog", "accessLogMaxMiB", "accessLogKeep", "maxBodyBytes", "maxHeaderBytes",
                                                                  "maxConnections", "idleTimeout", "upstreamTimeout", "statsWindow", "routingHeader"])
            if let value = fields["routingHeader"] { configuration.routingHeader = try reader.string(value, "proxy.routingHeader") }
            if let value = fields["listen"] { configuration.proxyListen = try address(value, "proxy.listen") }
            if let value = fields["identity"] {
                let identity = try reader.string(value, "proxy.identity")
                let valid = identity == "jwt" || ["jwt:", "header:", "cookie:", "query:"].contains { identity.hasPrefix($0) && identity.count > $0.count }
                guard valid else { throw reader.error(value, "proxy.identity", "expected jwt, jwt:CLAIM, header:NAME, cookie:NAME or query:NAME (got '\(identity)')") }
                configuration.identity = identity
            }
            if let value = fields["accessLog"] { configuration.accessLog = try reader.string(value, "proxy.accessLog") }
            if let value = fields["accessLogMaxMiB"] { configuration.accessLogMaxMiB = try reader.int(value, "proxy.accessLogMaxMiB", in: 1...1 << 20) }
            if let value = fields["accessLogKeep"] { configuration.accessLogKeep = try reader.int(value, "proxy.accessLogKeep", in: 0...1000) }
            if let value = fields["maxBodyBytes"] { configuration.maxBodyBytes = try reader.int(value, "proxy.maxBodyBytes", in: 1...Int(Int32.max)) }
            if let value = fields["maxHeaderBytes"] { configuration.maxHeaderBytes = try reader.int(value, "proxy.maxHeaderBytes", in: 1024...1 << 20) }
            if let value = fields["maxConnections"] { configuration.maxConnections = try reader.int(value, "proxy.maxConnections", in: 1...1_000_000) }
            if let value = fields["idleTimeout"] { configuration.idleTimeout = try positive(value, "proxy.idleTimeout", reader) }
            if let value = fields["upstreamTimeout"] { configuration.upstreamTimeout = try positive(value, "proxy.upstreamTimeout", reader) }
            if let value = fields["statsWindow"] { configuration.statsWindow = try positive(value, "proxy.statsWindow", reader) }
        }
        if let node = top["admin"] {
            let fields = try reader.fields(node, "admin", known: ["listen"])
            if let value = fields["listen"] { configuration.adminListen = try address(value, "admin.listen") }
        }
        if let node = top["services"] {
            guard let mapping = node.mapping else { throw reader.error(node, "services", "expected a mapping of service: {hosts, prefixes}") }
            for (key, value) in mapping {
                let service = try reader.string(key, "services")
                do { try ServiceName.validate(service) } catch { throw reader.error(key, "services.\(service)", error.message) }
                let fields = try reader.fields(value, "services.\(service)", known: ["hosts", "prefixes", "scf"])
                if let scfNode = fields["scf"] {
                    let path = "services.\(service).scf"
                    let scf = try reader.fields(scfNode, path, known: ["function", "alias", "region", "namespace", "routingHeader", "endpoint"])
                    func required(_ name: String) throws(GrayscaleError) -> String {
                        guard let node = scf[name] else { throw reader.error(scfNode, "\(path).\(name)", "required") }
                        return try reader.string(node, "\(path).\(name)")
                    }
                    var settings = SCFSettings(function: try required("function"), alias: try required("alias"), region: try required("region"))
                    if let node = scf["namespace"] { settings.namespace = try reader.string(node, "\(path).namespace") }
                    if let node = scf["routingHeader"] { settings.routingHeader = try reader.string(node, "\(path).routingHeader") }
                    if let node = scf["endpoint"] { settings.endpoint = try reader.string(node, "\(path).endpoint") }
                    configuration.scf[service] = settings
                }
                for host in try fields["hosts"].map({ node throws(GrayscaleError) in try reader.strings(node, "services.\(service).hosts") }) ?? [] {
                    configuration.hosts[host.lowercased()] = service
                }
                if let prefixesNode = fields["prefixes"] {
                    for (index, prefixNode) in try reader.list(prefixesNode, "services.\(service).prefixes").enumerated() {
                        let prefix = try reader.string(prefixNode, "services.\(service).prefixes[\(index)]")
                        guard prefix.hasPrefix("/") else {
                            throw reader.error(prefixNode, "services.\(service).prefixes[\(index)]", "must start with / (got '\(prefix)')")
                        }
                        configuration.prefixes.append((prefix, service))
                    }
                }
            }
        }
        if let node = top["controller"] {
            let fields = try reader.fields(node, "controller", known: ["tick", "lease", "analysisInterval", "stats", "prometheus"])
            if let value = fields["prometheus"] {
                let url = try reader.string(value, "controller.prometheus")
                guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                    throw reader.error(value, "controller.prometheus", "expected an http:// or https:// URL (got '\(url)')")
                }
                configuration.prometheus = url
            }
            if let value = fields["stats"] { configuration.fleetStats = try reader.strings(value, "controller.stats") }
            if let value = fields["tick"] { configuration.controllerTickMs = try milliseconds(value, "controller.tick", reader) }
            if let value = fields["lease"] { configuration.controllerLeaseMs = try milliseconds(value, "controller.lease", reader) }
            if let value = fields["analysisInterval"] { configuration.analysisInterval = try positive(value, "controller.analysisInterval", reader) }
        }
        if let node = top["slack"] {
            let fields = try reader.fields(node, "slack", known: ["channel", "operators"])
            if let value = fields["channel"] { configuration.defaultChannel = try reader.string(value, "slack.channel") }
            if let value = fields["operators"] { configuration.operators = try reader.strings(value, "slack.operators") }
        }
        return configuration
    }

    /// `250ms`, `2s`, `1m`.
    private static func milliseconds(_ node: Node, _ field: String, _ reader: YAMLReader) throws(GrayscaleError) -> Int {
        let text = try reader.string(node, field)
        if text.hasSuffix("ms"), let ms = Int(text.dropLast(2)), ms > 0 { return ms }
        return try positive(node, field, reader) * 1000
    }

    private static func positive(_ node: Node, _ field: String, _ reader: YAMLReader) throws(GrayscaleError) -> Int {
        let seconds = try reader.duration(node, field)
        guard seconds > 0 else { throw reader.error(node, field, "must be at least 1s") }
        return seconds
    }
}
