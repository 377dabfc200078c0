import CFerry
import FerryTestSupport
import Virtio
import XCTest

/// The packed ring's ordinary life (virtio 1.2 §2.8): layout, add, publish, consume, reclaim.
final class PackedRingBasicTests: XCTestCase {
    func testLayoutPlacesTheDeviceAreaOnItsOwnPage() {
        XCTAssertEqual(PackedRingLayout.driverEventOffset(queueSize: 256), 4096)
        XCTAssertEqual(PackedRingLayout.deviceEventOffset(queueSize: 256), 8192)
        XCTAssertEqual(PackedRingLayout.totalSize(queueSize: 256), 12288)
        XCTAssertEqual(PackedRingLayout.driverEventOffset(queueSize: 255), 4080)
        XCTAssertEqual(PackedRingLayout.deviceEventOffset(queueSize: 255), 4096)
        XCTAssertEqual(PackedRingLayout.totalSize(queueSize: 255), 8192)
        XCTAssertEqual(PackedRingLayout.driverEventOffset(queueSize: 1025), 16400)
        XCTAssertEqual(PackedRingLayout.deviceEventOffset(queueSize: 1025), 20480)
        XCTAssertEqual(PackedRingLayout.totalSize(queueSize: 1), 8192)

        let h = PackedRingHarness(queueSize: 255)
        XCTAssertEqual(h.ring.descTable, h.memory)
        XCTAssertEqual(h.ring.availRing, h.memory + 4080, "SET_VRING_ADDR avail = driver event area")
        XCTAssertEqual(h.ring.usedRing, h.memory + 4096, "SET_VRING_ADDR used = device event area")
    }

