import FerryTestSupport
import Virtio
import XCTest

final class SplitRingBasicTests: XCTestCase {
    func testLayoutOffsets() {
        XCTAssertEqual(SplitRingLayout.availOffset(queueSize: 256), 4096)
        // avail ends at 4096 + 6 + 512 = 4614 -> 8192
        XCTAssertEqual(SplitRingLayout.usedOffset(queueSize: 256), 8192)
        // used ends at 8192 + 6 + 2048 = 10246 -> 12288
        XCTAssertEqual(SplitRingLayout.totalSize(queueSize: 256), 12288)
        XCTAssertEqual(SplitRingLayout.availOffset(queueSize: 1), 16)
        XCTAssertEqual(SplitRingLayout.usedOffset(queueSize: 1), 4096)
        XCTAssertEqual(SplitRingLayout.totalSize(queueSize: 1), 8192)
        XCTAssertEqual(SplitRingLayout.usedOffset(queueSize: 32768), 524288 + 69632)
    }

    func testRingPointersFollowLayout() {
        let h = RingHarness(queueSize: 256)
        XCTAssertEqual(h.ring.descTable, h.memory)
        XCTAssertEqual(h.ring.availRing, h.memory + 4096)
        XCTAssertEqual(h.ring.usedRing, h.memory + 8192)
        XCTAssertEqual(h.ring.numFree, 256)
        XCTAssertEqual(h.ring.inFlight, 0)
    }

