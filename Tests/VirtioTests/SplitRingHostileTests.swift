import FerryTestSupport
import Virtio
import XCTest

/// A backend writing nonsense into the used ring: every case is counted, skipped or zeroed,
/// nothing traps, and valid entries still work afterwards.
final class SplitRingHostileTests: XCTestCase {
    /// Posts `count` buffers, publishes them and pops them on the device side.
    private func posted(_ h: RingHarness, count: Int, writable: Bool = false, length: UInt32 = 64,
                        firstCookie: UInt32 = 0) throws -> [DeviceChain] {
        XCTAssertEqual(h.add(count: count, firstCookie: firstCookie, length: length, writable: writable), count)
        h.ring.publish()
        return try h.popAll()
    }

    /// The ring is healthy: completing every outstanding chain returns exactly `cookies`.
    private func assertStillWorks(_ h: RingHarness, _ chains: [DeviceChain], cookies: [UInt32],
                                  file: StaticString = #filePath, line: UInt = #line) {
        for chain in chains { h.device.pushUsed(id: chain.head, length: 0) }
        XCTAssertEqual(h.dequeue().map(\.cookie), cookies, file: file, line: line)
        XCTAssertEqual(h.ring.inFlight, 0, file: file, line: line)
        XCTAssertEqual(h.ring.numFree, Int(h.queueSize), file: file, line: line)
    }

