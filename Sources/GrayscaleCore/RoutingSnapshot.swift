/// What a proxy needs to route a service, as the controller hands it to a fleet of
/// proxies: the releases and the split, under a version that changes with either.
public struct RoutingSnapshot: Codable, Hashable, Sendable {
    public struct Service: Codable, Hashable, Sendable {
        public var service: String
        public var releases: [Release]
        public var split: TrafficSplit?
    }

    public var version: String
    public var services: [Service]

    public init(states: [ServiceState]) {
        services = states.map { Service(service: $0.service, releases: $0.releases, split: $0.split) }
        version = services.map { "\($0.service):\($0.split?.revision ?? 0):\($0.releases.count)" }.joined(separator: ",")
    }

    public var states: [ServiceState] {
        services.map { ServiceState(service: $0.service, releases: $0.releases, split: $0.split) }
    }
}
