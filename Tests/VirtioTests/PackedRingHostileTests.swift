import FerryTestSupport
import Virtio
import XCTest

/// A backend writing nonsense into the packed ring: every case is counted, skipped or zeroed,
/// nothing traps or loops, and honest descriptors still work afterwards.
final class PackedRingHostileTests: XCTestCase {
    /// Posts `count` buffers, publishes them and takes them on the device side.
    private func posted(_ h: PackedRingHarness, count: Int, writable: Bool = false, length: UInt32 = 64,
                        firstCookie: UInt32 = 0) throws -> [DeviceChain] {
        XCTAssertEqual(h.add(count: count, firstCookie: firstCookie, length: length, writable: writable), count)
        h.ring.publish()
        return try h.popAll()
    }

    /// Completing every chain in `chains` returns exactly `cookies` (possibly over several
    /// calls) and leaves the ring empty.
    private func assertStillWorks(_ h: PackedRingHarness, _ chains: [DeviceChain], cookies: [UInt32],
                                  file: StaticString = #filePath, line: UInt = #line) {
        for chain in chains { h.device.pushUsed(id: chain.head, length: 0) }
        var got: [UInt32] = []
        for _ in 0..<4 { got += h.dequeue().map(\.cookie) }
        XCTAssertEqual(got, cookies, file: file, line: line)
        XCTAssertEqual(h.ring.inFlight, 0, file: file, line: line)
        XCTAssertEqual(h.ring.numFree, Int(h.queueSize), file: file, line: line)
    }

