import XCTest
import FerryTestSupport
import Virtio
import VirtioUser
@testable import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Chained TX frames through INDIRECT_DESC (virtio 1.2 §2.7.5.3, §2.8.7) against the
/// in-process double, which follows indirect tables and loops every TX frame back into RX:
/// with the feature negotiated every chained frame that fits a table goes through one ring
/// slot, a longer one falls back to a direct chain, and with `indirect=0` every chain is
/// direct. Either way every frame comes back byte for byte.
final class IndirectLoopbackTests: XCTestCase {
    /// Frame sizes and how they are cut: single buffers, 2 KiB chains (a 9000-byte frame is 5
    /// buffers), exactly a table's worth (16 segments) and one more than that (17).
    private static let shapes: [(length: Int, segments: [Int])] = [
        (64, [64]),
        (3000, [2000, 1000]),
        (9000, [2048, 2048, 2048, 2048, 808]),
        (1600, Array(repeating: 100, count: 16)),
        (1700, Array(repeating: 100, count: 17)),
        (1514, [14, 1500]),
        (128, [128]),
        (8000, [2000, 2000, 2000, 2000]),
    ]

    private func run(packed: Bool, inOrder: Bool, indirect: Bool, rounds: Int = 24) throws {
        let tag = "ind\(packed ? "p" : "s")\(inOrder ? "o" : "u")\(indirect ? "i" : "d")"
        let path = forwardingSocketPath(tag)
        let offered = VhostUserDeviceDouble.defaultFeatures | VhostUserDeviceDouble.featureInOrder
            | VhostUserDeviceDouble.featureRingPacked
        XCTAssertNotEqual(offered & VhostUserDeviceDouble.featureIndirectDesc, 0, "the double offers INDIRECT_DESC")
        let double = try VhostUserDeviceDouble(listeningAt: path, configuration: .init(features: offered))
        defer { double.stop(); unlink(path) }
        let memory = try SharedMemory(size: 4 * SharedMemory.hugepageSize, name: "ferry-indtests")
        let options = VirtioUserOptions(path: path, queueSize: 64, mrgRxbuf: true, inOrder: inOrder, packedVq: packed,
                                        indirect: indirect)
        let device = try VirtioUserDevice(options: options, memory: memory)
        defer { device.close() }
        let pool = try PacketPool(memory: memory, count: 1500)
        var cache = pool.makeCache(capacity: 256)
        try device.negotiate()
        XCTAssertEqual(device.usesPackedRings, packed)
        XCTAssertEqual(device.features.contains(.ringIndirectDesc), indirect, tag)
        XCTAssertEqual(device.rings[1].indirectCapacity, indirect ? 16 : 0, tag)
        waitUntil { double.ackedFeatures != nil }
        XCTAssertEqual((double.ackedFeatures ?? 0) & VhostUserDeviceDouble.featureIndirectDesc != 0, indirect,
                       "\(tag): SET_FEATURES carries INDIRECT_DESC exactly when accepted")
        let headerSize = VirtioNetHeader.size(for: device.features)
        let rx = UnsafeMutablePointer<RxQueue>.allocate(capacity: 1)
        rx.initialize(to: RxQueue(ring: device.rings[0], kickFD: device.kickFDs[0], callFD: device.callFDs[0],
                                  headerSize: headerSize, dataRoom: pool.dataRoom, mergeable: true, burst: 32))
        var tx = TxQueue(ring: device.rings[1], kickFD: device.kickFDs[1], headerSize: headerSize)
        defer {
            tx.deallocate()
            rx.deinitialize(count: 1)
            rx.deallocate()
        }
        rx.pointee.refill(cache: &cache)
        try device.start()

        let bufs = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
        let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
        defer { bufs.deallocate(); lengths.deallocate() }
        var sequence = 0
        var received = 0
        var mismatches = 0
        var fitting = 0, tooLong = 0
        for _ in 0..<rounds {
            var expected: [[UInt8]] = []
            for (n, shape) in Self.shapes.enumerated() {
                let f = MultiBufferLoopbackTests.frame(length: shape.length, sequence: sequence)
                sequence += 1
                bufs[n] = try XCTUnwrap(MultiBufferLoopbackTests.load(f, segments: shape.segments, cache: &cache))
                lengths[n] = UInt32(shape.length)
                expected.append(f)
                if shape.segments.count > 16 { tooLong += 1 } else if shape.segments.count > 1 { fitting += 1 }
            }
            let n = Self.shapes.count
            let sent = tx.transmit(bufs: bufs, lengths: lengths, count: n, cache: &cache)
            XCTAssertEqual(sent, n, "\(tag): the batch fits the TX ring")
            for i in sent..<n { cache.freeChain(bufs[i]) }
            var got: [[UInt8]] = []
            var spins = 0
            while got.count < sent && spins < 200_000 {
                let r = rx.pointee.receive(bufs: bufs, lengths: lengths, max: 32, cache: &cache)
                for i in 0..<r {
                    got.append(MultiBufferLoopbackTests.read(head: bufs[i], length: Int(lengths[i]), cache: cache))
                    cache.freeChain(bufs[i])
                }
                if r == 0 { spins += 1; usleep(50) }
            }
            XCTAssertEqual(got.count, sent, "\(tag): frames back")
            for (k, g) in got.enumerated() where k < expected.count && g != expected[k] {
                mismatches += 1
                if mismatches < 4 { XCTFail("\(tag): frame \(k) of \(expected[k].count) bytes came back different") }
            }
            received += got.count
        }
        XCTAssertEqual(received, rounds * Self.shapes.count, "\(tag): counts equal")
        XCTAssertEqual(mismatches, 0, "\(tag): payloads identical")
        XCTAssertEqual(rx.pointee.errors, 0, tag)
        XCTAssertEqual(double.errors, [], "\(tag): device-side errors")
        XCTAssertEqual(double.framesDropped, 0, tag)
        if indirect {
            XCTAssertEqual(double.txIndirectChains, UInt64(fitting), "\(tag): every chain that fits a table went indirect")
            XCTAssertEqual(double.txDirectChains, UInt64(tooLong), "\(tag): only 17-segment chains went direct")
        } else {
            XCTAssertEqual(double.txIndirectChains, 0, "\(tag): indirect=0 never sets INDIRECT")
            XCTAssertEqual(double.txDirectChains, UInt64(fitting + tooLong), "\(tag): every chain direct")
        }
        // Nothing lost: every buffer is in the pool, the cache, or still posted.
        _ = device.rings[1].drainUsed(into: pool)
        var posted = 0
        for q in 0..<2 {
            let count = { (head: UInt32) in
                var b = head
                while b != PacketPool.noBuffer { posted += 1; b = pool.next(of: b) }
            }
            device.rings[q].with({ $0.pointee.forEachInFlight(count) }, packed: { $0.pointee.forEachInFlight(count) })
        }
        XCTAssertEqual(pool.available + cache.cachedCount + posted, pool.count, "\(tag): no buffer lost")
        cache.release()
    }

    private func waitUntil(_ condition: () -> Bool) {
        var spins = 0
        while !condition() && spins < 5000 { usleep(1000); spins += 1 }
    }

    func testSplitIndirect() throws { try run(packed: false, inOrder: false, indirect: true) }
    func testSplitIndirectInOrder() throws { try run(packed: false, inOrder: true, indirect: true) }
    func testSplitDirectWhenRefused() throws { try run(packed: false, inOrder: false, indirect: false) }
    func testPackedIndirect() throws { try run(packed: true, inOrder: false, indirect: true) }
    func testPackedIndirectInOrder() throws { try run(packed: true, inOrder: true, indirect: true) }
    func testPackedDirectWhenRefused() throws { try run(packed: true, inOrder: false, indirect: false) }
}
