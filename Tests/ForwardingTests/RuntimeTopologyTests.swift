import XCTest
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// Streams as the runtime builds them: per queue, each port to its topology peer.
final class RuntimeTopologyTests: DoubleOwningTestCase {
    func testChainedThreePortsForwardRoundTheRing() throws {
        let doubles = try (0..<3).map { try makeDouble("chain\($0)") }
        let config = try forwardingConfig([
            "port.0.path = \(doubles[0].path)", "port.1.path = \(doubles[1].path)", "port.2.path = \(doubles[2].path)",
            "fwd = io", "port_topology = chained", "tx_first = 1", "duration = 0.6",
        ])
        let (summary, output) = try runToCompletion(config)
        XCTAssertEqual(summary.streams.map { [$0.rxPort, $0.txPort] }, [[0, 1], [1, 2], [2, 0]])
        for s in summary.streams {
            XCTAssertGreaterThan(s.rxPackets, 0, "stream \(s.rxPort)->\(s.txPort)")
            XCTAssertEqual(s.rxPackets + 32, s.txPackets + s.txDropped, "stream \(s.rxPort)->\(s.txPort)")
        }
        for (p, d) in zip(summary.ports, doubles) {
            XCTAssertEqual(p.txPackets, d.framesLooped + d.framesDropped + p.txInFlightAtStop, "port \(p.port)")
            XCTAssertEqual(d.framesLooped, p.rxPackets + p.rxErrors + p.rxUnreadAtStop, "port \(p.port)")
        }
        XCTAssertTrue(output.contains("Forward Stats for RX Port= 2/Queue= 0 -> TX Port= 0/Queue= 0"), output)
    }

    func testTwoQueuePairsEachCarryTheirOwnStream() throws {
        let double = try makeDouble("mq", queuePairs: 2)
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "port.0.queues = 2",
            "fwd = io", "tx_first = 1", "duration = 0.8",
        ])
        let (summary, _) = try runToCompletion(config)
        XCTAssertEqual(summary.streams.map { [$0.rxPort, $0.rxQueue, $0.txPort, $0.txQueue] },
                       [[0, 0, 0, 0], [0, 1, 0, 1]])
        for s in summary.streams {
            XCTAssertGreaterThan(s.rxPackets, 0, "queue \(s.rxQueue) forwards")
            XCTAssertEqual(s.rxPackets + 32, s.txPackets + s.txDropped, "queue \(s.rxQueue)")
        }
        let p = summary.ports[0]
        XCTAssertEqual(p.rxPackets, summary.streams.map(\.rxPackets).reduce(0, +))
        XCTAssertEqual(p.txPackets, double.framesLooped + double.framesDropped + p.txInFlightAtStop)
        XCTAssertEqual(double.framesLooped, p.rxPackets + p.rxErrors + p.rxUnreadAtStop)
        XCTAssertEqual(double.vring(2)?.enabled, false, "pair 1 was disabled again at stop")
        XCTAssertEqual(double.errors, [])
    }
}
