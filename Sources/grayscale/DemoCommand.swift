import ArgumentParser
import Foundation
import GrayscaleCore
import GrayscaleDemo
import GrayscaleServer
import NIOPosix

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Stand-ins for trying Grayscale on one machine: demo releases and synthetic users.",
        subcommands: [Upstream.self, Traffic.self])

    struct Upstream: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A demo release on a loopback port; with --fail-dotted it rejects names like xx.xx (the design document's bug).")

        @Option(help: "HOST:PORT to listen on.") var listen: String
        @Option(help: "The release label it answers with.") var label: String
        @Flag(name: .customLong("fail-dotted"), help: "Answer 500 to deploys of names containing a dot.") var failDotted = false

        func run() async throws {
            let (host, port) = try ProxyCommand.address(listen, "--listen")
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let upstream = try await DemoUpstream(host: host, port: port, label: label, failDotted: failDotted, group: group)
            print("demo release \(label) on \(host):\(upstream.port)\(failDotted ? " (fails for dotted names)" : "")")
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
    }

    struct Traffic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Synthetic users deploying through the proxy: appIds in bearer tokens, 7.5% with dotted names, 10% without a token.")

        @Option(help: "The proxy, HOST:PORT.") var proxy = "127.0.0.1:8080"
        @Option(help: "How many distinct users.") var users = 3000
        @Option(help: "Requests per second in all.") var rate = 200.0
        @Option(help: "Stop after this long (default: run until stopped).") var duration: String?

        func run() async throws {
            let (host, port) = try ProxyCommand.address(proxy, "--proxy")
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let traffic = DemoTraffic(host: host, port: port, users: users, requestsPerSecond: rate)
            let task = Task { try await traffic.run(group: group) }
            if let duration, let seconds = parseDuration(duration) {
                try await Task.sleep(for: .seconds(seconds))
                task.cancel()
                let (requests, failures) = try await task.value
                print("\(requests) requests, \(failures) failed")
            } else {
                _ = try await task.value
            }
        }
    }
}
