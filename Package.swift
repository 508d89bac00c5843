// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Grayscale",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "grayscale", targets: ["grayscale"]),
        .library(name: "GrayscaleCore", targets: ["GrayscaleCore"]),
        .library(name: "GrayscaleStore", targets: ["GrayscaleStore"]),
        .library(name: "GrayscaleIntegrations", targets: ["GrayscaleIntegrations"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
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
        .target(
            name: "GrayscaleStore",
            dependencies: [
                "GrayscaleCore",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "GrayscaleIntegrations",
            dependencies: [
                "GrayscaleCore",
                "CCurl",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "grayscale",
            dependencies: [
                "GrayscaleCore",
                "GrayscaleStore",
                "GrayscaleIntegrations",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "GrayscaleCoreTests",
            dependencies: ["GrayscaleCore"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "GrayscaleStoreTests",
            dependencies: ["GrayscaleCore", "GrayscaleStore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .testTarget(
            name: "GrayscaleIntegrationsTests",
            dependencies: [
                "GrayscaleIntegrations",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "GrayscaleCLITests",
            dependencies: ["grayscale", "GrayscaleCore"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
