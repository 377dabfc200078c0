import XCTest
import FerryConfig
import FerryTestSupport
import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Backend restarts under load (DTS's server-mode loopback scenario) and Ferry restarts
/// against a long-running backend, with dpdk-testpmd as the backend.
final class FerryReconnectTests: InteropTestCase {
    static let restarts = 20

    /// Ferry listens (`server=1`); testpmd connects (`client=1`). Kill and relaunch testpmd
    /// 20 times: the link goes down and comes back each time, traffic resumes, Ferry never
    /// exits, and afterwards its counters add up.
    func testBackendRestartsInServerMode() throws {
        let paths = socketPaths(1)
        let runtime = try makeRuntime(paths: paths, extra: ["port.0.server=1", "duration=0"])
        let ferry = Background(runtime)
        try cycleBackend(runtime: runtime, ferry: ferry, paths: paths, clientMode: true)
    }

    /// The same on packed rings, where DPDK resets the queues and drops what is in flight:
    /// Ferry restores its own ring state, so traffic resumes and the counters add up.
    func testBackendRestartsInServerModeOnPackedRings() throws {
        let paths = socketPaths(1)
        let runtime = try makeRuntime(paths: paths, extra: ["port.0.server=1", "port.0.packed_vq=1", "duration=0"])
        let ferry = Background(runtime)
        try cycleBackend(runtime: runtime, ferry: ferry, paths: paths, clientMode: true, restarts: 5)
    }

    /// testpmd listens; Ferry connects and, with `reconnect_ms`, reconnects every 100 ms after
    /// testpmd goes away. DPDK's virtio-user cannot do this.
    func testBackendRestartsInClientModeWithReconnect() throws {
        let paths = try startBackend(sockets: 1)
        let runtime = try makeRuntime(paths: paths, extra: ["port.0.reconnect_ms=100", "duration=0"])
        let ferry = Background(runtime)
        try cycleBackend(runtime: runtime, ferry: ferry, paths: paths, clientMode: false, alreadyStarted: true)
    }

    private func cycleBackend(runtime: FerryRuntime, ferry: Background, paths: [String], clientMode: Bool,
                              alreadyStarted: Bool = false, restarts: Int = FerryReconnectTests.restarts) throws {
        var linkUpToTraffic: [Double] = []
        for cycle in 0...restarts {
            if cycle > 0 || !alreadyStarted {
                try startBackend(sockets: 1, options: { $0.clientMode = clientMode })
            }
            let before = runtime.snapshot()?.ports.first?.rxPackets ?? 0
            let expectedReconnects = cycle
            guard waitFor(runtime, timeout: 20, "link up (cycle \(cycle))", {
                $0.ports[0].linkUp && $0.ports[0].reconnects == expectedReconnects
            }) else { break }
            let linkUp = Date()
            guard waitFor(runtime, timeout: 20, "traffic (cycle \(cycle))", {
                $0.ports[0].rxPackets > before + 1000
            }) else { break }
            linkUpToTraffic.append(Date().timeIntervalSince(linkUp))
            XCTAssertFalse(ferry.hasReturned, "Ferry exited during cycle \(cycle)")
            guard cycle < restarts else { break }
            backend?.kill()
            backend = nil
            guard waitFor(runtime, timeout: 20, "link down (cycle \(cycle))", { !$0.ports[0].linkUp }) else { break }
        }
        let summary = try ferry.finish()
        let port = summary.ports[0]
        XCTAssertEqual(port.reconnects, restarts)
        XCTAssertTrue(port.linkUp)
        // Counters add up: in io mode every frame is either received or made by tx_first, and
        // every one of those was sent or dropped.
        for s in summary.streams {
            XCTAssertEqual(s.txPackets + s.txDropped, s.rxPackets + s.generated, "stream counters do not add up")
        }
        XCTAssertEqual(summary.streams[0].generated, UInt64(restarts + 1) * 32, "tx_first on every link up")
        let sorted = linkUpToTraffic.sorted()
        print("reconnect: \(port.reconnects) reconnects; link up to 1000 frames: median \(String(format: "%.3f", sorted[sorted.count / 2])) s, max \(String(format: "%.3f", sorted.last ?? 0)) s")
    }

    /// Restart Ferry 10 times against one long-running testpmd: every run forwards, and the
    /// backend keeps working and counts what each run sent.
    func testFerryRestartsAgainstLongRunningBackend() throws {
        let paths = try startBackend(sockets: 1)
        var sent: UInt64 = 0, inFlight: UInt64 = 0
        for run in 0..<10 {
            let summary = try runFerry(paths: paths, extra: ["duration=0.4"])
            XCTAssertGreaterThan(summary.ports[0].rxPackets, 0, "run \(run) received nothing")
            sent += summary.ports[0].txPackets
            inFlight += summary.ports[0].txInFlightAtStop
        }
        let testpmd = try XCTUnwrap(backend)
        XCTAssertTrue(testpmd.isRunning, "the backend should survive 10 Ferry restarts")
        let stats = try testpmd.stop()
        XCTAssertEqual(try XCTUnwrap(stats.port(0)).rxPackets, sent - inFlight,
                       "testpmd received every frame the 10 runs sent, less those still on the ring at each stop")
    }
}

/// `rx_mode=interrupt`: an idle worker sleeps on the call eventfds and wakes on traffic.
final class FerryInterruptModeTests: InteropTestCase {
    func testIdleWorkerSleepsAndWakesOnTraffic() throws {
        let paths = try startBackend(sockets: 1)
        let runtime = try makeRuntime(paths: paths, extra: ["rx_mode=interrupt", "tx_first=0", "duration=0"])
        let ferry = Background(runtime)
        XCTAssertTrue(waitFor(runtime, timeout: 20, "link up") { $0.ports[0].linkUp })
        usleep(300_000)

        // Over a 5 s idle window, the process (Ferry's worker and control thread, and the idle
        // test runner) uses under 5 % of one CPU.
        let cpuBefore = processCPUSeconds(), wallBefore = Date()
        sleep(5)
        let cpu = processCPUSeconds() - cpuBefore, wall = Date().timeIntervalSince(wallBefore)
        print("interrupt mode: idle CPU \(String(format: "%.2f", 100 * cpu / wall)) % over \(String(format: "%.1f", wall)) s")
        XCTAssertLessThan(cpu / wall, 0.05, "an idle interrupt-mode worker should sleep")
        XCTAssertEqual(runtime.snapshot()?.ports[0].rxPackets, 0)

        // Traffic after the idle window still flows: testpmd sends a burst, Ferry wakes and
        // forwards it back, and the loop keeps going.
        let testpmd = try XCTUnwrap(backend)
        try testpmd.command("stop")
        try testpmd.command("start tx_first")
        XCTAssertTrue(waitFor(runtime, timeout: 10, "traffic after idle") { $0.ports[0].rxPackets > 10_000 })
        let summary = try ferry.finish()
        XCTAssertGreaterThan(summary.ports[0].txPackets, 10_000)
    }

    private func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
