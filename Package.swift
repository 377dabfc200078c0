// swift-tools-version:6.0
// The target graph is the architecture: a target only imports targets listed above it.
import PackageDescription

let package = Package(
    name: "Ferry",
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        // Libraries for bench/, a package of its own so `swift test` here never builds it.
        .library(name: "FerryForwarding", targets: ["Forwarding", "FerryConfig", "VirtioUser", "Vhost", "Virtio"]),
        .library(name: "FerryTestSupport", targets: ["FerryTestSupport"]),
    ],
    dependencies: [
        // Tests only: property-based checks of the rings against a reference model.
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        // C shims for what Swift cannot see: eventfd, memfd, CMSG, affinity, atomics, cpu relax.
        .target(name: "CFerry"),
        // libnuma (libnuma-dev) as a system library.
        .systemLibrary(name: "CNuma"),
        // Pure virtio data structures: feature bits, net header, driver-side rings, control messages.
        .target(name: "Virtio", dependencies: ["CFerry"]),
        // The vhost backend protocol and its transports; the vhost-user codec is pure.
        .target(name: "Vhost", dependencies: ["CFerry", "Virtio"]),
        // The virtio-user device lifecycle (DPDK's virtio_user_dev.c), shared memory and buffers.
        .target(name: "VirtioUser", dependencies: ["CFerry", "Virtio", "Vhost"]),
        // key=value configuration: reader and validation.
        .target(name: "FerryConfig", dependencies: ["Virtio"]),
        // Ports, streams, engines, pinned workers and stats.
        .target(name: "Forwarding", dependencies: ["CFerry", "CNuma", "Virtio", "Vhost", "VirtioUser", "FerryConfig"]),
        // The CLI.
        .executableTarget(name: "ferry", dependencies: ["Forwarding", "FerryConfig"]),

        // The kernel lab's guest-side driver; Tests/kernel-lab/run.sh builds it static and runs
        // it inside a QEMU guest against vhost-net and vdpa_sim_net.
        .executableTarget(name: "ferry-kernel-lab", dependencies: ["CFerry", "Virtio", "Vhost", "VirtioUser"],
                          path: "Tests/kernel-lab/Driver"),

        // Test doubles and real-peer harnesses. Test support, never product.
        .target(name: "FerryTestSupport", dependencies: ["CFerry", "Virtio", "Vhost"]),

        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "Vhost", "FerryTestSupport"]),
        .testTarget(name: "RingPropertyTests", dependencies: [
            "Virtio", "FerryTestSupport", .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "VhostTests", dependencies: ["Vhost", "FerryTestSupport"]),
        .testTarget(name: "FerryConfigTests", dependencies: ["FerryConfig"]),
        .testTarget(name: "VirtioUserTests", dependencies: ["VirtioUser", "FerryTestSupport"]),
        .testTarget(name: "ForwardingTests", dependencies: ["Forwarding", "FerryTestSupport"]),
        .testTarget(name: "InteropTests", dependencies: ["Forwarding", "FerryConfig", "FerryTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