    func testFreshRing() {
        let h = PackedRingHarness(queueSize: 255)
        XCTAssertEqual(h.ring.queueSize, 255)
        XCTAssertEqual(h.ring.numFree, 255)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.availIndex, 0x8000, "position 0, avail wrap counter 1")
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8000, "position 0, used wrap counter 1")
        XCTAssertEqual(h.ring.pendingUsed(), 0)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertFalse(h.device.hasAvailable)
    }

    func testAddedBuffersAreInvisibleUntilPublished() throws {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertEqual(h.add(count: 3, firstCookie: 100), 3)
        XCTAssertEqual(h.ring.inFlight, 3)
        XCTAssertEqual(h.ring.numFree, 5)
        XCTAssertEqual(h.descriptor(0).flags, 0, "the batch's first flags are held back")
        XCTAssertEqual(h.descriptor(1).flags, PackedRingFlags.descAvail)
        XCTAssertNil(try h.device.popAvail())
        XCTAssertFalse(h.ring.kickNeeded(), "nothing published yet")

        h.ring.publish()
        XCTAssertEqual(h.descriptor(0).flags, PackedRingFlags.descAvail)
        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 3)
        XCTAssertEqual(Set(chains.map(\.head)).count, 3, "distinct buffer ids")
        XCTAssertEqual(chains.map { $0.segments[0].length }, [64, 64, 64])
        XCTAssertEqual(chains.map { UInt64(UInt(bitPattern: $0.segments[0].pointer)) },
                       (100..<103).map { PackedRingHarness.fakeAddress($0) })
        XCTAssertEqual(h.device.vringBase, 0x8003)
    }

    func testPublishWithNothingAddedChangesNothing() {
        let h = PackedRingHarness(queueSize: 4)
        h.ring.publish()
        XCTAssertFalse(h.ring.kickNeeded())
        XCTAssertEqual(h.descriptor(0).flags, 0)
    }

    func testConsumeAndReclaimReportsCookiesAndLengths() throws {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertEqual(h.add(count: 4, firstCookie: 10, length: 1500, writable: true), 4)
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.map(\.writableLength), [1500, 1500, 1500, 1500])
        for (i, chain) in chains.enumerated() { h.device.pushUsed(id: chain.head, length: UInt32(60 + i)) }
        XCTAssertEqual(h.ring.pendingUsed(), 4)
        XCTAssertEqual(h.dequeue(), (0..<4).map { Completion(cookie: 10 + UInt32($0), length: 60 + UInt32($0)) })
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8004)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
        XCTAssertEqual(h.ring.invalidUsedLengths, 0)
        XCTAssertEqual(h.dequeue(), [], "each used descriptor is reported once")
    }

    func testDequeueHonoursMax() throws {
        let h = PackedRingHarness(queueSize: 8)
        h.add(count: 5, firstCookie: 0)
        h.ring.publish()
        for c in try h.popAll() { h.device.pushUsed(id: c.head, length: 0) }
        XCTAssertEqual(h.dequeue(max: 2).map(\.cookie), [0, 1])
        XCTAssertEqual(h.dequeue(max: 2).map(\.cookie), [2, 3])
        XCTAssertEqual(h.dequeue(max: 2).map(\.cookie), [4])
    }

    func testFullRing() throws {
        let h = PackedRingHarness(queueSize: 5)
        XCTAssertEqual(h.add(count: 6, firstCookie: 0), 5)
        XCTAssertEqual(h.ring.numFree, 0)
        XCTAssertFalse(h.addChain(PackedRingHarness.segments(2), cookie: 99))
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 5)
        XCTAssertEqual(h.device.vringBase, 0, "the device's avail wrap counter flipped at the end")
        h.device.pushUsed(id: chains[2].head, length: 0)
        XCTAssertEqual(h.dequeue().map(\.cookie), [2])
        XCTAssertEqual(h.add(count: 2, firstCookie: 5), 1, "one slot came back")
        XCTAssertEqual(h.ring.availIndex, 1, "slot 1 of the second lap")
        XCTAssertEqual(h.ring.availIndex & 0x8000, 0)
    }

    func testChainOccupiesConsecutiveSlotsWithOneId() throws {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(3, length: 100, writable: 1), cookie: 7))
        XCTAssertEqual(h.ring.numFree, 5)
        XCTAssertEqual(h.ring.inFlight, 1)
        h.ring.publish()
        let d = (0..<3).map { h.descriptor($0) }
        XCTAssertEqual(Set(d.map(\.id)).count, 1, "every descriptor carries the buffer id")
        XCTAssertEqual(d.map(\.flags), [PackedRingFlags.descAvail | PackedRingFlags.descNext,
                                        PackedRingFlags.descAvail | PackedRingFlags.descNext,
                                        PackedRingFlags.descAvail | PackedRingFlags.descWrite])
        let chain = try XCTUnwrap(try h.device.popAvail())
        XCTAssertEqual(chain.segments.map(\.deviceWritable), [false, false, true])
        XCTAssertEqual(chain.writableLength, 100)
        h.device.pushUsed(id: chain.head, length: 80)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 7, length: 80)])
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8003, "the used position moves by the recorded chain length")
        XCTAssertEqual(h.ring.numFree, 8)
    }

    func testChainAcrossTheRingEndUsesEachSlotsWrapCounter() throws {
        let h = PackedRingHarness(queueSize: 5)
        h.add(count: 3, firstCookie: 0)
        h.ring.publish()
        for c in try h.popAll() { h.device.pushUsed(id: c.head, length: 0) }
        XCTAssertEqual(h.dequeue().count, 3)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(4, writable: 2), cookie: 50))
        h.ring.publish()
        // Slots 3 and 4 are on lap 1 (AVAIL set), slots 0 and 1 on lap 0 (USED set).
        XCTAssertEqual(h.descriptor(3).flags & PackedRingFlags.descAvailUsed, PackedRingFlags.descAvail)
        XCTAssertEqual(h.descriptor(4).flags & PackedRingFlags.descAvailUsed, PackedRingFlags.descAvail)
        XCTAssertEqual(h.descriptor(0).flags & PackedRingFlags.descAvailUsed, PackedRingFlags.descUsed)
        XCTAssertEqual(h.descriptor(1).flags & PackedRingFlags.descAvailUsed, PackedRingFlags.descUsed)
        XCTAssertEqual(h.ring.availIndex, 2)
        let chain = try XCTUnwrap(try h.device.popAvail())
        XCTAssertEqual(chain.segments.count, 4)
        h.device.pushUsed(id: chain.head, length: 64)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 50, length: 64)])
        XCTAssertEqual(h.ring.lastUsedIndex, 2, "used position 2 on lap 0")
    }

    func testRefusedChainsLeaveNoTrace() {
        let h = PackedRingHarness(queueSize: 4)
        let readableAfterWritable = [RingSegment(address: 0x1000, length: 1, deviceWritable: true),
                                     RingSegment(address: 0x2000, length: 1, deviceWritable: false)]
        XCTAssertFalse(h.addChain(readableAfterWritable, cookie: 1))
        XCTAssertFalse(h.addChain([], cookie: 2))
        XCTAssertFalse(h.addChain(PackedRingHarness.segments(5), cookie: 3))
        XCTAssertEqual(h.ring.numFree, 4)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.availIndex, 0x8000)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(4), cookie: 4), "a chain may fill the ring")
    }

    func testOutOfOrderCompletionWithMixedChainLengths() throws {
        let h = PackedRingHarness(queueSize: 16)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(3, writable: 3), cookie: 0))
        h.add(count: 1, firstCookie: 1, writable: true)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(2, writable: 2), cookie: 2))
        h.add(count: 1, firstCookie: 3, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        XCTAssertEqual(c.map(\.segments.count), [3, 1, 2, 1])
        for k in [2, 0, 3, 1] { h.device.pushUsed(id: c[k].head, length: UInt32(k)) }
        XCTAssertEqual(h.dequeue(), [2, 0, 3, 1].map { Completion(cookie: UInt32($0), length: UInt32($0)) })
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8007)
        XCTAssertEqual(h.device.usedIndex, 7)
        XCTAssertEqual(h.ring.numFree, 16)
    }

    func testFreedIdsAreReused() throws {
        let h = PackedRingHarness(queueSize: 4)
        var seen = Set<UInt16>()
        for round in 0..<10 {
            h.add(count: 2, firstCookie: UInt32(round * 2))
            h.ring.publish()
            let c = try h.popAll()
            c.forEach { seen.insert($0.head) }
            for chain in c.reversed() { h.device.pushUsed(id: chain.head, length: 0) }
            XCTAssertEqual(h.dequeue().map(\.cookie), [UInt32(round * 2 + 1), UInt32(round * 2)])
        }
        XCTAssertTrue(seen.allSatisfy { $0 < 4 }, "ids stay below the queue size")
    }

    func testForEachInFlightIncludesUnpublished() throws {
        let h = PackedRingHarness(queueSize: 8)
        h.add(count: 3, firstCookie: 1)
        h.ring.publish()
        h.add(count: 2, firstCookie: 4)
        let c = try h.popAll()
        h.device.pushUsed(id: c[1].head, length: 0)
        XCTAssertEqual(h.dequeue().map(\.cookie), [2])
        XCTAssertEqual(h.inFlightCookies.sorted(), [1, 3, 4, 5])
    }

    func testNonPowerOfTwoSizesAreAccepted() {
        XCTAssertTrue(PackedRing.supportsQueueSize(255))
        XCTAssertTrue(PackedRing.supportsQueueSize(1025))
        XCTAssertTrue(PackedRing.supportsQueueSize(1))
        XCTAssertTrue(PackedRing.supportsQueueSize(32768))
        XCTAssertFalse(PackedRing.supportsQueueSize(0))
        XCTAssertFalse(PackedRing.supportsQueueSize(32769))
        XCTAssertFalse(SplitRing.supportsQueueSize(255))
        XCTAssertTrue(SplitRing.supportsQueueSize(256))
        XCTAssertEqual(PackedRing.memorySize(queueSize: 1025), PackedRingLayout.totalSize(queueSize: 1025))
        XCTAssertEqual(SplitRing.memorySize(queueSize: 256), SplitRingLayout.totalSize(queueSize: 256))
    }

    func testSizeOneRing() throws {
        let h = PackedRingHarness(queueSize: 1)
        for round in 0..<6 {
            XCTAssertEqual(h.add(count: 2, firstCookie: UInt32(round)), 1)
            h.ring.publish()
            let c = try h.popAll()
            XCTAssertEqual(c.count, 1)
            h.device.pushUsed(id: c[0].head, length: 0)
            XCTAssertEqual(h.dequeue().map(\.cookie), [UInt32(round)])
            XCTAssertEqual(h.ring.availIndex, round % 2 == 0 ? 0 : 0x8000, "the wrap counter flips every add")
        }
    }
}
