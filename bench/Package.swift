// swift-tools-version:6.0
// Ferry's benchmark harness: a package of its own, so `swift test` in the root never builds it.
// It depends on the root package by path and uses only its library products.
import PackageDescription

let package = Package(
    name: "FerryBench",
    dependencies: [
        .package(name: "Ferry", path: ".."),
        // Latency histograms with coordinated-omission-aware recording.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        // The malloc counter that ordo-one/benchmark's MallocInterposer trait uses, on its own:
        // the allocation check needs its per-allocation hook to attribute mallocs to threads.
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
    ],
    targets: [
        // The harness: DUT launchers, stats parsing, the vhost-user traffic generator, results.
        .target(name: "BenchCore", dependencies: [
            .product(name: "FerryForwarding", package: "Ferry"),
            .product(name: "FerryTestSupport", package: "Ferry"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        // `ferry-bench`: throughput A/B, latency, start-up; writes the JSON.
        .executableTarget(name: "ferry-bench", dependencies: ["BenchCore"]),
        // `ferry-alloc-check`: Ferry's forwarding loop in-process, mallocs counted per thread.
        .executableTarget(name: "ferry-alloc-check", dependencies: [
            "BenchCore",
            .product(name: "FerryForwarding", package: "Ferry"),
            .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
        ]),
        // `ring-ir`: one split ring's driver side under callgrind, Ferry's vs a prototype fast path.
        .executableTarget(name: "ring-ir", dependencies: [
            "BenchCore",
            .product(name: "FerryForwarding", package: "Ferry"),
        ]),
        .testTarget(name: "BenchCoreTests", dependencies: [
            "BenchCore",
            .product(name: "FerryForwarding", package: "Ferry"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
