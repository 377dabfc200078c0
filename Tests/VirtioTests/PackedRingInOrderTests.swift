import FerryTestSupport
import Virtio
import XCTest

/// VIRTIO_F_IN_ORDER on a packed ring (virtio 1.2 §2.8, "In-order use of descriptors"): one
/// used descriptor may complete a batch, and the used position skips the whole batch.
final class PackedRingInOrderTests: XCTestCase {
    func testIdsAreHeadPositions() throws {
        let h = PackedRingHarness(queueSize: 8, inOrder: true)
        h.add(count: 1, firstCookie: 0)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(3), cookie: 1))
        h.add(count: 1, firstCookie: 2)
        h.ring.publish()
        XCTAssertEqual(try h.popAll().map(\.head), [0, 1, 4])
    }

    func testOneUsedDescriptorCompletesABatchOfFour() throws {
        let h = PackedRingHarness(queueSize: 8, inOrder: true)
        XCTAssertEqual(h.add(count: 4, firstCookie: 10, length: 100, writable: true), 4)
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(h.device.pushUsedBatch(lastID: chains[3].head, length: 60), 4)
        XCTAssertEqual(h.ring.pendingUsed(), 4)
        // The chains before the batch's last were used completely: their posted length.
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 10, length: 100), Completion(cookie: 11, length: 100),
                                     Completion(cookie: 12, length: 100), Completion(cookie: 13, length: 60)])
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8004, "the used position skips the batch")
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    func testBatchOfChainsSkipsAllTheirSlots() throws {
        let h = PackedRingHarness(queueSize: 10, inOrder: true)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(3, writable: 1), cookie: 0))
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(2, writable: 1), cookie: 1))
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(4, writable: 1), cookie: 2))
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsedBatch(lastID: c[1].head, length: 5)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 32), Completion(cookie: 1, length: 5)],
                       "the skipped chain reports its posted writable length")
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8005)
        h.device.pushUsed(id: c[2].head, length: 7)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 2, length: 7)])
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8009)
    }

    func testBatchLargerThanRoomFinishesOnNextCallEvenIfItsSlotIsReused() throws {
        let h = PackedRingHarness(queueSize: 4, inOrder: true)
        XCTAssertEqual(h.add(count: 4, firstCookie: 0, length: 100, writable: true), 4)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsedBatch(lastID: chains[3].head, length: 7)
        XCTAssertEqual(h.dequeue(max: 1).map(\.cookie), [0])
        XCTAssertEqual(h.ring.lastUsedIndex, 0, "the batch descriptor is consumed at once")
        XCTAssertEqual(h.ring.pendingUsed(), 3)
        // Slot 0 (which held the batch's used descriptor) is free: the driver reuses it.
        XCTAssertEqual(h.add(count: 1, firstCookie: 4, length: 100, writable: true), 1)
        h.ring.publish()
        XCTAssertEqual(h.dequeue(max: 2), [Completion(cookie: 1, length: 100), Completion(cookie: 2, length: 100)])
        XCTAssertEqual(h.dequeue(max: 2), [Completion(cookie: 3, length: 7)])
        XCTAssertEqual(h.ring.inFlight, 1)
        let next = try h.popAll()
        XCTAssertEqual(next.map(\.head), [0])
        h.device.pushUsed(id: 0, length: 9)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 4, length: 9)])
        XCTAssertEqual(h.ring.numFree, 4)
    }

    func testUnbatchedAndBatchedDescriptorsMixed() throws {
        let h = PackedRingHarness(queueSize: 8, inOrder: true)
        h.add(count: 6, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 1)
        h.device.pushUsedBatch(lastID: c[2].head, length: 3)
        h.device.pushUsed(id: c[3].head, length: 4)
        XCTAssertEqual(h.ring.pendingUsed(), 4)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 1), Completion(cookie: 1, length: 100),
                                     Completion(cookie: 2, length: 3), Completion(cookie: 3, length: 4)])
        XCTAssertEqual(h.ring.inFlight, 2)
        XCTAssertEqual(h.inFlightCookies, [4, 5], "ring order")
    }

    func testInvalidIdsAreSkipped() throws {
        let h = PackedRingHarness(queueSize: 8, inOrder: true)
        h.add(count: 3, firstCookie: 0)
        h.ring.publish()
        _ = try h.popAll()
        h.add(count: 1, firstCookie: 3) // unpublished, id = slot 3
        h.device.writeUsed(id: 6, length: 0, advance: 1)        // never posted
        h.device.writeUsed(id: 0x7FFF, length: 0, advance: 1)   // out of range
        h.device.writeUsed(id: 3, length: 0, advance: 1)        // not published
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 3)
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8003)
        XCTAssertEqual(h.ring.inFlight, 4)
        h.ring.publish()
        XCTAssertEqual(h.dequeue(), [], "slot 3 now holds an available descriptor, not a used one")
        XCTAssertEqual(try h.popAll().map(\.head), [3])
        h.device.pushUsedBatch(lastID: 3, length: 0)
        XCTAssertEqual(h.dequeue().map(\.cookie), [0, 1, 2, 3])
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8004)
        XCTAssertEqual(h.ring.numFree, 8)
    }

    func testAValidIdResynchronisesTheUsedPosition() throws {
        let h = PackedRingHarness(queueSize: 8, inOrder: true)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(2), cookie: 0)) // id 0, slots 0-1
        h.add(count: 2, firstCookie: 1)                                    // ids 2, 3
        h.ring.publish()
        XCTAssertEqual(try h.popAll().map(\.head), [0, 2, 3])
        h.device.writeUsed(id: 6, length: 0, advance: 1)  // garbage in slot 0
        h.device.writeUsed(id: 2, length: 0, advance: 2)  // batch A, B found in slot 1
        XCTAssertEqual(h.dequeue().map(\.cookie), [0, 1])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8003, "end of chain 2, not slot 1 + its length")
        h.device.writeUsed(id: 3, length: 0, advance: 1)
        XCTAssertEqual(h.dequeue().map(\.cookie), [2])
        XCTAssertEqual(h.ring.numFree, 8)
    }

    func testCompletedIdIsInvalidTheSecondTime() throws {
        let h = PackedRingHarness(queueSize: 8, inOrder: true)
        h.add(count: 2, firstCookie: 0)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 0)
        h.device.writeUsed(id: c[0].head, length: 0, advance: 1)
        XCTAssertEqual(h.dequeue().map(\.cookie), [0])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        XCTAssertEqual(h.ring.inFlight, 1)
    }

    func testBatchAcrossTheRingEnd() throws {
        let h = PackedRingHarness(queueSize: 5, inOrder: true)
        h.add(count: 3, firstCookie: 0)
        h.ring.publish()
        for c in try h.popAll() { h.device.pushUsed(id: c.head, length: 0) }
        XCTAssertEqual(h.dequeue().count, 3)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(3), cookie: 3)) // slots 3, 4, 0
        h.add(count: 2, firstCookie: 4)                                      // slots 1, 2
        h.ring.publish()
        let c = try h.popAll()
        XCTAssertEqual(c.map(\.head), [3, 1, 2])
        h.device.pushUsedBatch(lastID: 2, length: 0)
        XCTAssertEqual(h.dequeue().map(\.cookie), [3, 4, 5])
        XCTAssertEqual(h.ring.lastUsedIndex, 3, "slot 3 of lap 0")
        XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex)
    }
}
