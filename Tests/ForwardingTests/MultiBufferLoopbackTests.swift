import XCTest
import FerryTestSupport
import Virtio
import VirtioUser
@testable import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Multi-buffer frames through Ferry's own RxQueue/TxQueue against the in-process double,
/// which loops every TX frame back into RX: for every combination of packed_vq × mrg_rxbuf ×
/// in_order, frames of 64…9000 bytes (some sent as descriptor chains, every frame over one
/// buffer necessarily so) come back byte for byte, in order, with nothing lost or left over.
final class MultiBufferLoopbackTests: XCTestCase {
    /// Mixed sizes: single-buffer, just over one buffer, jumbo, and back to small.
    static let sizes = [64, 1514, 2048, 2049, 60, 4096, 9000, 128, 8000, 3000, 9000, 64, 6001, 1500, 2047, 9000]

    /// A frame whose every byte depends on its sequence number and position.
    static func frame(length: Int, sequence: Int) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: length)
        f.replaceSubrange(0..<6, with: [0x02, 0, 0, 0, 0, 0x01])
        f.replaceSubrange(6..<12, with: [0x02, 0, 0, 0, 0, 0x02])
        f[12] = 0x88; f[13] = 0xb5
        f[14] = UInt8(truncatingIfNeeded: sequence)
        f[15] = UInt8(truncatingIfNeeded: sequence >> 8)
        for i in 16..<length { f[i] = UInt8(truncatingIfNeeded: i &* 131 &+ sequence &* 7 &+ (i >> 8)) }
        return f
    }

    /// Segment lengths for sending `length` bytes: one buffer when it fits (every third
    /// small frame is chained anyway, with an uneven cut), else full buffers.
    static func segments(length: Int, sequence: Int, dataRoom: Int) -> [Int] {
        if length <= dataRoom {
            if sequence % 3 == 0 && length >= 64 { return [20, length - 20] }
            return [length]
        }
        var out: [Int] = []
        var left = length
        // An uneven first cut, then full buffers.
        let first = min(left, dataRoom - 100 * (sequence % 4))
        out.append(first)
        left -= first
        while left > 0 {
            let take = min(left, dataRoom)
            out.append(take)
            left -= take
        }
        return out
    }

    /// Builds a frame in the pool as a chain of `segments`.
    static func load(_ f: [UInt8], segments: [Int], cache: inout PoolCache) -> UInt32? {
        guard let head = cache.get() else { return nil }
        var tail = head
        var offset = 0
        for (k, length) in segments.enumerated() {
            let b: UInt32
            if k == 0 { b = head } else {
                guard let got = cache.get() else { cache.freeChain(head); return nil }
                b = got
                cache.setNext(tail, b)
                tail = b
            }
            f.withUnsafeBytes { cache.data(b).copyMemory(from: $0.baseAddress! + offset, byteCount: length) }
            cache.setSegment(b, offset: cache.headroomSize, length: length)
            offset += length
        }
        return head
    }

    /// Reads a received frame back out of its chain.
    static func read(head: UInt32, length: Int, cache: PoolCache) -> [UInt8] {
        if cache.next(head) == PacketPool.noBuffer {
            return Array(UnsafeRawBufferPointer(start: cache.data(head), count: length))
        }
        var out: [UInt8] = []
        var b = head
        var first = true
        while b != PacketPool.noBuffer {
            let start = first ? cache.data(head) : cache.segmentData(b)
            out.append(contentsOf: UnsafeRawBufferPointer(start: start, count: cache.segmentLength(b)))
            first = false
            b = cache.next(b)
        }
        return out
    }

    private func runLoopback(packed: Bool, mergeable: Bool, inOrder: Bool, rounds: Int = 12) throws {
        let tag = "mb\(packed ? "p" : "s")\(mergeable ? "m" : "n")\(inOrder ? "o" : "u")"
        let path = forwardingSocketPath(tag)
        let offered = VhostUserDeviceDouble.defaultFeatures | VhostUserDeviceDouble.featureInOrder
            | VhostUserDeviceDouble.featureRingPacked
        let double = try VhostUserDeviceDouble(listeningAt: path, configuration: .init(features: offered))
        defer { double.stop(); unlink(path) }
        let memory = try SharedMemory(size: 4 * SharedMemory.hugepageSize, name: "ferry-mbtests")
        let options = VirtioUserOptions(path: path, mrgRxbuf: mergeable, inOrder: inOrder, packedVq: packed)
        let device = try VirtioUserDevice(options: options, memory: memory)
        defer { device.close() }
        let pool = try PacketPool(memory: memory, count: 1500)
        var cache = pool.makeCache(capacity: 256)
        try device.negotiate()
        XCTAssertEqual(device.usesPackedRings, packed)
        XCTAssertEqual(device.features.contains(.mrgRxbuf), mergeable)
        XCTAssertEqual(device.features.contains(.inOrder), inOrder)
        let headerSize = VirtioNetHeader.size(for: device.features)
        let rx = UnsafeMutablePointer<RxQueue>.allocate(capacity: 1)
        rx.initialize(to: RxQueue(ring: device.rings[0], kickFD: device.kickFDs[0], callFD: device.callFDs[0],
                                  headerSize: headerSize, dataRoom: pool.dataRoom, mergeable: mergeable, burst: 32))
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
        var chainedSent = 0
        let batch = 8
        for _ in 0..<rounds {
            var start = 0
            while start < Self.sizes.count {
                let sizes = Self.sizes[start..<min(start + batch, Self.sizes.count)]
                start += batch
                var expected: [[UInt8]] = []
                var n = 0
                for size in sizes {
                    let f = Self.frame(length: size, sequence: sequence)
                    let segs = Self.segments(length: size, sequence: sequence, dataRoom: pool.dataRoom)
                    if segs.count > 1 { chainedSent += 1 }
                    sequence += 1
                    bufs[n] = try XCTUnwrap(Self.load(f, segments: segs, cache: &cache))
                    lengths[n] = UInt32(size)
                    expected.append(f)
                    n += 1
                }
                let sent = tx.transmit(bufs: bufs, lengths: lengths, count: n, cache: &cache)
                XCTAssertEqual(sent, n, "\(tag): the whole batch fits the TX ring")
                for i in sent..<n { cache.freeChain(bufs[i]) }
                // Poll (bounded) until the batch is back.
                var got: [[UInt8]] = []
                var spins = 0
                while got.count < sent && spins < 200_000 {
                    let r = rx.pointee.receive(bufs: bufs, lengths: lengths, max: 32, cache: &cache)
                    for i in 0..<r {
                        got.append(Self.read(head: bufs[i], length: Int(lengths[i]), cache: cache))
                        cache.freeChain(bufs[i])
                    }
                    if r == 0 { spins += 1; usleep(50) }
                }
                XCTAssertEqual(got.count, sent, "\(tag): frames back")
                for (k, g) in got.enumerated() where k < expected.count {
                    if g != expected[k] {
                        mismatches += 1
                        if mismatches < 4 { XCTFail("\(tag): frame \(k) of \(expected[k].count) bytes came back as \(g.count) bytes, different") }
                    }
                }
                received += got.count
            }
        }
        XCTAssertEqual(received, rounds * Self.sizes.count, "\(tag): counts equal")
        XCTAssertEqual(mismatches, 0, "\(tag): payloads identical")
        XCTAssertGreaterThan(chainedSent, 0)
        XCTAssertEqual(rx.pointee.errors, 0, "\(tag): nothing dropped as malformed")
        XCTAssertEqual(double.framesDropped, 0, "\(tag): the device dropped nothing")
        XCTAssertEqual(double.errors, [], "\(tag): device-side errors")
        if mergeable {
            XCTAssertGreaterThan(double.framesMerged, 0, "\(tag): jumbo frames spanned several RX buffers")
        } else {
            XCTAssertEqual(double.framesMerged, 0)
        }
        // Nothing lost or duplicated: every buffer is in the pool, the cache, or still posted
        // (RX chains, TX chains the device has not returned), counted along their chains.
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

    func testSplitNoMergeNoInOrder() throws { try runLoopback(packed: false, mergeable: false, inOrder: false) }
    func testSplitNoMergeInOrder() throws { try runLoopback(packed: false, mergeable: false, inOrder: true) }
    func testSplitMergeNoInOrder() throws { try runLoopback(packed: false, mergeable: true, inOrder: false) }
    func testSplitMergeInOrder() throws { try runLoopback(packed: false, mergeable: true, inOrder: true) }
    func testPackedNoMergeNoInOrder() throws { try runLoopback(packed: true, mergeable: false, inOrder: false) }
    func testPackedNoMergeInOrder() throws { try runLoopback(packed: true, mergeable: false, inOrder: true) }
    func testPackedMergeNoInOrder() throws { try runLoopback(packed: true, mergeable: true, inOrder: false) }
    func testPackedMergeInOrder() throws { try runLoopback(packed: true, mergeable: true, inOrder: true) }
}
