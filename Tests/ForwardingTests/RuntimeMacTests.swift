import XCTest
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// What the forwarding modes put on the wire, read back from the TX ring through a device
/// double's mapping of Ferry's memory.
///
/// Port 0's double loops frames back; port 1's double never takes anything from its TX ring,
/// so every frame Ferry sends on port 1 stays there, unreclaimed, to be read after the run.
/// With tx_first=1 and paired ports exactly 2 bursts reach port 1: its own tx_first burst
/// (the template: source port 1's MAC, destination eth_peer.1) and port 0's tx_first burst
/// (source port 0's MAC, destination eth_peer.0) after it looped back and was forwarded
/// 0 -> 1. The second burst shows what the mode did.
final class RuntimeMacTests: DoubleOwningTestCase {
    private let burst = 32
    private let mac0: [UInt8] = [0x02, 0xfe, 0, 0, 0, 0x00]
    private let mac1: [UInt8] = [0x02, 0xfe, 0, 0, 0, 0x01]
    private let peer0: [UInt8] = [0x02, 0, 0, 0, 0, 0xaa]
    private let peer1: [UInt8] = [0x02, 0, 0, 0, 0, 0xbb]
    private let headerSize = 12  // VERSION_1 is negotiated with the double

    /// Runs `mode` and returns the frames (without virtio-net header) on port 1's TX ring.
    private func framesSentOnPort1(mode: String) throws -> [[UInt8]] {
        let d0 = try makeDouble("mac0")
        let d1 = try makeDouble("mac1", loopback: false)
        let config = try forwardingConfig([
            "port.0.path = \(d0.path)", "port.0.mac = 02:fe:00:00:00:00",
            "port.1.path = \(d1.path)", "port.1.mac = 02:fe:00:00:00:01",
            "eth_peer.0 = 02:00:00:00:00:aa", "eth_peer.1 = 02:00:00:00:00:bb",
            "fwd = \(mode)", "port_topology = paired", "tx_first = 1", "burst = \(burst)", "duration = 3",
        ])
        let run = BackgroundRun(config)
        let expected = 2 * burst
        var tx1: RingPeek?
        let posted = d1.waitUntil(timeoutMs: 2500) {
            if tx1 == nil { tx1 = RingPeek(d1, vring: 1) }
            return tx1?.availIndex.map { Int($0) >= expected } ?? false
        }
        let summary = try run.stop()
        XCTAssertTrue(posted, "port 1 got both bursts before the run stopped")

        let p0 = summary.ports[0], p1 = summary.ports[1]
        XCTAssertEqual(d0.framesLooped, UInt64(burst), "port 0 loops back only its tx_first burst")
        XCTAssertEqual(p0.rxPackets, UInt64(burst))
        XCTAssertEqual(p0.txPackets, UInt64(burst))
        XCTAssertEqual(p1.rxPackets, 0)
        XCTAssertEqual(p1.txPackets, UInt64(expected))
        XCTAssertEqual(p1.txInFlightAtStop, UInt64(expected), "port 1's device took nothing")
        XCTAssertEqual(p1.txDropped, 0)

        let ring = try XCTUnwrap(tx1)
        XCTAssertEqual(ring.availIndex, UInt16(expected))
        let buffers = try XCTUnwrap(ring.postedBuffers(count: expected))
        var frames: [[UInt8]] = []
        for b in buffers {
            XCTAssertEqual(b.count, headerSize + 64, "header plus a 64-byte frame")
            guard b.count >= headerSize + 14 else { continue }
            XCTAssertTrue(b[0..<10].allSatisfy { $0 == 0 }, "no offloads: the header's offload fields are zero")
            // num_buffers is left as the buffer had it for a vhost-user backend, as DPDK's virtio
            // does (clearing it would take the cache line from the backend's core): 1 after
            // mergeable RX, 0 in a fresh buffer. Nothing else.
            XCTAssertTrue([[0, 0], [1, 0]].contains(Array(b[10..<12])), "num_buffers \(Array(b[10..<12]))")
            frames.append(Array(b[headerSize...]))
        }
        return frames
    }

    private func count(_ frames: [[UInt8]], destination: [UInt8], source: [UInt8]) -> Int {
        frames.filter { Array($0[0..<6]) == destination && Array($0[6..<12]) == source }.count
    }

    /// Everything after the MACs is the template's IPv4/UDP, in every mode.
    private func assertPayloadUntouched(_ frames: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) {
        let template = UDPTemplate.frame(length: 64, source: mac1, destination: peer1)
        for f in frames {
            XCTAssertEqual(Array(f[12...]), Array(template[12...]), file: file, line: line)
        }
    }

    func testMacModeSendsEveryFrameFromTheTXPortToItsPeer() throws {
        let frames = try framesSentOnPort1(mode: "mac")
        XCTAssertEqual(frames.count, 2 * burst)
        XCTAssertEqual(count(frames, destination: peer1, source: mac1), 2 * burst,
                       "forwarded frames get eth_peer.1 and port 1's MAC")
        assertPayloadUntouched(frames)
    }

    func testMacSwapModeSwapsForwardedFrames() throws {
        let frames = try framesSentOnPort1(mode: "macswap")
        XCTAssertEqual(frames.count, 2 * burst)
        XCTAssertEqual(count(frames, destination: peer1, source: mac1), burst, "port 1's own tx_first burst")
        XCTAssertEqual(count(frames, destination: mac0, source: peer0), burst, "port 0's burst, swapped")
        assertPayloadUntouched(frames)
    }

    func testIOModeForwardsFramesUnchanged() throws {
        let frames = try framesSentOnPort1(mode: "io")
        XCTAssertEqual(frames.count, 2 * burst)
        XCTAssertEqual(count(frames, destination: peer1, source: mac1), burst, "port 1's own tx_first burst")
        XCTAssertEqual(count(frames, destination: peer0, source: mac0), burst, "port 0's burst, as it was sent")
        assertPayloadUntouched(frames)
    }
}
