import XCTest
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// Whole runs with multi-segment frames: `txpkts=2000,2000,2000,2000` makes 8000-byte frames
/// of four buffers, sent as descriptor chains; the double loops them back (merged over several
/// RX buffers, or into one long RX chain without MRG_RXBUF) and the forwarding modes send them
/// on whole.
final class RuntimeMultiBufferTests: DoubleOwningTestCase {
    private let burst = 16

    private func run(mode: String, packed: Bool, mergeable: Bool) throws -> (PortSummary, VhostUserDeviceDouble) {
        let path = forwardingSocketPath("rmb")
        let double = try VhostUserDeviceDouble(
            listeningAt: path,
            configuration: .init(features: VhostUserDeviceDouble.defaultFeatures | VhostUserDeviceDouble.featureInOrder
                | VhostUserDeviceDouble.featureRingPacked))
        addTeardownBlock { double.stop(); unlink(path) }
        let config = try forwardingConfig([
            "port.0.path = \(path)", "port.0.packed_vq = \(packed ? 1 : 0)", "port.0.mrg_rxbuf = \(mergeable ? 1 : 0)",
            "fwd = \(mode)", "txpkts = 2000,2000,2000,2000", "tx_first = 1", "burst = \(burst)", "duration = 0.5",
        ])
        let (summary, _) = try runToCompletion(config)
        return (summary.ports[0], double)
    }

    private func assertWhole(_ p: PortSummary, _ double: VhostUserDeviceDouble, mergeable: Bool, _ tag: String) {
        XCTAssertGreaterThan(p.rxPackets, UInt64(burst), "\(tag): frames went round more than once")
        XCTAssertEqual(p.txBytes, p.txPackets * 8000, "\(tag): every frame sent whole")
        XCTAssertEqual(p.rxBytes, p.rxPackets * 8000, "\(tag): every frame received whole")
        XCTAssertEqual(p.rxErrors, 0, tag)
        XCTAssertEqual(double.framesDropped, 0, tag)
        XCTAssertEqual(double.errors, [], tag)
        if mergeable { XCTAssertGreaterThan(double.framesMerged, 0, tag) } else { XCTAssertEqual(double.framesMerged, 0, tag) }
    }

    func testIOForwardsChainedJumboFramesWholeOnEveryRingPath() throws {
        for packed in [false, true] {
            for mergeable in [false, true] {
                let (p, double) = try run(mode: "io", packed: packed, mergeable: mergeable)
                assertWhole(p, double, mergeable: mergeable, "io packed=\(packed) mrg=\(mergeable)")
            }
        }
    }

    func testMacSwapForwardsChainedJumboFramesWhole() throws {
        let (p, double) = try run(mode: "macswap", packed: false, mergeable: true)
        assertWhole(p, double, mergeable: true, "macswap")
    }

    func testTxOnlySendsEightThousandByteFramesOfFourSegments() throws {
        let (p, double) = try run(mode: "txonly", packed: true, mergeable: true)
        XCTAssertGreaterThan(p.txPackets, 0)
        XCTAssertEqual(p.txBytes, p.txPackets * 8000)
        XCTAssertEqual(p.rxPackets, 0)
        XCTAssertGreaterThan(double.framesLooped + double.framesDropped, 0)
        XCTAssertEqual(double.errors, [])
    }

    func testTxPacketsLimits() throws {
        XCTAssertNoThrow(try FerryRuntime.checkTxPackets([2000, 2000, 2000, 2000], dataRoom: 2048))
        XCTAssertNoThrow(try FerryRuntime.checkTxPackets([64], dataRoom: 2048))
        XCTAssertNoThrow(try FerryRuntime.checkTxPackets([2048, 2048, 2048, 2048, 1024], dataRoom: 2048), "9216 in all")
        XCTAssertThrowsError(try FerryRuntime.checkTxPackets([2048, 2048, 2048, 2048, 1025], dataRoom: 2048), "9217 in all")
        XCTAssertThrowsError(try FerryRuntime.checkTxPackets([2049, 100], dataRoom: 2048), "a segment over the data room")
        XCTAssertThrowsError(try FerryRuntime.checkTxPackets([4000], dataRoom: 2048))
        XCTAssertThrowsError(try FerryRuntime.checkTxPackets([10, 100], dataRoom: 2048), "head shorter than Ethernet")
        XCTAssertThrowsError(try FerryRuntime.checkTxPackets([14, 14], dataRoom: 2048), "shorter than the UDP template")
    }
}