    func testIdOutOfRangeIsSkippedOneSlot() throws {
        let h = PackedRingHarness(queueSize: 8)
        let chains = try posted(h, count: 3)
        h.device.writeUsed(id: 8, length: 0, advance: 1)
        h.device.writeUsed(id: 0xFFFF, length: 0, advance: 1)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8002, "an invalid id moves the used position one slot")
        XCTAssertEqual(h.ring.inFlight, 3)
        XCTAssertEqual(h.ring.numFree, 5)
        assertStillWorks(h, chains, cookies: [0, 1, 2])
    }

    func testIdNotInFlight() throws {
        let h = PackedRingHarness(queueSize: 8)
        let chains = try posted(h, count: 2, firstCookie: 40)
        let free = (0..<UInt16(8)).first { id in !chains.contains { $0.head == id } }!
        h.device.writeUsed(id: free, length: 0, advance: 1)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        assertStillWorks(h, chains, cookies: [40, 41])
    }

    func testDuplicateCompletion() throws {
        let h = PackedRingHarness(queueSize: 8)
        let chains = try posted(h, count: 2, firstCookie: 7)
        h.device.pushUsed(id: chains[0].head, length: 0)
        h.device.writeUsed(id: chains[0].head, length: 0, advance: 1) // same call
        XCTAssertEqual(h.dequeue().map(\.cookie), [7])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        h.device.writeUsed(id: chains[0].head, length: 0, advance: 1) // a later call
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 2)
        XCTAssertEqual(h.ring.inFlight, 1)
        XCTAssertEqual(h.ring.numFree, 7)
        assertStillWorks(h, [chains[1]], cookies: [8])
    }

    func testCompletionOfUnpublishedChain() throws {
        let h = PackedRingHarness(queueSize: 8)
        let chains = try posted(h, count: 1, firstCookie: 1)
        XCTAssertEqual(h.add(count: 1, firstCookie: 2), 1) // added, not published
        // The device guesses the id of the unpublished buffer.
        let guessed = h.descriptor(1).id
        h.device.writeUsed(id: guessed, length: 0, advance: 1)
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 1)
        XCTAssertEqual(h.ring.inFlight, 2)
        h.ring.publish()
        let second = try h.popAll()
        XCTAssertEqual(second.map(\.head), [guessed])
        assertStillWorks(h, chains + second, cookies: [1, 2])
    }

    func testOverlongLengthIsReportedAsZero() throws {
        let h = PackedRingHarness(queueSize: 8)
        let rx = try posted(h, count: 2, writable: true, length: 100, firstCookie: 1)
        h.device.pushUsed(id: rx[0].head, length: 101)
        h.device.pushUsed(id: rx[1].head, length: 100)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 1, length: 0), Completion(cookie: 2, length: 100)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
        // A device-readable (TX) buffer has no writable room: any length is reported as 0,
        // uncounted, like the split ring.
        let tx = try posted(h, count: 1, writable: false, length: 100, firstCookie: 3)
        h.device.pushUsed(id: tx[0].head, length: 60)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 3, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
    }

    func testChainWritableLengthBoundsTheUsedLength() throws {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(3, length: 50, writable: 2), cookie: 9))
        h.ring.publish()
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 101)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 9, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
    }

    func testFlagPatternsThatAreNotUsedAreIgnored() throws {
        let h = PackedRingHarness(queueSize: 8)
        let chains = try posted(h, count: 2)
        let id = chains[0].head
        // With used wrap counter 1, "used" is AVAIL=1 USED=1. Everything else is not.
        for flags: UInt16 in [0, PackedRingFlags.descAvail, PackedRingFlags.descUsed,
                              PackedRingFlags.descUsed | PackedRingFlags.descWrite] {
            h.device.writeDescriptor(at: 0, id: id, length: 0, flags: flags)
            XCTAssertEqual(h.dequeue(), [], "flags \(flags)")
            XCTAssertEqual(h.ring.pendingUsed(), 0)
        }
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8000)
        XCTAssertEqual(h.ring.inFlight, 2)
        assertStillWorks(h, chains, cookies: [0, 1])
    }

    func testUsedPatternOfTheWrongLapIsIgnored() throws {
        let h = PackedRingHarness(queueSize: 4)
        let chains = try posted(h, count: 4)
        for c in chains { h.device.pushUsed(id: c.head, length: 0) }
        XCTAssertEqual(h.dequeue().count, 4)
        XCTAssertEqual(h.ring.lastUsedIndex, 0, "lap 2: used wrap counter 0")
        let again = try posted(h, count: 1, firstCookie: 10)
        // Lap-1 "used" bits (AVAIL=USED=1) no longer mean used.
        h.device.writeDescriptor(at: 0, id: again[0].head, length: 0, flags: PackedRingFlags.descAvailUsed)
        XCTAssertEqual(h.dequeue(), [])
        h.device.writeDescriptor(at: 0, id: again[0].head, length: 0, flags: 0)
        XCTAssertEqual(h.dequeue().map(\.cookie), [10])
    }

    func testARingFullOfGarbageIsReadBoundedly() throws {
        let h = PackedRingHarness(queueSize: 16)
        _ = try posted(h, count: 3)
        // Every slot claims to be used, with ids that are never valid.
        for p in 0..<UInt16(16) {
            h.device.writeDescriptor(at: p, id: 0xBEEF, length: 0xFFFF_FFFF, flags: PackedRingFlags.descAvailUsed)
        }
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 3, "at most one descriptor per published chain in flight per call")
        XCTAssertEqual(h.dequeue(), [])
        XCTAssertEqual(h.ring.invalidUsedIds, 6)
        XCTAssertEqual(h.ring.pendingUsed(), 0, "no valid id waits")
        XCTAssertEqual(h.ring.inFlight, 3)
    }

    func testUnpublishedChainsAreNotCountedInTheBudget() throws {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertEqual(h.add(count: 4, firstCookie: 0), 4) // nothing published
        for p in 0..<UInt16(4) {
            h.device.writeDescriptor(at: p, id: h.descriptor(Int(p)).id, length: 0, flags: PackedRingFlags.descAvailUsed)
        }
        XCTAssertEqual(h.dequeue(), [], "the device cannot have seen any of them")
        XCTAssertEqual(h.ring.invalidUsedIds, 0, "nothing is even read")
        XCTAssertEqual(h.ring.pendingUsed(), 0)
    }

    func testHostileKickEventIsHarmless() throws {
        let h = PackedRingHarness(queueSize: 255, eventIdx: true)
        // off_wrap with an offset beyond the ring: the test is arithmetic, nothing is indexed.
        h.device.setKickEvent(position: 0x7FFF, wrap: false)
        h.add(count: 3, firstCookie: 0)
        h.ring.publish()
        _ = h.ring.kickNeeded()
        h.device.setDeviceEventFlags(0xFFFF)
        h.add(count: 1, firstCookie: 3)
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded(), "reserved flag value 3: kick, the safe reading")
    }

    func testLongerChainThanPostedMovesOnlyByTheRecordedLength() throws {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertTrue(h.addChain(PackedRingHarness.segments(2), cookie: 1))
        h.add(count: 1, firstCookie: 2)
        h.ring.publish()
        let c = try h.popAll()
        // The device claims the first buffer spanned 5 slots.
        h.device.writeUsed(id: c[0].head, length: 0, advance: 5)
        XCTAssertEqual(h.dequeue().map(\.cookie), [1])
        XCTAssertEqual(h.ring.lastUsedIndex, 0x8002, "the driver's record, not the device's, moves it")
    }
}
