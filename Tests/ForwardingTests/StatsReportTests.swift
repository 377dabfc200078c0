import XCTest
import Foundation
@testable import Forwarding

/// The testpmd-shaped text blocks and the `stats_json` document, from a summary built by hand.
final class StatsReportTests: XCTestCase {
    private func sample() -> RunSummary {
        var p0 = PortSummary(port: 0, path: "/tmp/a \"quoted\"\npath.sock")
        p0.rxPackets = 100; p0.txPackets = 90; p0.rxBytes = 6400; p0.txBytes = 5760
        p0.txDropped = 10; p0.rxErrors = 1; p0.rxPps = 50.1234; p0.txPps = 45
        p0.linkUp = true; p0.txInFlightAtStop = 3; p0.rxUnreadAtStop = 4
        var p1 = PortSummary(port: 1, path: "/tmp/b.sock")
        p1.rxPackets = 7; p1.txPackets = 8; p1.linkUp = false; p1.reconnects = 2
        let streams = [
            StreamSummary(rxPort: 0, rxQueue: 0, txPort: 1, txQueue: 0, rxPackets: 100, txPackets: 8, txDropped: 0),
            StreamSummary(rxPort: 1, rxQueue: 0, txPort: 0, txQueue: 0, rxPackets: 7, txPackets: 90, txDropped: 10),
        ]
        return RunSummary(durationSeconds: 2, ports: [p0, p1], streams: streams)
    }

    func testFinalBlockHasStreamsPortsAndTotals() {
        let text = StatsReport.final(sample())
        XCTAssertTrue(text.contains("Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 1/Queue= 0"))
        XCTAssertTrue(text.contains("Forward Stats for RX Port= 1/Queue= 0 -> TX Port= 0/Queue= 0"))
        XCTAssertTrue(text.contains("Forward statistics for port 0"))
        XCTAssertTrue(text.contains("Forward statistics for port 1"))
        XCTAssertTrue(text.contains("Accumulated forward statistics for all ports"))
        // Totals: rx 107, tx 98, dropped 10.
        let totals = text.components(separatedBy: "Accumulated forward statistics for all ports")[1]
        XCTAssertTrue(totals.contains("RX-packets: 107"), totals)
        XCTAssertTrue(totals.contains("TX-packets: 98"), totals)
        XCTAssertTrue(totals.contains("TX-dropped: 10"), totals)
        XCTAssertTrue(text.contains("Link: up"))
        XCTAssertTrue(text.contains("Link: down"))
    }

    func testPeriodicBlockNamesThePortAndRates() {
        var p = PortSummary(port: 3, path: "/tmp/x.sock")
        p.rxPackets = 12; p.linkUp = true
        let text = StatsReport.periodic(port: p, rxPps: 1234, txPps: 567, rxBps: 8, txBps: 9)
        XCTAssertTrue(text.contains("NIC statistics for port 3"))
        XCTAssertTrue(text.contains("RX-packets: 12"))
        XCTAssertTrue(text.contains("Rx-pps:         1234"))
        XCTAssertTrue(text.contains("Tx-pps:          567"))
        XCTAssertTrue(text.contains("Link: up"))
    }

    func testJSONParsesAndCarriesEveryField() throws {
        let summary = sample()
        let data = Data(summary.json().utf8)
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual((root["duration_s"] as? NSNumber)?.doubleValue, 2)
        let ports = try XCTUnwrap(root["ports"] as? [[String: Any]])
        XCTAssertEqual(ports.count, 2)
        let p0 = ports[0]
        XCTAssertEqual(p0["path"] as? String, "/tmp/a \"quoted\"\npath.sock", "strings are escaped")
        for (key, value) in [("port", 0), ("rx_packets", 100), ("tx_packets", 90), ("rx_bytes", 6400),
                             ("tx_bytes", 5760), ("tx_dropped", 10), ("rx_errors", 1), ("reconnects", 0),
                             ("tx_inflight_at_stop", 3), ("rx_unread_at_stop", 4)] {
            XCTAssertEqual((p0[key] as? NSNumber)?.intValue, value, key)
        }
        XCTAssertEqual((p0["rx_pps"] as? NSNumber)?.doubleValue ?? 0, 50.123, accuracy: 1e-9, "three decimals")
        XCTAssertEqual((p0["tx_pps"] as? NSNumber)?.doubleValue, 45)
        XCTAssertEqual(p0["link_up"] as? Bool, true)
        XCTAssertEqual(ports[1]["link_up"] as? Bool, false)
        XCTAssertEqual((ports[1]["reconnects"] as? NSNumber)?.intValue, 2)
        let streams = try XCTUnwrap(root["streams"] as? [[String: Any]])
        XCTAssertEqual(streams.count, 2)
        XCTAssertEqual((streams[1]["rx_port"] as? NSNumber)?.intValue, 1)
        XCTAssertEqual((streams[1]["tx_port"] as? NSNumber)?.intValue, 0)
        XCTAssertEqual((streams[1]["tx_dropped"] as? NSNumber)?.intValue, 10)
    }

    func testJSONOfNonFiniteRatesStaysValid() throws {
        var summary = sample()
        summary.ports[0].rxPps = .infinity
        summary.ports[0].txPps = .nan
        summary.durationSeconds = .nan
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(summary.json().utf8)) as? [String: Any])
        let ports = try XCTUnwrap(root["ports"] as? [[String: Any]])
        XCTAssertEqual((ports[0]["rx_pps"] as? NSNumber)?.doubleValue, 0)
        XCTAssertEqual((root["duration_s"] as? NSNumber)?.doubleValue, 0)
    }

    func testJSONEscapesControlCharacters() throws {
        var summary = sample()
        summary.ports[1].path = "a\u{01}b\\c\td"
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(summary.json().utf8)) as? [String: Any])
        let ports = try XCTUnwrap(root["ports"] as? [[String: Any]])
        XCTAssertEqual(ports[1]["path"] as? String, "a\u{01}b\\c\td")
    }
}
