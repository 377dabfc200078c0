import FerryTestSupport
import Virtio
import XCTest

/// VIRTIO_F_IN_ORDER on a split ring (virtio 1.2 §2.7.9): descriptors in ring order; a batch
/// is one used entry at the slot of its first chain, naming its last chain, and used->idx
/// advances by the batch size.
final class SplitRingInOrderTests: XCTestCase {
    func testOneUsedEntryCompletesABatchOfFour() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        XCTAssertEqual(h.add(count: 4, firstCookie: 10, length: 100, writable: true), 4)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsedBatch(lastID: chains[3].head, count: 4, length: 60)
        XCTAssertEqual(h.ring.pendingUsed(), 4)
        // The skipped chains were used completely (§2.7.9): their posted length.
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 10, length: 100), Completion(cookie: 11, length: 100),
                                     Completion(cookie: 12, length: 100), Completion(cookie: 13, length: 60)])
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.lastUsedIndex, 4, "the used index counts chains")
        XCTAssertEqual(h.ring.invalidUsedIds, 0, "the poisoned skipped slots were not read")
    }

    func testBatchLargerThanRoomFinishesOnNextCall() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 4, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsedBatch(lastID: chains[3].head, count: 4, length: 7)
        XCTAssertEqual(h.dequeue(max: 3), [Completion(cookie: 0, length: 100), Completion(cookie: 1, length: 100),
                                           Completion(cookie: 2, length: 100)])
        XCTAssertEqual(h.ring.lastUsedIndex, 3)
        XCTAssertEqual(h.ring.inFlight, 1)
        XCTAssertEqual(h.dequeue(max: 3), [Completion(cookie: 3, length: 7)], "the rest of the batch, not a slot re-read")
        XCTAssertEqual(h.ring.lastUsedIndex, 4)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    func testUnbatchedEntriesAndMixedBatches() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 6, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 1)
        h.device.pushUsedBatch(lastID: c[2].head, count: 2, length: 3)
        h.device.pushUsed(id: c[3].head, length: 4)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 1), Completion(cookie: 1, length: 100),
                                     Completion(cookie: 2, length: 3), Completion(cookie: 3, length: 4)])
        XCTAssertEqual(h.ring.inFlight, 2)
        XCTAssertEqual(h.ring.lastUsedIndex, 4)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    /// used->idx is what the driver trusts: an entry whose id is not among the chains the index
    /// says are done (never posted, already completed, out of range) still completes the oldest
    /// chain, with length 0 (dropped), and is counted. Nothing leaks and nothing is reported
    /// twice.
    func testIdOutsideTheDoneWindowCompletesTheOldestWithLengthZero() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 4, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 10)
        h.device.pushUsed(id: c[0].head, length: 10)  // already completed
        h.device.pushUsed(id: 6, length: 10)          // never posted
        h.device.pushUsed(rawID: 1 << 20, length: 10) // out of range
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 10), Completion(cookie: 1, length: 0),
                                     Completion(cookie: 2, length: 0), Completion(cookie: 3, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedIds, 3)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.lastUsedIndex, 4)
    }

    /// A batch id beyond what used->idx covers is outside the window too: the device cannot
    /// complete a chain by naming it without counting it.
    func testBatchIdBeyondTheIndexIsInvalid() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 4, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsedBatch(lastID: c[3].head, count: 2, length: 9) // names chain 3, counts 2
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 0), Completion(cookie: 1, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedIds, 2, "the entry, then the poisoned slot after it, each a batch of one")
        XCTAssertEqual(h.ring.inFlight, 2)
    }

    func testUnpublishedChainsAreNeverCompleted() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 1, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        h.add(count: 1, firstCookie: 1, length: 100, writable: true) // descriptor 1, not published
        h.device.pushUsed(id: c[0].head, length: 5)
        h.device.pushUsed(id: 1, length: 5)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 5)], "used->idx is clamped to published chains")
        XCTAssertEqual(h.ring.inFlight, 1)
        XCTAssertEqual(h.ring.pendingUsed(), 0)
    }

    /// A device that jumps used->idx far ahead completes at most the published chains.
    func testJumpedUsedIndexIsClampedToPublishedChains() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.poisonUsedRing()
        h.add(count: 3, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        _ = try h.popAll()
        h.device.forceUsedIndex(1000)
        let got = h.dequeue()
        XCTAssertEqual(got.map(\.cookie), [0, 1, 2])
        XCTAssertEqual(got.map(\.length), [0, 0, 0], "poisoned entries: ids outside the window")
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.dequeue(), [])
    }

    // ---- the IN_ORDER fast path (TX reclaim) ---------------------------------------------------

    /// `reclaimUsed` reads used->idx and no used entry: poisoned entries change nothing and are
    /// not counted, and whole batches come back in order.
    func testReclaimFastPathReadsNoUsedEntry() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.poisonUsedRing()
        var cookies = [UInt32](repeating: 0, count: 8)
        for round in 0..<5 {
            let first = UInt32(round * 6)
            XCTAssertEqual(h.add(count: 6, firstCookie: first), 6)
            h.ring.publish()
            _ = try h.popAll()
            h.device.forceUsedIndex(h.device.usedIndex &+ 6) // nothing written: every entry poisoned
            let n = cookies.withUnsafeMutableBufferPointer { h.ring.reclaimUsed(cookies: $0.baseAddress!, max: 4) }
            XCTAssertEqual(Array(cookies[0..<n]), (first..<first + 4).map { $0 })
            let m = cookies.withUnsafeMutableBufferPointer { h.ring.reclaimUsed(cookies: $0.baseAddress!, max: 8) }
            XCTAssertEqual(Array(cookies[0..<m]), [first + 4, first + 5])
        }
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.lastUsedIndex, 30)
        XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex)
    }

    /// The fast path still never completes what was not published, or more than is in flight.
    func testReclaimFastPathIsClamped() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 2, firstCookie: 0)
        h.ring.publish()
        h.add(count: 1, firstCookie: 2) // not published
        h.device.forceUsedIndex(0x7FFF)
        var cookies = [UInt32](repeating: 0, count: 8)
        let n = cookies.withUnsafeMutableBufferPointer { h.ring.reclaimUsed(cookies: $0.baseAddress!, max: 8) }
        XCTAssertEqual(Array(cookies[0..<n]), [0, 1])
        XCTAssertEqual(h.ring.inFlight, 1)
    }

    /// Without IN_ORDER `reclaimUsed` reads every entry as `dequeueUsed` does.
    func testReclaimWithoutInOrderChecksEachId() throws {
        let h = RingHarness(queueSize: 8, inOrder: false)
        h.add(count: 3, firstCookie: 0)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[2].head, length: 0)
        h.device.pushUsed(rawID: 99, length: 0)
        h.device.pushUsed(id: c[0].head, length: 0)
        var cookies = [UInt32](repeating: 0, count: 8)
        let n = cookies.withUnsafeMutableBufferPointer { h.ring.reclaimUsed(cookies: $0.baseAddress!, max: 8) }
        XCTAssertEqual(Array(cookies[0..<n]), [2, 0])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
    }

    /// Batches across the 16-bit used index overflow.
    func testBatchesAcrossTheIndexWrap() throws {
        let h = RingHarness(queueSize: 4, inOrder: true)
        var next: UInt32 = 0
        for _ in 0..<(65536 / 3 + 10) {
            XCTAssertEqual(h.add(count: 3, firstCookie: next, length: 50, writable: true), 3)
            h.ring.publish()
            let c = try h.popAll()
            h.device.pushUsed(id: c[0].head, length: 1)
            h.device.pushUsedBatch(lastID: c[2].head, count: 2, length: 2)
            let got = h.dequeue()
            guard got == [Completion(cookie: next, length: 1), Completion(cookie: next + 1, length: 50),
                          Completion(cookie: next + 2, length: 2)] else {
                XCTFail("at used index \(h.ring.lastUsedIndex): \(got)")
                return
            }
            next += 3
        }
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
        XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex)
    }

    /// With IN_ORDER the driver uses descriptors in ring order and sets `next` to x+1, wrapping
    /// to 0 after the last descriptor (split-ring rules for IN_ORDER).
    func testDescriptorsAreUsedInRingOrder() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        var heads: [UInt16] = []
        func segments(_ n: Int) -> [RingSegment] {
            (0..<n).map { RingSegment(address: 0x1000 * UInt64($0 + 1), length: 1, deviceWritable: false) }
        }
        for round in 0..<5 {
            XCTAssertTrue(h.addChain(segments(3), cookie: UInt32(2 * round)))
            XCTAssertTrue(h.addChain(segments(2), cookie: UInt32(2 * round + 1)))
            h.ring.publish()
            let chains = try h.popAll()
            heads += chains.map(\.head)
            // The chains' `next` fields as written in the shared table: x+1, and 0 after 7.
            for chain in chains {
                for k in 0..<(chain.segments.count - 1) {
                    let index = (Int(chain.head) + k) % 8
                    let next = h.ring.descTable.load(fromByteOffset: index * 16 + 14, as: UInt16.self)
                    XCTAssertEqual(Int(next), (index + 1) % 8, "round \(round) descriptor \(index)")
                }
            }
            h.device.pushUsedBatch(lastID: chains[1].head, count: 2, length: 0) // one entry for both
            XCTAssertEqual(h.dequeue().map(\.cookie), [UInt32(2 * round), UInt32(2 * round + 1)])
        }
        XCTAssertEqual(heads, [0, 3, 5, 0, 2, 5, 7, 2, 4, 7])
    }
}
