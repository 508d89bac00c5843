import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleEdges
import GrayscaleIntegrations
import GrayscaleServer
import GrayscaleStore

struct ReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Publish, announce, list, roll back and finish releases.",
        subcommands: [Publish.self, PublishPlatform.self, Announce.self, List.self, Rollback.self, Finish.self]
    )

    struct Announce: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Announce a published canary in the release channel: under a policy with `announce: 24h` it starts only in a promotion window that opens at least that long after.",
            discussion: """
                Posts the release, its label and its notes (--notes FILE, else the git ref it was built from) to the policy's Slack
                channel through the outbox, and records when. The first announcement stands: announcing again changes nothing.
                """)

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service, e.g. engine.") var service: String?
        @Option(help: "The release number.") var number: Int?
        @Option(help: "A platform release (instead of --service and --number): every service in it, in one message.") var platform: String?
        @Option(help: "A file with the release notes (default: the git ref the release was built from).") var notes: String?
        @Option(help: "The rollout policies folder (for the channel and the announce lead).") var policies = "policies"
        @Option(help: "The channel when the policy names none.") var channel = "#grayscale"

        func validate() throws {
            guard (platform == nil) == (service != nil && number != nil), service == nil || number != nil else {
                throw ValidationError("give --service and --number, or --platform")
            }
        }

        func run() throws {
            var text = ""
            if let notes {
                // A regular file of at most 64 KiB: the notes go to the channel as they are.
                let attributes = try? FileManager.default.attributesOfItem(atPath: notes)
                guard attributes?[.type] as? FileAttributeType == .typeRegular else {
                    throw ValidationError("\(notes): cannot read the release notes (not a regular file)")
                }
                guard (attributes?[.size] as? Int ?? 0) <= 64 * 1024 else {
                    throw ValidationError("\(notes): the release notes are over 64 KiB; post a link to them instead")
                }
                guard let data = FileManager.default.contents(atPath: notes), let read = String(data: data, encoding: .utf8) else {
                    throw ValidationError("\(notes): cannot read the release notes (a UTF-8 text file)")
                }
                text = read
            }
            var library = PolicyLibrary(folder: policies)
            do {
                try library.reload()
            } catch {
                throw ValidationError("\(error) (the channel and the announce lead come from the service's policy)")
            }
            for problem in library.problems { FileHandle.standardError.write(Data("warning: \(problem)\n".utf8)) }
            let database = try database.open()
            if let platform { return try announcePlatform(platform, notes: text, library: library, database: database) }
            guard let service, let number else { return }
            let policy = library.policy(for: service)
            let (announcement, new) = try database.announce(
                service, number: number, notes: text, by: actor.attribution, channel: policy.slack?.channel ?? channel, at: Date()
            ) { announcement, release in
                var announced = announcement
                if announced.notes.isEmpty, let ref = release.sourceRef { announced.notes = "built from \(ref)" }
                return announced.message(label: release.label, window: policy.window, lead: policy.announce)
            }
            let when = PromotionWindow.format(announcement.at, in: policy.window.timeZone)
            guard new else {
                print("\(service) release \(number) was announced before, \(when) by \(announcement.actor); nothing changed.")
                return
            }
            print("Announced \(service) release \(number) \(when) in \(policy.slack?.channel ?? channel).")
            if let lead = policy.announce, let opens = policy.window.nextOpening(atOrAfter: announcement.at.addingTimeInterval(Double(lead))) {
                print("Policy \(policy.name) asks for \(formatDuration(lead)): it starts no earlier than \(PromotionWindow.format(opens, in: policy.window.timeZone)).")
            }
        }
        /// Announces every service of a platform release, in one message that names them all.
        func announcePlatform(_ label: String, notes: String, library: PolicyLibrary, database: GrayscaleDatabase) throws {
            guard let platform = try database.platformReleases().first(where: { $0.label == label }) else {
                throw GrayscaleError("no platform release \(label) (publish it first: grayscale release publish-platform)", kind: .notFound)
            }
            let policy = library.policy(for: PlatformRelease.module), now = Date()
            let channel = policy.slack?.channel ?? self.channel
            var text = "platform release \(label): " + platform.releases.map { "\($0.service) \($0.ref)" }.joined(separator: ", ")
                + " announced by \(actor.attribution.actor)"
            if let lead = policy.announce, let opens = policy.window.nextOpening(atOrAfter: now.addingTimeInterval(Double(lead))) {
                text += "; it starts no earlier than the promotion window opening \(PromotionWindow.format(opens, in: policy.window.timeZone))"
            }
            let shown = notes.trimmingCharacters(in: .whitespacesAndNewlines)
            if !shown.isEmpty { text += "\nNotes: " + shown }
            for (index, release) in platform.releases.enumerated() {
                let (announcement, new) = try database.announce(release.service, number: release.number, notes: notes, by: actor.attribution,
                                                                channel: channel, at: now, post: index == 0) { _, _ in text }
                let when = PromotionWindow.format(announcement.at, in: policy.window.timeZone)
                print(new ? "Announced \(release.service) release \(release.number) \(when) in \(channel) (platform release \(label))."
                          : "\(release.service) release \(release.number) was announced before, \(when) by \(announcement.actor); nothing changed.")
            }
        }
    }

    /// Publishes a platform release from its manifest.
    struct PublishPlatform: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "publish-platform",
            abstract: "Publish several services' releases as one platform release: one salt, so the same users are on every canary.",
            discussion: """
                The manifest (YAML) names the platform release and each service's release:

                  platform: 2.1.1
                  ref: 3f2c1a9            # optional: the git ref, for every release
                  services:
                    engine:   { number: 8, label: v2.1.1, upstream: "http://127.0.0.1:9008" }
                    registry: { number: 5, label: v1.4.0, upstream: "http://127.0.0.1:9105" }

                Every service needs a stable release already (each release becomes its service's canary). The services then
                advance together under the policy with `service: platform`, and `rollback: together` (its default) rolls
                them all back when one fails. The bot takes them as `-m platform`.
                """)

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Argument(help: "The platform release's manifest (YAML).") var manifest: String
        @OptionGroup var format: FormatOptions

        func run() throws {
            let (label, drafts) = try PlatformManifest.load(path: manifest)
            let salt = Salt.random()
            let states = try database.open().publishPlatform(label, drafts, salt: salt, by: actor.attribution, at: Date())
            let releases = zip(states, drafts).compactMap { state, draft in state.release(number: draft.number) }
            try format.emit(releases) {
                (["Published platform release \(label): \(releases.count) canaries with one salt, no users until the rollout starts"]
                    + releases.map { "  \($0.service) \($0.ref) at \($0.upstream)" } + ["Salt: \(salt)"]).joined(separator: "\n")
            }
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record a new release: the first of a service becomes stable, later ones the canary (with no users yet).",
            discussion: """
                With --scf-function, publishes a new version of that Tencent SCF function (PublishVersion) and records it with
                that version as its number. Credentials: $TENCENTCLOUD_SECRET_ID and $TENCENTCLOUD_SECRET_KEY (or _FILE).
                """)

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service (the bot's -m module), e.g. engine.") var service: String
        @Option(help: "The platform's release number (function version); must increase.") var number: Int?
        @Option(name: .customLong("scf-function"), help: "Publish a version of this Tencent SCF function and use its number.")
        var scfFunction: String?
        @Option(name: .customLong("scf-region"), help: "The SCF region, e.g. ap-guangzhou.") var scfRegion = "ap-guangzhou"
        @Option(name: .customLong("scf-namespace"), help: "The SCF namespace.") var scfNamespace = "default"
        @Option(name: .customLong("scf-endpoint"), help: "The Cloud API endpoint.") var scfEndpoint = "https://scf.tencentcloudapi.com/"
        @Option(help: "The human label, e.g. v2.1.1.") var label: String
        @Option(help: "Where the release serves, e.g. http://127.0.0.1:9008.") var upstream: String
        @Option(help: "The git ref it was built from.") var ref: String?
        @OptionGroup var format: FormatOptions

        func validate() throws {
            guard (number == nil) != (scfFunction == nil) else {
                throw ValidationError("give --number, or --scf-function to publish a new SCF version and use its number")
            }
        }

        func run() async throws {
            let number: Int
            if let given = self.number { number = given } else { number = try await publishSCFVersion() }
            let draft = ReleaseDraft(service: service, number: number, label: label, upstream: upstream, sourceRef: ref)
            let state = try database.open().publish(draft, salt: Salt.random(), by: actor.attribution, at: Date())
            let release = state.release(number: number)!
            try format.emit(release) {
                let role = release.status == .stable
                    ? "stable (first release of \(service)): it takes all traffic"
                    : "canary, with no users until a split is set (grayscale traffic set)"
                return "Published \(service) \(release.ref) as \(role)\nSalt: \(release.salt)"
            }
        }

        /// PublishVersion on Tencent SCF: the new function version is the release number.
        func publishSCFVersion() async throws -> Int {
            guard let function = scfFunction, let id = Secret.read("TENCENTCLOUD_SECRET_ID"), let key = Secret.read("TENCENTCLOUD_SECRET_KEY") else {
                throw ValidationError("--scf-function needs TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY in the environment")
            }
            let client = TencentCloudClient(endpoint: scfEndpoint, service: "scf", version: "2018-04-16", region: scfRegion,
                                            secretId: id, secretKey: key)
            do {
                return try await SCFTrafficDriver(client: client, function: function, alias: "", namespace: scfNamespace)
                    .publishVersion(description: "\(service) \(label)\(ref.map { " (\($0))" } ?? "")")
            } catch {
                throw GrayscaleError("SCF PublishVersion of \(function): \(error)")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a service's releases, newest first.")

        @OptionGroup var database: DatabaseOptions
        @Option(help: "The service.") var service: String
        @OptionGroup var format: FormatOptions

        func run() throws {
            let releases = try database.open().serviceState(service).releases.reversed().map { $0 }
            try format.emit(releases) {
                table(["NUMBER", "LABEL", "STATUS", "UPSTREAM", "REF", "PUBLISHED", "SALT"], releases.map {
                    [String($0.number), $0.label, $0.status.rawValue, $0.upstream, $0.sourceRef ?? "-", $0.publishedAt.shortISO, $0.salt]
                })
            }
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send all traffic back to the stable release.")

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service.") var service: String
        @OptionGroup var format: FormatOptions

        func run() throws {
            let state = try database.open().rollBack(service, by: actor.attribution, at: Date())
            try emitSplit(state, format: format, headline: "Rolled back \(service): all traffic goes to the stable release.")
        }
    }

    struct Finish: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Complete the gray test: the canary becomes stable and takes all traffic.")

        @OptionGroup var database: DatabaseOptions
        @OptionGroup var actor: ActorOptions
        @Option(help: "The service.") var service: String
        @OptionGroup var format: FormatOptions

        func run() throws {
            let state = try database.open().finish(service, by: actor.attribution, at: Date())
            try emitSplit(state, format: format, headline: "Finished \(service): \(state.stable!.ref) is stable.")
        }
    }
}

/// Prints a service's split: the design document's lines, or `SplitSummary` as JSON.
func emitSplit(_ state: ServiceState, format: FormatOptions, headline: String? = nil) throws {
    guard let split = state.split else { throw GrayscaleError("\(state.service): no release published yet") }
    let platform = state.canary?.platform.map { "Platform release \($0): the canary's users are the same on every service in it" }
    try format.emit(SplitSummary(split)) {
        ([headline].compactMap { $0 } + ["Service: \(split.service) (split revision \(split.revision))"] + [platform].compactMap { $0 }
            + split.statusLines + split.ruleLines).joined(separator: "\n")
    }
}