    func testAddPublishConsumeReclaim() throws {
        let h = RingHarness(queueSize: 8)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 8)
        defer { buffer.deallocate() }
        XCTAssertTrue(h.ring.addBuffer(address: UInt64(UInt(bitPattern: buffer)), length: 128,
                                       deviceWritable: true, cookie: 77))
        XCTAssertEqual(h.ring.numFree, 7)
        XCTAssertEqual(h.ring.inFlight, 1)
        XCTAssertEqual(h.ring.availIndex, 1)
        // Not visible before publish.
        XCTAssertNil(try h.device.popAvail())
        h.ring.publish()
        let chain = try XCTUnwrap(h.device.popAvail())
        XCTAssertNil(try h.device.popAvail())
        XCTAssertEqual(chain.segments.count, 1)
        XCTAssertEqual(chain.segments[0].pointer, buffer)
        XCTAssertEqual(chain.segments[0].length, 128)
        XCTAssertTrue(chain.segments[0].deviceWritable)
        let written = chain.writeWritable([1, 2, 3, 4, 5])
        XCTAssertEqual(written, 5)
        XCTAssertEqual(h.dequeue(), [], "nothing used yet")
        h.device.pushUsed(id: chain.head, length: UInt32(written))
        XCTAssertEqual(h.ring.pendingUsed(), 1)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 77, length: 5)])
        XCTAssertEqual(buffer.load(fromByteOffset: 4, as: UInt8.self), 5)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.lastUsedIndex, 1)
        XCTAssertEqual(h.ring.pendingUsed(), 0)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
        XCTAssertEqual(h.ring.invalidUsedLengths, 0)
    }

    func testReadableBufferCarriesData() throws {
        let h = RingHarness(queueSize: 4)
        let payload: [UInt8] = [0xde, 0xad, 0xbe, 0xef]
        try payload.withUnsafeBytes { bytes in
            XCTAssertTrue(h.ring.addBuffer(address: UInt64(UInt(bitPattern: bytes.baseAddress!)), length: 4,
                                           deviceWritable: false, cookie: 1))
            h.ring.publish()
            let chain = try XCTUnwrap(h.device.popAvail())
            XCTAssertFalse(chain.segments[0].deviceWritable)
            XCTAssertEqual(chain.readableBytes(), payload)
        }
    }

    func testFullRingRefusesAndRecovers() throws {
        let h = RingHarness(queueSize: 16)
        XCTAssertEqual(h.add(count: 20, firstCookie: 0), 16)
        XCTAssertEqual(h.ring.numFree, 0)
        XCTAssertFalse(h.ring.addBuffer(address: 0x1000, length: 1, deviceWritable: false, cookie: 99))
        XCTAssertFalse(h.addChain([RingSegment(address: 0x1000, length: 1, deviceWritable: false)], cookie: 99))
        XCTAssertEqual(h.ring.inFlight, 16)
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 16)
        h.device.pushUsed(id: chains[3].head, length: 0)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 3, length: 0)])
        XCTAssertEqual(h.ring.numFree, 1)
        XCTAssertTrue(h.ring.addBuffer(address: 0x1000, length: 1, deviceWritable: false, cookie: 99))
        XCTAssertEqual(h.ring.numFree, 0)
        h.ring.publish()
        let again = try h.popAll()
        XCTAssertEqual(again.map(\.head), [chains[3].head], "the freed descriptor is reused")
    }

    func testChainOfSeveralSegments() throws {
        let h = RingHarness(queueSize: 8)
        let segments = [
            RingSegment(address: 0x1000, length: 12, deviceWritable: false),
            RingSegment(address: 0x2000, length: 100, deviceWritable: false),
            RingSegment(address: 0x3000, length: 200, deviceWritable: true),
            RingSegment(address: 0x4000, length: 300, deviceWritable: true),
        ]
        XCTAssertTrue(h.addChain(segments, cookie: 5))
        XCTAssertEqual(h.ring.numFree, 4)
        XCTAssertEqual(h.ring.inFlight, 1)
        h.ring.publish()
        let chain = try XCTUnwrap(h.device.popAvail())
        XCTAssertEqual(chain.segments.map { UInt(bitPattern: $0.pointer) }, [0x1000, 0x2000, 0x3000, 0x4000])
        XCTAssertEqual(chain.segments.map(\.length), [12, 100, 200, 300])
        XCTAssertEqual(chain.segments.map(\.deviceWritable), [false, false, true, true])
        XCTAssertEqual(chain.writableLength, 500)
        h.device.pushUsed(id: chain.head, length: 500)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 5, length: 500)])
        XCTAssertEqual(h.ring.numFree, 8)
        // All eight descriptors are usable again, as one chain.
        let eight = (0..<8).map { RingSegment(address: 0x1000 * UInt64($0 + 1), length: 1, deviceWritable: false) }
        XCTAssertTrue(h.addChain(eight, cookie: 6))
        XCTAssertEqual(h.ring.numFree, 0)
        h.ring.publish()
        let big = try XCTUnwrap(h.device.popAvail())
        XCTAssertEqual(big.segments.count, 8)
        XCTAssertEqual(Set(big.segments.map { UInt(bitPattern: $0.pointer) }).count, 8)
    }

    func testChainRefusals() {
        let h = RingHarness(queueSize: 4)
        XCTAssertFalse(h.addChain([], cookie: 1), "empty chain")
        let tooLong = (0..<5).map { RingSegment(address: 0x1000 * UInt64($0 + 1), length: 1, deviceWritable: false) }
        XCTAssertFalse(h.addChain(tooLong, cookie: 1), "more segments than descriptors")
        let misordered = [RingSegment(address: 0x1000, length: 1, deviceWritable: true),
                          RingSegment(address: 0x2000, length: 1, deviceWritable: false)]
        XCTAssertFalse(h.addChain(misordered, cookie: 1), "readable after writable (2.7.4.2)")
        XCTAssertEqual(h.ring.numFree, 4)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.availIndex, 0)
    }

    func testChainsCompletedOutOfOrderFreeTheirDescriptors() throws {
        let h = RingHarness(queueSize: 8)
        for c in 0..<3 {
            let segs = (0..<2).map { RingSegment(address: 0x1000 * UInt64(2 * c + $0 + 1), length: 10, deviceWritable: true) }
            XCTAssertTrue(h.addChain(segs, cookie: UInt32(c)))
        }
        XCTAssertEqual(h.ring.numFree, 2)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[2].head, length: 20)
        h.device.pushUsed(id: chains[0].head, length: 1)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 2, length: 20), Completion(cookie: 0, length: 1)])
        XCTAssertEqual(h.ring.numFree, 6)
        h.device.pushUsed(id: chains[1].head, length: 3)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 1, length: 3)])
        XCTAssertEqual(h.ring.numFree, 8)
        // The free list is intact: a chain of all 8 fits and the device sees 8 distinct descriptors.
        let eight = (0..<8).map { RingSegment(address: 0x1000 * UInt64($0 + 1), length: 1, deviceWritable: false) }
        XCTAssertTrue(h.addChain(eight, cookie: 9))
        h.ring.publish()
        XCTAssertEqual(try XCTUnwrap(h.device.popAvail()).segments.count, 8)
    }

    func testDequeueRespectsMax() throws {
        let h = RingHarness(queueSize: 8)
        h.add(count: 5, firstCookie: 10)
        h.ring.publish()
        for chain in try h.popAll() { h.device.pushUsed(id: chain.head, length: 0) }
        XCTAssertEqual(h.dequeue(max: 2).map(\.cookie), [10, 11])
        XCTAssertEqual(h.ring.pendingUsed(), 3)
        XCTAssertEqual(h.dequeue(max: 0), [])
        XCTAssertEqual(h.dequeue(max: 8).map(\.cookie), [12, 13, 14])
    }

    func testForEachInFlightListsUncompletedCookies() throws {
        for inOrder in [false, true] {
            let h = RingHarness(queueSize: 8, inOrder: inOrder)
            h.add(count: 4, firstCookie: 100)
            h.ring.publish()
            h.add(count: 1, firstCookie: 104) // added, not published: still the ring's to give back
            let chains = try h.popAll()
            h.device.pushUsed(id: chains[0].head, length: 0)
            XCTAssertEqual(h.dequeue().map(\.cookie), [100])
            var cookies: [UInt32] = []
            h.ring.forEachInFlight { cookies.append($0) }
            XCTAssertEqual(cookies.sorted(), [101, 102, 103, 104], "inOrder: \(inOrder)")
            if inOrder { XCTAssertEqual(cookies, [101, 102, 103, 104]) }
        }
    }

    /// 70000 buffers through a small ring: both 16-bit indices wrap; every cookie comes back
    /// exactly once and, with a FIFO device, in order.
    func testIndicesWrapPast65535InOrderDevice() throws {
        let h = RingHarness(queueSize: 8)
        var next: UInt32 = 0
        var expected: UInt32 = 0
        let total: UInt32 = 70000
        var round = 0
        while expected < total {
            let want = min(1 + round % 8, Int(total - next))
            round += 1
            XCTAssertEqual(h.add(count: want, firstCookie: next), want)
            next += UInt32(want)
            h.ring.publish()
            for chain in try h.popAll() { h.device.pushUsed(id: chain.head, length: 0) }
            for c in h.dequeue() {
                guard c.cookie == expected else {
                    XCTFail("cookie \(c.cookie), expected \(expected)")
                    return
                }
                expected += 1
            }
        }
        XCTAssertEqual(h.ring.availIndex, UInt16(truncatingIfNeeded: total))
        XCTAssertEqual(h.ring.lastUsedIndex, UInt16(truncatingIfNeeded: total))
        XCTAssertEqual(h.device.usedIndex, UInt16(truncatingIfNeeded: total))
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    /// The same with a device that completes each batch in reverse and holds one buffer back
    /// for a round: every cookie still comes back exactly once.
    func testIndicesWrapPast65535OutOfOrderDevice() throws {
        let h = RingHarness(queueSize: 8)
        var seen = [Bool](repeating: false, count: 70000)
        var next: UInt32 = 0
        var held: DeviceChain?
        var completed = 0
        while completed < 70000 {
            let room = min(h.ring.numFree, 70000 - Int(next))
            h.add(count: room, firstCookie: next)
            next += UInt32(room)
            h.ring.publish()
            var chains = try h.popAll()
            if let old = held { chains.append(old) }
            held = chains.count > 1 ? chains.removeFirst() : nil
            for chain in chains.reversed() { h.device.pushUsed(id: chain.head, length: 0) }
            for c in h.dequeue() {
                guard !seen[Int(c.cookie)] else {
                    XCTFail("cookie \(c.cookie) returned twice")
                    return
                }
                seen[Int(c.cookie)] = true
                completed += 1
            }
        }
        XCTAssertTrue(seen.allSatisfy { $0 })
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }
}
