import FerryTestSupport
import Virtio
import XCTest

/// VIRTIO_F_IN_ORDER (virtio 1.2 §2.7.9): descriptors in ring order, batched used entries.
final class SplitRingInOrderTests: XCTestCase {
    func testOneUsedEntryCompletesABatchOfFour() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        XCTAssertEqual(h.add(count: 4, firstCookie: 10, length: 100, writable: true), 4)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[3].head, length: 60)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 10, length: 0), Completion(cookie: 11, length: 0),
                                     Completion(cookie: 12, length: 0), Completion(cookie: 13, length: 60)])
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.lastUsedIndex, 1)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    func testBatchLargerThanRoomFinishesOnNextCall() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 4, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[3].head, length: 7)
        XCTAssertEqual(h.dequeue(max: 3).map(\.cookie), [0, 1, 2])
        XCTAssertEqual(h.ring.lastUsedIndex, 0, "the batch entry is not consumed until its batch is")
        XCTAssertEqual(h.ring.inFlight, 1)
        XCTAssertEqual(h.dequeue(max: 3), [Completion(cookie: 3, length: 7)])
        XCTAssertEqual(h.ring.lastUsedIndex, 1)
        XCTAssertEqual(h.ring.numFree, 8)
    }

    func testUnbatchedEntriesAndMixedBatches() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 6, firstCookie: 0, length: 100, writable: true)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 1)
        h.device.pushUsed(id: c[2].head, length: 3)
        h.device.pushUsed(id: c[3].head, length: 4)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 1), Completion(cookie: 1, length: 0),
                                     Completion(cookie: 2, length: 3), Completion(cookie: 3, length: 4)])
        XCTAssertEqual(h.ring.inFlight, 2)
    }

    func testIdOutsideTheWindowIsInvalid() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 2, firstCookie: 0)
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 0)
        h.device.pushUsed(id: c[0].head, length: 0)  // already completed
        h.device.pushUsed(id: 6, length: 0)          // never posted
        h.device.pushUsed(rawID: 1 << 20, length: 0) // out of range
        // Each call reads at most as many entries as chains are in flight.
        XCTAssertEqual(h.dequeue().map(\.cookie), [0])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        XCTAssertEqual(h.ring.lastUsedIndex, 2)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        h.device.pushUsed(id: c[1].head, length: 0)
        XCTAssertEqual(h.dequeue(), [], "the out-of-range entry comes first")
        XCTAssertEqual(h.ring.invalidUsedIds, 3)
        XCTAssertEqual(h.dequeue().map(\.cookie), [1])
        XCTAssertEqual(h.ring.lastUsedIndex, 5)
        XCTAssertEqual(h.ring.numFree, 8)
    }

    func testUnpublishedChainsAreOutsideTheWindow() throws {
        let h = RingHarness(queueSize: 8, inOrder: true)
        h.add(count: 1, firstCookie: 0)
        h.ring.publish()
        let c = try h.popAll()
        h.add(count: 1, firstCookie: 1) // descriptor 1, not published
        h.device.pushUsed(id: 1, length: 0)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        h.device.pushUsed(id: c[0].head, length: 0)
        XCTAssertEqual(h.dequeue().map(\.cookie), [0])
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
            h.device.pushUsed(id: chains[1].head, length: 0) // one entry for both
            XCTAssertEqual(h.dequeue().map(\.cookie), [UInt32(2 * round), UInt32(2 * round + 1)])
        }
        XCTAssertEqual(heads, [0, 3, 5, 0, 2, 5, 7, 2, 4, 7])
    }
}
