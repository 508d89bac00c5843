/// What humans read: the design document's reply lines, and `traffic which`'s answer.
extension TrafficSplit {
    /// `Stable Version 7(v 2.1.0) : other`, `Canary Version 8(v 2.1.1) appid range: [20 - 55]`,
    /// `Non-Auth GrayScale Weight: 36%`.
    public var statusLines: [String] {
        var lines = ["Stable \(stable) : other"]
        if let canary {
            lines.append("Canary \(canary.release) appid range: \(canary.range)")
        } else {
            lines.append("Canary: none (all traffic to stable)")
        }
        lines.append("Non-Auth GrayScale Weight: \(formatHundredths(nonAuthWeight))%")
        if let mirror = canary?.mirror {
            lines.append("Mirror: \(formatHundredths(mirror))% of stable's GET and HEAD requests copied to the canary (answers discarded)")
        }
        return lines
    }

    /// The routing rules beyond the range: lists and opt-in.
    public var ruleLines: [String] {
        [
            "Allow list (always canary): " + (allowList.isEmpty ? "-" : allowList.joined(separator: ", ")),
            "Deny list (never canary): " + (denyList.isEmpty ? "-" : denyList.joined(separator: ", ")),
            "Opt-in by header: " + (optInAllowed ? "allowed" : "not allowed"),
        ]
    }
}

extension Route.Reason {
    /// Why a user gets the version they get, in words.
    public func explanation(bucket: Bucket?, range: CanaryRange) -> String {
        switch self {
        case .noCanary: return "there is no canary; everyone gets stable"
        case .allowList: return "the appId is on the allow list (always canary)"
        case .denyList: return "the appId is on the deny list (never canary)"
        case .inRange: return "bucket \(bucket.map(String.init(describing:)) ?? "?") is in the canary range \(range)"
        case .outOfRange: return "bucket \(bucket.map(String.init(describing:)) ?? "?") is outside the canary range \(range)"
        case .anonymousWeight: return "no token: drawn with the non-auth weight"
        case .optIn: return "the client chose its channel and the policy allows opt-in"
        }
    }
}
