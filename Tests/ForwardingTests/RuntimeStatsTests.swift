import XCTest
import Foundation
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// The periodic stats, the final block and the `stats_json` file of a real run.
final class RuntimeStatsTests: DoubleOwningTestCase {
    func testStatsJSONIsWrittenWithEveryKeyAndMatchesTheSummary() throws {
        let double = try makeDouble("json")
        let jsonPath = temporaryFile("stats", extension: "json")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "duration = 0.5",
            "stats_json = \(jsonPath)",
        ])
        let (summary, _) = try runToCompletion(config)
        let data = try XCTUnwrap(FileManager.default.contents(atPath: jsonPath), "stats_json was written")
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let duration = try XCTUnwrap((root["duration_s"] as? NSNumber)?.doubleValue)
        XCTAssertEqual(duration, summary.durationSeconds, accuracy: 0.001)
        let ports = try XCTUnwrap(root["ports"] as? [[String: Any]])
        XCTAssertEqual(ports.count, 1)
        let port = ports[0]
        for key in ["port", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "tx_dropped", "rx_pps", "tx_pps"] {
            XCTAssertNotNil(port[key] as? NSNumber, "ports[0].\(key)")
        }
        let p = summary.ports[0]
        XCTAssertEqual((port["port"] as? NSNumber)?.intValue, 0)
        XCTAssertEqual((port["rx_packets"] as? NSNumber)?.uint64Value, p.rxPackets)
        XCTAssertEqual((port["tx_packets"] as? NSNumber)?.uint64Value, p.txPackets)
        XCTAssertEqual((port["rx_bytes"] as? NSNumber)?.uint64Value, p.rxBytes)
        XCTAssertEqual((port["tx_bytes"] as? NSNumber)?.uint64Value, p.txBytes)
        XCTAssertEqual((port["tx_dropped"] as? NSNumber)?.uint64Value, p.txDropped)
        XCTAssertEqual((port["rx_pps"] as? NSNumber)?.doubleValue ?? -1, p.rxPps, accuracy: 0.001)
        XCTAssertEqual((port["tx_pps"] as? NSNumber)?.doubleValue ?? -1, p.txPps, accuracy: 0.001)
        XCTAssertGreaterThan(p.txPackets, 0)
        XCTAssertEqual(p.txPps, Double(p.txPackets) / summary.durationSeconds, accuracy: 0.001)
        XCTAssertEqual(port["path"] as? String, double.path)
        XCTAssertEqual(port["link_up"] as? Bool, true)
    }

    func testPeriodicAndFinalStatsArePrinted() throws {
        let double = try makeDouble("periodic")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "stats_period = 1", "duration = 2.2",
        ])
        let (summary, output) = try runToCompletion(config)
        XCTAssertGreaterThan(summary.ports[0].rxPackets, 0)
        let periodic = output.components(separatedBy: "NIC statistics for port 0").count - 1
        XCTAssertGreaterThanOrEqual(periodic, 1, output)
        XCTAssertLessThanOrEqual(periodic, 2, "one block per elapsed period")
        let finalMarker = "Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 0/Queue= 0"
        XCTAssertTrue(output.contains(finalMarker), output)
        XCTAssertTrue(output.contains("Accumulated forward statistics for all ports"), output)
        XCTAssertTrue(output.contains("Forward statistics for port 0"), output)
        let periodicRange = try XCTUnwrap(output.range(of: "NIC statistics for port 0"))
        let finalRange = try XCTUnwrap(output.range(of: finalMarker))
        XCTAssertLessThan(periodicRange.lowerBound, finalRange.lowerBound, "periodic blocks come before the final one")
        XCTAssertFalse(output[finalRange.lowerBound...].contains("NIC statistics"), "nothing periodic after the final block")
    }

    func testNoPeriodicStatsWhenThePeriodIsZero() throws {
        let double = try makeDouble("noperiodic")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "duration = 0.3",
        ])
        let (_, output) = try runToCompletion(config)
        XCTAssertFalse(output.contains("NIC statistics"))
        XCTAssertTrue(output.contains("Accumulated forward statistics for all ports"))
    }
}

/// A `stats_json` path that cannot be written.
final class RuntimeStatsJSONFailureTests: DoubleOwningTestCase {
    func testUnwritableStatsJSONIsReportedWithItsPath() throws {
        let double = try makeDouble("jsonfail")
        let jsonPath = "/proc/ferry-no-such-dir-\(getpid())/stats.json"
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "duration = 0.3",
            "stats_json = \(jsonPath)",
        ])
        let output = OutputBox()
        XCTAssertThrowsError(try makeRuntime(config, output: output).run()) { error in
            XCTAssertTrue("\(error)".contains(jsonPath), "\(error)")
        }
        XCTAssertFalse(output.value.contains("Accumulated forward statistics for all ports"),
                       "the path is checked before forwarding starts, so no run is wasted")
    }
}
