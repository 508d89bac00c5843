import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleStore

struct TrafficCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "traffic",
        abstract: "Show and change how a service's traffic is split.",
        subcommands: [Show.self, Set.self, Rules.self, History.self, Which.self]
    )

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the current split.")

        @OptionGroup var database: DatabaseOptions
        @Option(help: "The service, or platform: every service of the current platform release.") var service: String
        @OptionGroup var format: FormatOptions

        func run() throws {
            let database = try database.open()
            guard service == PlatformRelease.module else { return try emitSplit(database.serviceState(service), format: format) }
            // The current platform release: each of its services' splits.
            guard let platform = try database.currentPlatformRelease() else {
                throw GrayscaleError("no platform release yet (grayscale release publish-platform)", kind: .notFound)
            }
            let states = try platform.services.map { try database.serviceState($0) }
            let members: [String] = platform.releases.map { "\($0.service) \($0.ref) (\($0.status.rawValue))" }
            var lines: [String] = ["Platform release \(platform.label)\(platform.isActive ? "" : " (ended)"): " + members.joined(separator: ", ")]
            for split in states.compactMap(\.split) {
                lines += ["", "Service: \(split.service) (split revision \(split.revision))"] + split.statusLines
            }
            try format.emit(states.compactMap { $0.split.map(SplitSummary.init) }) { lines.joined(separator: "\n") }
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give the canary a share of users.",
            discussion: "--percent 30 is percent buckets 0-29; --range 20:55 is percent buckets 20 through 55 (36%). Fractions: --percent 0.5.")

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service.") var service: String
        @Option(help: "Percent of users from bucket 0: 30, 0.5.") var percent: String?
        @Option(help: "Percent buckets LOW:HIGH, inclusive: 20:55.") var range: String?
        @Option(name: .customLong("non-auth"), help: "Percent of requests without a token (default: the range's width).")
        var nonAuth: String?
        @OptionGroup var format: FormatOptions

        func validate() throws {
            guard (percent == nil) != (range == nil) else {
                throw ValidationError("give exactly one of --percent or --range")
            }
            if let range, !range.contains(":") {
                throw ValidationError("--range takes LOW:HIGH percent buckets, e.g. 20:55 (use --percent for a prefix)")
            }
            if let nonAuth, parseHundredths(nonAuth).map({ $0 > 10_000 }) ?? true {
                throw ValidationError("--non-auth: expected a percent from 0 to 100 with at most two decimals (got '\(nonAuth)')")
            }
        }

        func run() throws {
            let canaryRange = try CanaryRange.parse(percent: percent ?? range ?? "")
            let state = try database.open().setCanaryTraffic(service, range: canaryRange, nonAuthWeight: nonAuth.flatMap(parseHundredths),
                                                             by: actor.attribution, at: Date())
            try emitSplit(state, format: format)
        }
    }

    struct Rules: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show or set the allow list, deny list and opt-in.")

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service.") var service: String
        @Option(help: "Comma-separated appIds that always get the canary (empty string clears).") var allow: String?
        @Option(help: "Comma-separated appIds that never get the canary (empty string clears).") var deny: String?
        @Option(name: .customLong("opt-in"), help: "Whether X-Grayscale-Channel is honoured: true or false.") var optIn: Bool?
        @OptionGroup var format: FormatOptions

        func run() throws {
            let database = try database.open()
            func ids(_ text: String?) -> [String]? { text.map { $0.split(separator: ",").map(String.init) } }
            let state = allow == nil && deny == nil && optIn == nil
                ? try database.serviceState(service)
                : try database.setRules(service, allowList: ids(allow), denyList: ids(deny), optInAllowed: optIn,
                                        by: actor.attribution, at: Date())
            try emitSplit(state, format: format)
        }
    }

    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every split the service has had, oldest first.")

        @OptionGroup var database: DatabaseOptions
        @Option(help: "The service.") var service: String
        @OptionGroup var format: FormatOptions

        struct Entry: Encodable {
            var revision: Int
            var changedAt: Date
            var actor: String
            var action: String
            var reason: String?
            var split: SplitSummary
        }

        func run() throws {
            let history = try database.open().splitHistory(service).map {
                Entry(revision: $0.revision, changedAt: $0.changedAt, actor: $0.actor, action: $0.action, reason: $0.reason,
                      split: SplitSummary($0.split))
            }
            try format.emit(history) {
                table(["REV", "WHEN", "WHO", "ACTION", "STABLE", "CANARY", "RANGE", "NON-AUTH", "REASON"], history.map {
                    [String($0.revision), $0.changedAt.shortISO, $0.actor, $0.action, String($0.split.stable.number),
                     $0.split.canary.map { String($0.number) } ?? "-", $0.split.canary?.range.text ?? "-",
                     "\(formatHundredths(Int(($0.split.nonAuthWeightPercent * 100).rounded())))%", $0.reason ?? ""]
                })
            }
        }
    }

    struct Which: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Which version a user gets now, and why: the salt, the user's bucket, the rule that decided.")

        @OptionGroup var database: DatabaseOptions
        @Option(help: "The service.") var service: String
        @Option(name: .customLong("app-id"), help: "The user's appId.") var appId: String
        @OptionGroup var format: FormatOptions

        struct Answer: Encodable {
            var service: String
            var appId: String
            var salt: String?
            var bucket: Int?
            var percentBucket: Int?
            var target: RouteTarget
            var version: ReleaseRef
            var reason: Route.Reason
            var explanation: String
        }

        func run() throws {
            let split = try database.open().split(service)
            let route = split.route(appId: appId)
            // Lists decide before the bucket, but the bucket is still worth showing.
            let bucket = route.bucket ?? split.canary.map { Bucket.of(appId: appId, salt: $0.salt) }
            let version = route.target == .canary ? split.canary!.release : split.stable
            let answer = Answer(service: service, appId: appId, salt: split.canary?.salt, bucket: bucket?.value,
                                percentBucket: bucket?.percent, target: route.target, version: version, reason: route.reason,
                                explanation: route.reason.explanation(bucket: bucket, range: split.range))
            try format.emit(answer) {
                var lines = ["\(service) for appId \(appId):"]
                if let canary = split.canary, let bucket {
                    lines.append("  canary \(canary.release), salt \(canary.salt)")
                    lines.append("  bucket \(bucket) of 10000 (percent bucket \(bucket.percent))")
                }
                lines.append("  gets \(version) (\(route.target.rawValue)): \(answer.explanation)")
                return lines.joined(separator: "\n")
            }
        }
    }
}
