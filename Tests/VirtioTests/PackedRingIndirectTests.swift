import FerryTestSupport
import Virtio
import XCTest

/// VIRTIO_RING_F_INDIRECT_DESC on the packed ring (virtio 1.2 §2.8.7): one ring slot and one
/// buffer id per chain, pointing at a table of packed descriptors.
final class PackedRingIndirectTests: XCTestCase {
    /// Tables outlive every ring of the test (the rings write into them).
    private var keep: [IndirectTables] = []

    override func tearDown() {
        keep = []
        super.tearDown()
    }

    private func harness(queueSize: UInt16, inOrder: Bool = false, maxSegments: Int = 16) -> (PackedRingHarness, IndirectTables) {
        let h = PackedRingHarness(queueSize: queueSize, inOrder: inOrder)
        let tables = IndirectTables(bytes: PackedRing.indirectTableSize(queueSize: Int(queueSize), maxSegments: maxSegments),
                                    maxSegments: maxSegments)
        keep.append(tables)
        h.ring.attachIndirect(tables: tables.base, maxSegments: maxSegments)
        return (h, tables)
    }

    private func addIndirect(_ h: PackedRingHarness, _ segments: [RingSegment], cookie: UInt32) -> Bool {
        segments.withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: cookie) }
    }

    /// The table of buffer `id` (tables are indexed by id).
    private func tableAddress(_ tables: IndirectTables, id: UInt16) -> UInt64 {
        tables.address + UInt64(Int(id) * tables.maxSegments * 16)
    }

    func testTheDeviceSeesExactlyThePostedSegmentsThroughOneSlot() throws {
        let (h, tables) = harness(queueSize: 32)
        XCTAssertEqual(h.ring.indirectCapacity, 16)
        let posted = taggedSegments(6, tag: 3, writable: 3)
        XCTAssertTrue(addIndirect(h, posted, cookie: 77))
        XCTAssertEqual(h.ring.numFree, 31, "one slot for six segments")
        XCTAssertEqual(h.ring.availIndex, PackedRingFlags.encode(position: 1, wrap: true))
        h.ring.publish()

        // The ring descriptor: INDIRECT plus the avail bits, no NEXT, no WRITE; len = 16·count.
        let d = h.descriptor(0)
        XCTAssertEqual(d.flags, PackedRingFlags.descIndirect | PackedRingFlags.availBits(wrap: true))
        XCTAssertEqual(d.length, 6 * 16)
        XCTAssertTrue(tables.contains(d.address, length: 6 * 16))
        XCTAssertEqual(d.address, tableAddress(tables, id: d.id))
        // Table entries: WRITE as posted and nothing else (NEXT and the id are reserved there).
        for i in 0..<6 {
            let e = tables.entry(tableAddress: d.address, i)
            XCTAssertEqual(e.address, posted[i].address)
            XCTAssertEqual(e.length, posted[i].length)
            XCTAssertEqual(e.word14, posted[i].deviceWritable ? PackedRingFlags.descWrite : 0, "entry \(i) flags")
        }

        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 1)
        XCTAssertTrue(chains[0].viaIndirect)
        XCTAssertEqual(chains[0].ringDescriptors, 1)
        XCTAssertEqual(chains[0].head, d.id)
        assertSegments(chains[0].segments, posted)
        XCTAssertEqual(h.device.vringBase, UInt32(PackedRingFlags.encode(position: 1, wrap: true)),
                       "the device moved one slot")

        let writable = posted[3].length + posted[4].length + posted[5].length
        h.device.pushUsed(id: chains[0].head, length: writable)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 77, length: writable)])
        XCTAssertEqual(h.ring.numFree, 32)
        XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex, "the used side moved one slot too")
    }

    func testOneSlotAndOneIdPerChain() throws {
        let (h, _) = harness(queueSize: 5)
        for k in 0..<5 { XCTAssertTrue(addIndirect(h, taggedSegments(5, tag: k), cookie: UInt32(k))) }
        XCTAssertEqual(h.ring.numFree, 0)
        XCTAssertFalse(addIndirect(h, taggedSegments(1, tag: 9), cookie: 9), "no slot left")
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 5)
        XCTAssertEqual(Set(chains.map(\.head)).count, 5, "five distinct ids")
        for (k, c) in chains.enumerated() {
            XCTAssertEqual(c.ringDescriptors, 1)
            assertSegments(c.segments, taggedSegments(5, tag: k), "chain \(k)")
        }
    }

    func testRefusalsPostNothing() throws {
        let (h, _) = harness(queueSize: 32)
        let empty: [RingSegment] = []
        XCTAssertFalse(addIndirect(h, empty, cookie: 1), "an indirect table must not be empty")
        XCTAssertFalse(addIndirect(h, taggedSegments(17, tag: 1), cookie: 2), "more than a table holds")
        var backwards = taggedSegments(2, tag: 2, writable: 1)
        backwards.append(RingSegment(address: 0x9000, length: 10, deviceWritable: false))
        XCTAssertFalse(addIndirect(h, backwards, cookie: 3), "readable after writable")
        XCTAssertEqual(h.ring.numFree, 32)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.availIndex, PackedRingFlags.encode(position: 0, wrap: true))
        h.ring.publish()
        XCTAssertFalse(h.device.hasAvailable)
        XCTAssertTrue(addIndirect(h, taggedSegments(16, tag: 3), cookie: 4), "exactly a table's worth")
    }

    func testWithoutTablesAddIndirectRefuses() {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertEqual(h.ring.indirectCapacity, 0)
        XCTAssertFalse(taggedSegments(2, tag: 0).withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: 0) })
        XCTAssertEqual(h.ring.numFree, 8)
    }

    func testTableCapacityIsClampedToTheQueueSize() {
        let (h, _) = harness(queueSize: 3)
        XCTAssertEqual(h.ring.indirectCapacity, 3)
        XCTAssertFalse(addIndirect(h, taggedSegments(4, tag: 0), cookie: 0))
        XCTAssertTrue(addIndirect(h, taggedSegments(3, tag: 0), cookie: 0))
    }

    func testUsedLengthAboveTheWritableTotalIsInvalid() throws {
        let (h, _) = harness(queueSize: 8)
        let posted = taggedSegments(3, tag: 4, writable: 2)
        let writable = posted[1].length + posted[2].length
        XCTAssertTrue(addIndirect(h, posted, cookie: 1))
        XCTAssertTrue(addIndirect(h, posted, cookie: 2))
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[1].head, length: writable)
        h.device.pushUsed(id: chains[0].head, length: writable + 1)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 2, length: writable), Completion(cookie: 1, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
        XCTAssertEqual(h.ring.numFree, 8)
    }

    /// Every slot holds an indirect chain; the device completes a random half out of order
    /// (no IN_ORDER) and the driver reposts while the rest are in flight: the tables of chains
    /// in flight (indexed by id) must stay exactly as posted.
    func testTablesAreNotReusedWhileTheirChainIsInFlight() throws {
        let size: UInt16 = 16
        let (h, tables) = harness(queueSize: size)
        var expected: [UInt16: (cookie: UInt32, segments: [RingSegment])] = [:]
        var tag = 0
        func post(_ count: Int) throws {
            var posted: [(UInt32, [RingSegment])] = []
            for _ in 0..<count {
                let segs = taggedSegments(1 + tag % 16, tag: tag, writable: tag % 3)
                XCTAssertTrue(addIndirect(h, segs, cookie: UInt32(1000 + tag)))
                posted.append((UInt32(1000 + tag), segs))
                tag += 1
            }
            h.ring.publish()
            let chains = try h.popAll()
            XCTAssertEqual(chains.count, count)
            for (c, p) in zip(chains, posted) {
                XCTAssertNil(expected[c.head], "id \(c.head) handed out while in flight")
                expected[c.head] = (p.0, p.1)
                assertSegments(c.segments, p.1, "fresh chain \(p.0)")
            }
        }
        func checkInFlightTables() {
            for (id, e) in expected {
                let table = tableAddress(tables, id: id)
                for (i, s) in e.segments.enumerated() {
                    let entry = tables.entry(tableAddress: table, i)
                    XCTAssertEqual(entry.address, s.address, "id \(id) entry \(i)")
                    XCTAssertEqual(entry.length, s.length, "id \(id) entry \(i)")
                }
            }
        }
        var rng = SplitMix(seed: 11)
        try post(Int(size))
        XCTAssertEqual(h.ring.numFree, 0)
        for _ in 0..<8 {
            var ids = Array(expected.keys)
            rng.shuffle(&ids)
            let done = Array(ids.prefix(ids.count / 2))
            for id in done { h.device.pushUsed(id: id, length: 0) }
            XCTAssertEqual(h.dequeue().map(\.cookie), done.map { expected[$0]!.cookie })
            for id in done { expected[id] = nil }
            try post(done.count)
            XCTAssertEqual(h.ring.numFree, 0)
            checkInFlightTables()
        }
        for id in expected.keys { h.device.pushUsed(id: id, length: 0) }
        XCTAssertEqual(Set(h.dequeue().map(\.cookie)), Set(expected.values.map(\.cookie)))
        XCTAssertEqual(h.ring.numFree, Int(size))
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    /// IN_ORDER (§2.8.8): indirect chains (one slot, id = head slot) mixed with direct chains;
    /// one used descriptor completes the batch and the used position lands after it.
    func testIndirectWithInOrder() throws {
        let (h, _) = harness(queueSize: 7, inOrder: true)
        for lap in 0..<6 {
            let base = UInt32(lap * 10)
            XCTAssertTrue(addIndirect(h, taggedSegments(5, tag: lap, writable: 2), cookie: base))
            XCTAssertTrue(h.addChain(taggedSegments(3, tag: lap + 100), cookie: base + 1))
            XCTAssertTrue(addIndirect(h, taggedSegments(2, tag: lap + 200, writable: 1), cookie: base + 2))
            XCTAssertEqual(h.ring.numFree, 7 - 5)
            h.ring.publish()
            let chains = try h.popAll()
            XCTAssertEqual(chains.map(\.ringDescriptors), [1, 3, 1])
            XCTAssertEqual(chains.map(\.viaIndirect), [true, false, true])
            assertSegments(chains[0].segments, taggedSegments(5, tag: lap, writable: 2))
            assertSegments(chains[2].segments, taggedSegments(2, tag: lap + 200, writable: 1))
            XCTAssertEqual(h.device.pushUsedBatch(lastID: chains[2].head, length: 9), 3)
            // The chains before the batch's last were used completely: their posted writable length.
            let first = taggedSegments(5, tag: lap, writable: 2).filter(\.deviceWritable).reduce(0) { $0 + $1.length }
            XCTAssertEqual(h.dequeue(), [Completion(cookie: base, length: first), Completion(cookie: base + 1, length: 0),
                                         Completion(cookie: base + 2, length: 9)])
            XCTAssertEqual(h.ring.numFree, 7)
            XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex)
            XCTAssertEqual(h.ring.invalidUsedIds, 0)
        }
    }

    func testManyLapsAtSize255() throws {
        try runLaps(queueSize: 255, inOrder: false)
        try runLaps(queueSize: 255, inOrder: true)
    }

    func testManyLapsAtSize1025() throws {
        try runLaps(queueSize: 1025, inOrder: false)
        try runLaps(queueSize: 1025, inOrder: true)
    }

    /// Several laps of indirect chains mixed with direct chains and single buffers, so the
    /// wrap counters flip under one-slot indirect chains at every position. The device sees
    /// every chain's exact segments; completions are shuffled (or batched with IN_ORDER).
    private func runLaps(queueSize: UInt16, inOrder: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let (h, _) = harness(queueSize: queueSize, inOrder: inOrder)
        var rng = SplitMix(seed: UInt64(queueSize) &+ (inOrder ? 100 : 0))
        var tag = 0
        var slots = 0
        var availFlips = 0
        var lastWrap = h.ring.availIndex >> 15
        var completed = 0
        while slots < 5 * Int(queueSize) {
            var posted: [(cookie: UInt32, segments: [RingSegment], indirect: Bool)] = []
            var burst = Int(rng.next() % 64) + 1
            while burst > 0 {
                let kind = rng.next() % 4
                let count = kind == 0 ? 1 : Int(rng.next() % 16) + 1
                let segs = taggedSegments(count, tag: tag, writable: Int(rng.next() % 2))
                let cookie = UInt32(tag)
                let indirect = kind >= 2
                let needed = indirect ? 1 : count
                guard h.ring.numFree >= needed else { break }
                let ok = indirect ? addIndirect(h, segs, cookie: cookie) : h.addChain(segs, cookie: cookie)
                XCTAssertTrue(ok, file: file, line: line)
                posted.append((cookie, segs, indirect))
                tag += 1
                slots += needed
                burst -= 1
                let wrap = h.ring.availIndex >> 15
                if wrap != lastWrap { availFlips += 1; lastWrap = wrap }
            }
            h.ring.publish()
            var chains = try h.popAll()
            XCTAssertEqual(chains.count, posted.count, file: file, line: line)
            for (c, p) in zip(chains, posted) {
                assertSegments(c.segments, p.segments, "cookie \(p.cookie)", file: file, line: line)
                XCTAssertEqual(c.ringDescriptors, p.indirect ? 1 : p.segments.count, file: file, line: line)
            }
            if inOrder {
                XCTAssertEqual(h.device.pushUsedBatch(lastID: chains.last!.head, length: 0), chains.count,
                               file: file, line: line)
            } else {
                rng.shuffle(&chains)
                for c in chains { h.device.pushUsed(id: c.head, length: 0) }
            }
            let got = h.dequeue()
            XCTAssertEqual(Set(got.map(\.cookie)), Set(posted.map(\.cookie)), file: file, line: line)
            completed += got.count
            XCTAssertEqual(h.ring.numFree, Int(queueSize), file: file, line: line)
            XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex, "both sides meet", file: file, line: line)
        }
        XCTAssertEqual(completed, tag, file: file, line: line)
        XCTAssertGreaterThanOrEqual(availFlips, 4, file: file, line: line)
        XCTAssertEqual(h.ring.invalidUsedIds, 0, file: file, line: line)
    }
}
