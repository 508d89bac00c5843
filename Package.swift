// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Grayscale",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "grayscale", targets: ["grayscale"]),
        .library(name: "GrayscaleCore", targets: ["GrayscaleCore"]),
        .library(name: "GrayscaleStore", targets: ["GrayscaleStore"]),
        .library(name: "GrayscaleIntegrations", targets: ["GrayscaleIntegrations"]),
        .library(name: "GrayscaleProxy", targets: ["GrayscaleProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
        .package(url: "https://github.com/apple/swift-openapi-generator", from: "1.14.3"),
        .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.13.4"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird", from: "2.1.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .target(
            name: "GrayscaleCore",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // The edges: files and the environment are read here, never in Core.
        .target(
            name: "GrayscaleEdges",
            dependencies: ["GrayscaleCore"]
        ),
        // Stand-in releases and demo traffic, for `grayscale demo` and the end-to-end tests.
        .target(
            name: "GrayscaleDemo",
            dependencies: [
                "GrayscaleCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "GrayscaleStore",
            dependencies: [
                "GrayscaleCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "GrayscaleIntegrations",
            dependencies: [
                "GrayscaleCore",
                "GrayscaleEdges",
                "CCurl",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "GrayscaleProxy",
            dependencies: [
                "GrayscaleCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "GrayscaleSimulation",
            dependencies: ["GrayscaleCore", "GrayscaleEdges", .product(name: "Yams", package: "Yams")]
        ),
        // The admin API's types and server protocol, generated from openapi.yaml (the contract is the source).
        .target(
            name: "GrayscaleAdminContract",
            dependencies: [.product(name: "OpenAPIRuntime", package: "swift-openapi-runtime")],
            // The generated code's unused `public import`s warn; nothing here is written by hand but one comment.
            swiftSettings: [.unsafeFlags(["-suppress-warnings"])],
            plugins: [.plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator")]
        ),
        .target(
            name: "GrayscaleServer",
            dependencies: [
                "GrayscaleCore",
                "GrayscaleEdges",
                "GrayscaleStore",
                "GrayscaleProxy",
                "GrayscaleIntegrations",
                "GrayscaleAdminContract",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "grayscale",
            dependencies: [
                "GrayscaleCore",
                "GrayscaleEdges",
                "GrayscaleDemo",
                "GrayscaleStore",
                "GrayscaleIntegrations",
                "GrayscaleProxy",
                "GrayscaleServer",
                "GrayscaleSimulation",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The routing-decision benchmark (Benchmarks/proxy.sh runs it with the interposer preloaded).
        .executableTarget(
            name: "grayscale-bench",
            dependencies: [
                "GrayscaleCore",
                "GrayscaleProxy",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Benchmarks/RoutingBenchmark"
        ),
        // The ceiling SwiftNIO sets for a proxy: a byte relay, one upstream connection per client (Benchmarks/proxy.sh).
        .executableTarget(
            name: "grayscale-relay",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/ProxyCeiling"
        ),
        // The store on each engine and the replicas' routing propagation (Benchmarks/replicas.sh runs it).
        .executableTarget(
            name: "grayscale-store-bench",
            dependencies: ["GrayscaleCore", "GrayscaleStore", "GrayscaleIntegrations"],
            path: "Benchmarks/StoreBenchmark"
        ),
        // Stand-ins for the outside world the tests share: one loopback HTTP fixture server and, on it,
        // an echo, a release's upstream, Slack, Tencent Cloud, a metrics exporter and a proxy's /stats; PostgreSQL.
        .target(
            name: "GrayscaleTestSupport",
            dependencies: [
                "GrayscaleIntegrations",
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/GrayscaleTestSupport"
        ),
        .testTarget(
            name: "GrayscaleCoreTests",
            dependencies: ["GrayscaleCore", "GrayscaleEdges"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "GrayscaleStoreTests",
            dependencies: ["GrayscaleCore", "GrayscaleStore", "GrayscaleTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        .testTarget(
            name: "GrayscaleIntegrationsTests",
            dependencies: [
                "grayscale",
                "GrayscaleTestSupport",
                "GrayscaleIntegrations",
                "GrayscaleCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "GrayscaleProxyTests",
            dependencies: [
                "GrayscaleTestSupport",
                "GrayscaleProxy",
                "GrayscaleServer",
                "GrayscaleCore",
                "GrayscaleStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "GrayscaleSimulationTests",
            dependencies: ["GrayscaleSimulation", "GrayscaleCore"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "GrayscaleServerTests",
            dependencies: [
                "GrayscaleDemo",
                "GrayscaleTestSupport",
                "grayscale",
                "GrayscaleServer",
                "GrayscaleIntegrations",
                .product(name: "Yams", package: "Yams"),
                "GrayscaleCore",
                "GrayscaleStore",
                "GrayscaleProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "GrayscaleCLITests",
            dependencies: [
                "grayscale",
                "GrayscaleDemo",
                "GrayscaleTestSupport",
                "GrayscaleServer",
                "GrayscaleIntegrations",
                .product(name: "Logging", package: "swift-log"),
                "GrayscaleCore",
                "GrayscaleStore",
                "GrayscaleProxy",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
