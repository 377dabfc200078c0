import XCTest
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// Whole runs against in-process vhost-user doubles that loop every frame Ferry transmits on
/// TX vring 2q+1 back into RX vring 2q of the same connection.
///
/// The accounting identities hold exactly because nothing moves once a run returns: workers
/// are joined before the devices stop, the double handles SET_VRING_ENABLE/GET_VRING_BASE
/// under the same lock as its datapath, and Ferry reads what is left on its rings only after
/// GET_VRING_BASE. For each port:
///   - every frame Ferry posted on TX was taken by the device (looped or dropped by it) or was
///     still in flight: txPackets == looped + dropped + txInFlightAtStop;
///   - every frame the device delivered on RX was read (good or error) or left unread:
///     looped == rxPackets + rxErrors + rxUnreadAtStop.
final class RuntimeLoopbackTests: DoubleOwningTestCase {
    private let burst = 32

    private func assertAccounting(_ p: PortSummary, _ double: VhostUserDeviceDouble,
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(p.txPackets, double.framesLooped + double.framesDropped + p.txInFlightAtStop,
                       "port \(p.port): every frame sent was taken by the device or still in flight",
                       file: file, line: line)
        XCTAssertEqual(double.framesLooped, p.rxPackets + p.rxErrors + p.rxUnreadAtStop,
                       "port \(p.port): every frame delivered was received or left unread",
                       file: file, line: line)
        XCTAssertEqual(double.errors, [], "port \(p.port): device-side errors", file: file, line: line)
    }

    func testOnePortIOLoopbackAccountsForEveryFrame() throws {
        let double = try makeDouble("io1")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "burst = \(burst)", "duration = 1",
        ])
        let (summary, output) = try runToCompletion(config)
        XCTAssertEqual(summary.ports.count, 1)
        let p = summary.ports[0]
        XCTAssertGreaterThan(p.rxPackets, 0)
        XCTAssertGreaterThan(p.txPackets, 0)
        XCTAssertGreaterThan(p.rxBytes, 0)
        XCTAssertEqual(p.txBytes, p.txPackets * 64, "tx_first frames are txpkts=64 bytes, forwarded unchanged")
        XCTAssertEqual(p.rxBytes, p.rxPackets * 64)
        XCTAssertEqual(p.rxErrors, 0)
        XCTAssertTrue(p.linkUp, "the link was up when the run stopped")
        assertAccounting(p, double)
        // io on one port: every received frame is sent or dropped, plus the tx_first burst.
        XCTAssertEqual(p.rxPackets + UInt64(burst), p.txPackets + p.txDropped)
        // Only one burst of frames exists; rings of 256 never fill, so nothing is dropped.
        XCTAssertEqual(p.txDropped, 0)
        XCTAssertEqual(double.framesDropped, 0)
        XCTAssertEqual(p.txInFlightAtStop + p.rxUnreadAtStop, UInt64(burst),
                       "the \(burst) seeded frames are all somewhere when the run stops")

        XCTAssertEqual(summary.streams.count, 1)
        let s = summary.streams[0]
        XCTAssertEqual([s.rxPort, s.rxQueue, s.txPort, s.txQueue], [0, 0, 0, 0])
        XCTAssertEqual(s.rxPackets, p.rxPackets)
        XCTAssertEqual(s.txPackets, p.txPackets)
        XCTAssertGreaterThan(summary.durationSeconds, 0.9)
        XCTAssertGreaterThan(p.rxPps, 0)
        XCTAssertTrue(output.contains("Accumulated forward statistics for all ports"))
    }

    func testTwoPairedPortsSendEachPortsTrafficOutOfTheOther() throws {
        let d0 = try makeDouble("pair0"), d1 = try makeDouble("pair1")
        let config = try forwardingConfig([
            "port.0.path = \(d0.path)", "port.1.path = \(d1.path)",
            "fwd = io", "port_topology = paired", "tx_first = 1", "burst = \(burst)", "duration = 0.8",
        ])
        let (summary, _) = try runToCompletion(config)
        XCTAssertEqual(summary.streams.count, 2)
        let s01 = try XCTUnwrap(summary.streams.first { $0.rxPort == 0 })
        let s10 = try XCTUnwrap(summary.streams.first { $0.rxPort == 1 })
        XCTAssertEqual(s01.txPort, 1, "paired: port 0 forwards to port 1")
        XCTAssertEqual(s10.txPort, 0, "paired: port 1 forwards to port 0")
        for s in [s01, s10] {
            XCTAssertGreaterThan(s.rxPackets, 0)
            XCTAssertGreaterThan(s.txPackets, 0)
            XCTAssertEqual(s.rxPackets + UInt64(burst), s.txPackets + s.txDropped,
                           "stream \(s.rxPort)->\(s.txPort): received plus tx_first is sent or dropped")
        }
        let p0 = summary.ports[0], p1 = summary.ports[1]
        XCTAssertEqual(p0.rxPackets, s01.rxPackets, "port 0's receptions are the 0->1 stream's")
        XCTAssertEqual(p1.txPackets, s01.txPackets, "port 1's transmissions are the 0->1 stream's")
        XCTAssertEqual(p1.rxPackets, s10.rxPackets)
        XCTAssertEqual(p0.txPackets, s10.txPackets)
        assertAccounting(p0, d0)
        assertAccounting(p1, d1)
    }

    func testTxOnlyTransmitsAndNeverReceives() throws {
        let double = try makeDouble("txonly")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = txonly", "burst = \(burst)", "duration = 0.5",
        ])
        let (summary, _) = try runToCompletion(config)
        let p = summary.ports[0]
        XCTAssertGreaterThan(p.txPackets, 0)
        XCTAssertEqual(p.txBytes, p.txPackets * 64)
        // txonly does not poll RX (as testpmd): what loops back stays on the RX ring.
        XCTAssertEqual(p.rxPackets, 0)
        XCTAssertGreaterThan(double.framesLooped, 0)
        XCTAssertLessThanOrEqual(double.framesLooped, 256, "no more than the RX ring's posted buffers")
        assertAccounting(p, double)
    }

    func testRxOnlyTransmitsOnlyTheTxFirstBurst() throws {
        let double = try makeDouble("rxonly")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = rxonly", "tx_first = 1", "burst = \(burst)", "duration = 3",
        ])
        let run = BackgroundRun(config)
        XCTAssertTrue(double.waitUntil(timeoutMs: 2000) { double.framesLooped >= UInt64(burst) })
        // Ferry re-posts RX buffers once it has read them: wait until all came back, if it can.
        if let rx = RingPeek(double, vring: 0) {
            _ = double.waitUntil(timeoutMs: 500) { (rx.availIndex ?? 0) >= UInt16(256 + burst) }
        }
        let summary = try run.stop()
        let p = summary.ports[0]
        XCTAssertEqual(p.txPackets, UInt64(burst), "only the tx_first burst is transmitted")
        XCTAssertEqual(p.txDropped, 0)
        XCTAssertEqual(double.framesLooped, UInt64(burst))
        XCTAssertGreaterThan(p.rxPackets, 0, "the looped-back burst is received")
        XCTAssertEqual(p.rxPackets + p.rxUnreadAtStop, UInt64(burst))
        XCTAssertEqual(p.txInFlightAtStop, 0)
        assertAccounting(p, double)
    }
}
