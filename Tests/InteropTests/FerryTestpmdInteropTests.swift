import XCTest
import FerryConfig
import FerryTestSupport
import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Ferry against DPDK's own vhost backend: dpdk-testpmd with `net_vhost` ports in io mode.
///
/// Ferry runs in-process (the same `FerryRuntime` the CLI drives) on CPU 1; testpmd forwards on
/// CPU 0. These are the real-peer tests the README promises: under CI they must run.
final class FerryTestpmdInteropTests: InteropTestCase {
    private func startBackend(sockets: Int) throws -> [String] {
        try startBackend(sockets: sockets, options: { $0.extraTestpmdArgs = [] })
    }

    private func run(_ config: FerryConfiguration) throws -> RunSummary {
        let runtime = FerryRuntime(config: config)
        runtime.handleSignals = false
        runtime.output = { _ in }
        return try runtime.run()
    }

    private func configuration(paths: [String]) throws -> FerryConfiguration {
        try configuration(paths: paths, extra: [])
    }

    /// Two ports, paired, io on both sides: the frames seeded by tx_first circle for two
    /// seconds. Afterwards Ferry's counters and testpmd's agree exactly, once the frames each
    /// side had not yet taken at stop are counted.
    func testTwoPortIOCountersAgreeWithTestpmd() throws {
        let paths = try startBackend(sockets: 2)
        let summary = try run(configuration(paths: paths))
        let stats = try XCTUnwrap(backend).stop()
        print("interop: ferry \(summary.ports.map { "port \($0.port) rx \($0.rxPackets) tx \($0.txPackets)" }), \(String(format: "%.2f", summary.ports[0].rxPps / 1e6)) Mpps on port 0")

        for port in summary.ports {
            let peer = try XCTUnwrap(stats.port(port.port), "testpmd reported no port \(port.port)")
            XCTAssertGreaterThan(port.rxPackets, 0, "port \(port.port) received nothing")
            XCTAssertGreaterThan(port.txPackets, 0, "port \(port.port) sent nothing")
            XCTAssertTrue(port.linkUp)
            // Every frame Ferry sent was received by testpmd, or was still on the TX ring.
            XCTAssertEqual(port.txPackets, peer.rxPackets + port.txInFlightAtStop, "port \(port.port) TX accounting")
            // Every frame testpmd sent was received by Ferry, or was still on the RX ring.
            XCTAssertEqual(peer.txPackets, port.rxPackets + port.rxUnreadAtStop, "port \(port.port) RX accounting")
            XCTAssertEqual(port.rxErrors, 0)
            if peer.hasNICStatistics {
                XCTAssertEqual(port.txBytes, peer.rxBytes + port.txInFlightAtStop * 64, "port \(port.port) TX bytes")
            }
        }
        // What testpmd received on one port it sent on the other, or dropped.
        let p0 = try XCTUnwrap(stats.port(0)), p1 = try XCTUnwrap(stats.port(1))
        XCTAssertEqual(p0.rxPackets, p1.txPackets + p1.txDropped)
        XCTAssertEqual(p1.rxPackets, p0.txPackets + p0.txDropped)
    }

    /// testpmd's log of the vhost-user messages it read, per socket, is the seed's order:
    /// init, FEATURES_OK (every SET_VRING_CALL before SET_FEATURES), DRIVER_OK (SET_MEM_TABLE,
    /// then NUM, BASE, ADDR and KICK last per vring, then pair 0 enabled), then the stop
    /// (every pair disabled, then GET_VRING_BASE per vring).
    func testVhostMessageOrderIsTheSeeds() throws {
        let paths = try startBackend(sockets: 1)
        _ = try run(configuration(paths: paths, extra: ["duration=0.3"]))
        let testpmd = try XCTUnwrap(backend)
        _ = try testpmd.stop()
        let order = testpmd.vhostMessageOrder(socket: paths[0]).map { $0.replacingOccurrences(of: "VHOST_USER_", with: "") }
        let expected = [
            "SET_OWNER", "GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
            "SET_VRING_CALL", "SET_VRING_CALL", "SET_FEATURES", "SET_STATUS", "GET_STATUS",
            "SET_MEM_TABLE",
            "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK",
            "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK",
            "SET_VRING_ENABLE", "SET_VRING_ENABLE", "SET_STATUS", "GET_STATUS",
            "SET_VRING_ENABLE", "SET_VRING_ENABLE", "GET_VRING_BASE", "GET_VRING_BASE",
        ]
        XCTAssertEqual(order, expected)
    }

    /// A backend that dies mid-run takes its port's link down; Ferry keeps running to the end
    /// of its duration and stops cleanly.
    func testBackendKilledMidRunTakesLinkDown() throws {
        let paths = try startBackend(sockets: 1)
        let testpmd = try XCTUnwrap(backend)
        let config = try configuration(paths: paths, extra: ["duration=2"])
        let done = expectation(description: "Ferry returns")
        nonisolated(unsafe) var result: Result<RunSummary, Error>?
        let runner = Thread {
            result = Result { try self.run(config) }
            done.fulfill()
        }
        runner.start()
        // Once testpmd has the device running, let traffic flow, then kill the backend under
        // Ferry's feet.
        XCTAssertTrue(testpmd.waitForLog("virtio is now ready for processing", timeoutMs: 20_000))
        let killAt = Date().addingTimeInterval(0.5)
        while Date() < killAt { usleep(50_000) }
        testpmd.kill()
        wait(for: [done], timeout: 30)
        let summary = try XCTUnwrap(result).get()
        XCTAssertFalse(summary.ports[0].linkUp, "the link should be down after the backend died")
        XCTAssertGreaterThan(summary.ports[0].rxPackets, 0, "traffic should have flowed before the kill")
        XCTAssertGreaterThanOrEqual(summary.durationSeconds, 1.9, "Ferry should run to the end of its duration")
    }
}
