import Foundation

extension ServiceState {
    /// Applies the actions that change releases or the split, in order, with the same
    /// rules as a human's change. The store runs this inside the tick's transaction.
    public mutating func apply(_ actions: [ControllerAction], at now: Date) throws(GrayscaleError) {
        for action in actions {
            switch action {
            case .setSplit(let range, let weight, _):
                try setCanaryTraffic(range: range, nonAuthWeight: weight)
            case .setRules(let allowList, let denyList, let optIn):
                if split != nil { try setRules(allowList: allowList, denyList: denyList, optInAllowed: optIn) }
            case .rollBack:
                if canary != nil { try rollBack(at: now) }
            case .promote:
                if canary != nil { try finish(at: now) }
            case .runSmokeChecks, .recordVerdict, .audit, .notify:
                break
            }
        }
    }
}
