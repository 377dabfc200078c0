import XCTest
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// A backend that goes away mid-run takes its port's link down and nothing else.
final class RuntimeLinkDownTests: DoubleOwningTestCase {
    func testDroppedBackendTakesOnlyItsPortDown() throws {
        let doubles = try (0..<3).map { try makeDouble("link\($0)") }
        let config = try forwardingConfig([
            "port.0.path = \(doubles[0].path)", "port.1.path = \(doubles[1].path)", "port.2.path = \(doubles[2].path)",
            "fwd = io", "port_topology = loop", "tx_first = 1", "duration = 1.5",
        ])
        let run = BackgroundRun(config)
        // Mid-run: every port forwards.
        let flowing = doubles[0].waitUntil(timeoutMs: 1000) { doubles.allSatisfy { $0.framesLooped >= 1000 } }
        XCTAssertTrue(flowing, "all three ports forward before the drop")

        doubles[1].dropConnection()
        let before0 = doubles[0].framesLooped, before2 = doubles[2].framesLooped
        // The other ports keep forwarding after the drop (the run lasts 1.5 s in all).
        let kept = doubles[0].waitUntil(timeoutMs: 1000) {
            doubles[0].framesLooped > before0 + 1000 && doubles[2].framesLooped > before2 + 1000
        }
        let summary = try run.wait()
        XCTAssertTrue(kept, "ports 0 and 2 kept forwarding after port 1's backend left")
        XCTAssertTrue(flowing)

        XCTAssertEqual(summary.ports.map(\.linkUp), [true, false, true])
        for i in [0, 2] {
            let p = summary.ports[i], d = doubles[i]
            XCTAssertGreaterThan(p.rxPackets, 1000, "port \(i)")
            XCTAssertEqual(p.txPackets, d.framesLooped + d.framesDropped + p.txInFlightAtStop, "port \(i)")
            XCTAssertEqual(d.framesLooped, p.rxPackets + p.rxErrors + p.rxUnreadAtStop, "port \(i)")
            XCTAssertEqual(d.errors, [], "port \(i)")
        }
        let dropped = summary.ports[1]
        XCTAssertGreaterThan(dropped.rxPackets, 0, "port 1 forwarded before its backend left")
        XCTAssertEqual(dropped.txInFlightAtStop, 0, "a lost backend is not asked for its ring state")
        XCTAssertEqual(dropped.rxUnreadAtStop, 0)
        let output = run.output.value
        XCTAssertEqual(output.components(separatedBy: "Link: down").count - 1, 1, output)
        XCTAssertEqual(output.components(separatedBy: "Link: up").count - 1, 2, output)
    }
}
