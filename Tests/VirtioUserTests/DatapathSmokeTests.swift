import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// The datapath at ring level, by hand: RX buffers and TX frames posted with SplitRing and a
/// PoolCache, and the double's loopback bringing each frame back into the RX ring unchanged.
final class DatapathSmokeTests: VirtioUserTestCase {
    /// virtio-net header with VERSION_1 (virtio 1.2 §5.1.6): 12 bytes, num_buffers at 10.
    private let headerSize = 12

    private func frame(length: Int, seed: UInt8) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.replaceSubrange(0..<6, with: [0x02, 0, 0, 0, 0, 0x01])      // destination
        bytes.replaceSubrange(6..<12, with: [0x02, 0, 0, 0, 0, 0x02])     // source
        bytes.replaceSubrange(12..<14, with: [0x88, 0xb5])                // local experimental
        for i in 14..<length { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)) }
        return bytes
    }

    private func loopFrames(offer: UInt64, expectInOrder: Bool) throws {
        let double = try startDouble(.init(features: offer))
        let memory = try makeMemory(bytes: 4 * SharedMemory.hugepageSize)
        let device = try openDevice(double, memory: memory)
        let pool = try PacketPool(memory: memory, count: 256)
        var cache = pool.makeCache(capacity: 64)
        defer { cache.release() }

        try device.negotiate()
        XCTAssertTrue(device.features.contains(.version1))
        XCTAssertEqual(device.features.contains(.inOrder), expectInOrder)
        guard case let .split(rx) = device.rings[0], case let .split(tx) = device.rings[1] else {
            return XCTFail("a split ring was expected")
        }

        // RX first, as a driver fills its rings before DRIVER_OK.
        let rxCount = 16
        var rxPosted: [UInt32] = []
        for _ in 0..<rxCount {
            guard let b = cache.get() else { return XCTFail("pool empty") }
            XCTAssertTrue(rx.pointee.addBuffer(address: cache.address(b) - UInt64(headerSize),
                                               length: UInt32(headerSize + cache.dataRoom),
                                               deviceWritable: true, cookie: b))
            rxPosted.append(b)
        }
        rx.pointee.publish()
        try device.start()

        let frames = [frame(length: 60, seed: 1), frame(length: 128, seed: 2), frame(length: 1514, seed: 3)]
        var txPosted: [UInt32] = []
        for f in frames {
            guard let b = cache.get() else { return XCTFail("pool empty") }
            let data = cache.data(b)
            (data - headerSize).initializeMemory(as: UInt8.self, repeating: 0, count: headerSize)
            f.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            XCTAssertTrue(tx.pointee.addBuffer(address: cache.address(b) - UInt64(headerSize),
                                               length: UInt32(headerSize + f.count),
                                               deviceWritable: false, cookie: b))
            txPosted.append(b)
        }
        tx.pointee.publish()
        _ = tx.pointee.kickNeeded()
        device.kickFDs[1].signal()  // the double polls, but a driver kicks all the same

        var cookies = [UInt32](repeating: .max, count: 32)
        var lengths = [UInt32](repeating: .max, count: 32)
        var received: [(cookie: UInt32, length: UInt32)] = []
        waitFor(double, "\(frames.count) frames back on RX (looped \(double.framesLooped), dropped \(double.framesDropped), errors \(double.errors))") {
            let n = rx.pointee.dequeueUsed(cookies: &cookies, lengths: &lengths, max: 32)
            for i in 0..<n { received.append((cookies[i], lengths[i])) }
            return received.count >= frames.count
        }
        XCTAssertEqual(received.count, frames.count)
        for (i, got) in received.enumerated() where i < frames.count {
            XCTAssertEqual(got.cookie, rxPosted[i], "frame \(i) landed in an unexpected RX buffer")
            XCTAssertEqual(Int(got.length), headerSize + frames[i].count, "frame \(i) used length")
            let data = cache.data(got.cookie)
            let header = Array(UnsafeRawBufferPointer(start: data - headerSize, count: headerSize))
            XCTAssertEqual(header[10], 1, "num_buffers must be 1")
            let bytes = Array(UnsafeRawBufferPointer(start: data, count: frames[i].count))
            XCTAssertEqual(bytes, frames[i], "frame \(i) must come back byte-identical")
        }

        // Every TX buffer comes back too (the device used it).
        var txDone: [UInt32] = []
        waitFor(double, "TX completions") {
            let n = tx.pointee.dequeueUsed(cookies: &cookies, lengths: &lengths, max: 32)
            txDone += cookies.prefix(n)
            return txDone.count >= frames.count
        }
        XCTAssertEqual(txDone, txPosted)
        XCTAssertEqual(tx.pointee.inFlight, 0)
        XCTAssertEqual(rx.pointee.inFlight, rxCount - frames.count)
        XCTAssertEqual(rx.pointee.invalidUsedIds + tx.pointee.invalidUsedIds, 0)
        XCTAssertEqual(double.framesLooped, UInt64(frames.count))
        XCTAssertEqual(double.framesDropped, 0)
        XCTAssertEqual(double.errors, [])

        // stop reports each vring's next avail index: what the device consumed.
        XCTAssertEqual(try device.stop(), [UInt32(frames.count), UInt32(frames.count)])

        // Every buffer is accounted for: back in the cache or still posted on RX.
        for c in received.map(\.cookie) + txDone { cache.put(c) }
        rx.pointee.forEachInFlight { cache.put($0) }
        cache.flush()
        XCTAssertEqual(pool.available, pool.count)
    }

    func testFramesLoopBackByteIdentical() throws {
        try loopFrames(offer: Offer.default, expectInOrder: false)
    }

    func testFramesLoopBackByteIdenticalWithInOrder() throws {
        try loopFrames(offer: Offer.default | Offer.bits([.inOrder]), expectInOrder: true)
    }
}
