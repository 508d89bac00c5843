import Foundation
import GrayscaleCore
import GrayscaleIntegrations

/// Where a service's split takes effect besides the embedded proxy (which reads the
/// database itself): e.g. a Tencent SCF alias. The controller applies every committed
/// split through it, re-applies the last one on start, and holds the rollout while
/// the platform does not show it.
public protocol TrafficDriver: Sendable {
    var name: String { get }
    func apply(_ split: TrafficSplit) async throws
}

extension SCFTrafficDriver: TrafficDriver {
    public var name: String { "scf:\(function)/\(alias)" }
}