    func testIdOutOfRange() throws {
        let h = RingHarness(queueSize: 8)
        let chains = try posted(h, count: 3)
        h.device.pushUsed(rawID: 8, length: 0)
        h.device.pushUsed(rawID: 0xFFFF_FFFF, length: 0)
        h.device.pushUsed(rawID: 0x1_0000 + UInt32(chains[0].head), length: 0) // truncation would alias
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 3)
        XCTAssertEqual(h.ring.lastUsedIndex, 3, "skipped entries are consumed")
        XCTAssertEqual(h.ring.inFlight, 3)
        XCTAssertEqual(h.ring.numFree, 5)
        assertStillWorks(h, chains, cookies: [0, 1, 2])
    }

    func testIdNotInFlight() throws {
        let h = RingHarness(queueSize: 8)
        // A two-descriptor chain and a single buffer: descriptors 0,1 (chain) and 2.
        XCTAssertTrue(h.addChain([RingSegment(address: 0x1000, length: 1, deviceWritable: false),
                                  RingSegment(address: 0x2000, length: 1, deviceWritable: false)], cookie: 40))
        XCTAssertEqual(h.add(count: 1, firstCookie: 41), 1)
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.map(\.segments.count), [2, 1])
        // A fresh free list hands out descriptors in order.
        XCTAssertEqual(chains.map(\.head), [0, 2])
        h.device.pushUsed(id: 5, length: 0) // a free descriptor
        h.device.pushUsed(id: 1, length: 0) // in flight, but the middle of the chain
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        assertStillWorks(h, chains, cookies: [40, 41])
    }

    func testDuplicateCompletion() throws {
        let h = RingHarness(queueSize: 8)
        let chains = try posted(h, count: 2, firstCookie: 7)
        h.device.pushUsed(id: chains[0].head, length: 0)
        h.device.pushUsed(id: chains[0].head, length: 0) // same call
        XCTAssertEqual(h.dequeue().map(\.cookie), [7])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        h.device.pushUsed(id: chains[0].head, length: 0) // a later call
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        XCTAssertEqual(h.ring.inFlight, 1)
        XCTAssertEqual(h.ring.numFree, 7)
        assertStillWorks(h, [chains[1]], cookies: [8])
    }

    func testCompletionOfUnpublishedChain() throws {
        let h = RingHarness(queueSize: 8)
        let chains = try posted(h, count: 1, firstCookie: 1)
        XCTAssertEqual(h.add(count: 1, firstCookie: 2), 1) // not published
        // The device guesses the next free descriptor's index before it was published.
        let guessed = (0..<UInt16(8)).first { $0 != chains[0].head }!
        h.device.pushUsed(id: guessed, length: 0)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        h.ring.publish()
        let later = try h.popAll()
        XCTAssertEqual(later.map(\.head), [guessed])
        assertStillWorks(h, chains + later, cookies: [1, 2])
    }

    func testUsedLengthLargerThanPosted() throws {
        let h = RingHarness(queueSize: 8)
        let chains = try posted(h, count: 3, writable: true, length: 100)
        h.device.pushUsed(id: chains[0].head, length: 101)
        h.device.pushUsed(id: chains[1].head, length: 100)
        h.device.pushUsed(id: chains[2].head, length: 0xFFFF_FFFF)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 0, length: 0), Completion(cookie: 1, length: 100),
                                     Completion(cookie: 2, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 2)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
        XCTAssertEqual(h.ring.numFree, 8, "a bad length still frees the chain")
    }

    func testUsedLengthAgainstChainTotalAndReadOnlyChains() throws {
        let h = RingHarness(queueSize: 8)
        let rx = [RingSegment(address: 0x1000, length: 100, deviceWritable: true),
                  RingSegment(address: 0x2000, length: 50, deviceWritable: true)]
        XCTAssertTrue(h.addChain(rx, cookie: 1))
        XCTAssertTrue(h.addChain(rx, cookie: 2))
        XCTAssertEqual(h.add(count: 1, firstCookie: 3, length: 64, writable: false), 1)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[0].head, length: 150)
        h.device.pushUsed(id: chains[1].head, length: 151)
        h.device.pushUsed(id: chains[2].head, length: 500) // a TX chain: nothing was writable
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 1, length: 150), Completion(cookie: 2, length: 0),
                                     Completion(cookie: 3, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1, "only the writable chain counts")
    }

    func testUsedIndexJumpsFarAhead() throws {
        let h = RingHarness(queueSize: 8)
        h.poisonUsedRing()
        let chains = try posted(h, count: 4, firstCookie: 20)
        h.device.forceUsedIndex(1000)
        XCTAssertEqual(h.ring.pendingUsed(), 4, "clamped to the chains in flight")
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 4, "at most inFlight garbage entries read per call")
        XCTAssertEqual(h.ring.lastUsedIndex, 4)
        XCTAssertEqual(h.ring.inFlight, 4)
        XCTAssertEqual(h.dequeue(max: 2), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 6, "and at most max")
        XCTAssertEqual(h.ring.lastUsedIndex, 6)
        // The device comes back to its senses at the driver's position.
        h.device.forceUsedIndex(h.ring.lastUsedIndex)
        XCTAssertEqual(h.ring.pendingUsed(), 0)
        assertStillWorks(h, chains, cookies: [20, 21, 22, 23])
        XCTAssertEqual(h.ring.invalidUsedIds, 6)
    }

    func testUsedIndexWithNothingInFlightReadsNothing() {
        let h = RingHarness(queueSize: 8)
        h.device.forceUsedIndex(5)
        XCTAssertEqual(h.ring.pendingUsed(), 0)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.lastUsedIndex, 0)
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    func testUsedIndexRewound() throws {
        let h = RingHarness(queueSize: 8)
        h.poisonUsedRing()
        let chains = try posted(h, count: 2)
        h.device.forceUsedIndex(0xFFFF) // "behind" the driver: looks like 65535 new entries
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        h.device.forceUsedIndex(h.ring.lastUsedIndex)
        assertStillWorks(h, chains, cookies: [0, 1])
    }

    func testMixedValidAndInvalidEntries() throws {
        let h = RingHarness(queueSize: 8)
        let chains = try posted(h, count: 3, writable: true, length: 10, firstCookie: 50)
        h.device.pushUsed(rawID: 99, length: 0)
        h.device.pushUsed(id: chains[1].head, length: 10)
        h.device.pushUsed(id: chains[1].head, length: 10)
        h.device.pushUsed(id: chains[0].head, length: 11)
        h.device.pushUsed(id: chains[2].head, length: 3)
        // Five entries, three chains in flight: one call reads at most three entries.
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 51, length: 10)])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        XCTAssertEqual(h.ring.lastUsedIndex, 3)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 50, length: 0), Completion(cookie: 52, length: 3)])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
        XCTAssertEqual(h.ring.lastUsedIndex, 5)
        XCTAssertEqual(h.ring.numFree, 8)
    }
}
