import FerryTestSupport
import Virtio
import XCTest

/// VIRTIO_RING_F_INDIRECT_DESC on the split ring (virtio 1.2 §2.7.5.3): one ring descriptor
/// per chain, pointing at a table the device walks.
final class SplitRingIndirectTests: XCTestCase {
    /// Tables outlive every ring of the test (the rings write into them).
    private var keep: [IndirectTables] = []

    override func tearDown() {
        keep = []
        super.tearDown()
    }

    private func harness(queueSize: UInt16, inOrder: Bool = false, maxSegments: Int = 16) -> (RingHarness, IndirectTables) {
        let h = RingHarness(queueSize: queueSize, inOrder: inOrder)
        let tables = IndirectTables(bytes: SplitRing.indirectTableSize(queueSize: Int(queueSize), maxSegments: maxSegments),
                                    maxSegments: maxSegments)
        keep.append(tables)
        h.ring.attachIndirect(tables: tables.base, maxSegments: maxSegments)
        return (h, tables)
    }

    private func addIndirect(_ h: RingHarness, _ segments: [RingSegment], cookie: UInt32) -> Bool {
        segments.withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: cookie) }
    }

    /// The raw ring descriptor at `index`: (addr, len, flags, next).
    private func ringDescriptor(_ h: RingHarness, _ index: Int) -> (address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let d = h.memory + index * SplitRingLayout.descriptorSize
        return (d.load(as: UInt64.self), d.load(fromByteOffset: 8, as: UInt32.self),
                d.load(fromByteOffset: 12, as: UInt16.self), d.load(fromByteOffset: 14, as: UInt16.self))
    }

    func testTheDeviceSeesExactlyThePostedSegmentsThroughOneDescriptor() throws {
        let (h, tables) = harness(queueSize: 32)
        XCTAssertEqual(h.ring.indirectCapacity, 16)
        let posted = taggedSegments(5, tag: 7, writable: 2)
        XCTAssertTrue(addIndirect(h, posted, cookie: 42))
        XCTAssertEqual(h.ring.numFree, 31, "one ring descriptor for five segments")
        XCTAssertEqual(h.ring.inFlight, 1)
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 1)
        let chain = chains[0]
        XCTAssertTrue(chain.viaIndirect)
        XCTAssertEqual(chain.ringDescriptors, 1)
        assertSegments(chain.segments, posted)

        // The ring descriptor: INDIRECT only (no NEXT, no WRITE), len = 16·count, into the tables.
        let d = ringDescriptor(h, Int(chain.head))
        XCTAssertEqual(d.flags, VringFlags.descIndirect)
        XCTAssertEqual(d.length, 5 * 16)
        XCTAssertTrue(tables.contains(d.address, length: 5 * 16))
        XCTAssertEqual(d.address % 16, 0)
        // Table entries: NEXT with next = i+1 except the last; WRITE as posted; never INDIRECT.
        for i in 0..<5 {
            let e = tables.entry(tableAddress: d.address, i)
            XCTAssertEqual(e.address, posted[i].address)
            XCTAssertEqual(e.length, posted[i].length)
            let expectedFlags = (posted[i].deviceWritable ? VringFlags.descWrite : 0) | (i < 4 ? VringFlags.descNext : 0)
            XCTAssertEqual(e.word12, expectedFlags, "entry \(i) flags")
            XCTAssertEqual(e.word14, i < 4 ? UInt16(i + 1) : 0, "entry \(i) next")
        }

        h.device.pushUsed(id: chain.head, length: UInt32(posted[3].length + posted[4].length))
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 42, length: posted[3].length + posted[4].length)])
        XCTAssertEqual(h.ring.numFree, 32, "the one descriptor comes back")
        XCTAssertEqual(h.ring.inFlight, 0)
    }

    func testOneRingDescriptorPerChainFillsTheRingWithChains() throws {
        let (h, _) = harness(queueSize: 8)
        for k in 0..<8 { XCTAssertTrue(addIndirect(h, taggedSegments(6, tag: k), cookie: UInt32(k))) }
        XCTAssertEqual(h.ring.numFree, 0, "eight chains of six segments in a ring of eight")
        XCTAssertFalse(addIndirect(h, taggedSegments(2, tag: 9), cookie: 9), "no descriptor left")
        h.ring.publish()
        let chains = try h.popAll()
        XCTAssertEqual(chains.count, 8)
        for (k, c) in chains.enumerated() {
            XCTAssertEqual(c.ringDescriptors, 1)
            assertSegments(c.segments, taggedSegments(6, tag: k), "chain \(k)")
        }
    }

    func testRefusalsPostNothing() throws {
        let (h, _) = harness(queueSize: 32)
        let empty: [RingSegment] = []
        XCTAssertFalse(addIndirect(h, empty, cookie: 1), "empty list")
        XCTAssertFalse(addIndirect(h, taggedSegments(17, tag: 1), cookie: 2), "more than a table holds")
        var backwards = taggedSegments(3, tag: 2, writable: 1)
        backwards.append(RingSegment(address: 0x9000, length: 10, deviceWritable: false))
        XCTAssertFalse(addIndirect(h, backwards, cookie: 3), "readable after writable")
        XCTAssertEqual(h.ring.numFree, 32)
        XCTAssertEqual(h.ring.inFlight, 0)
        XCTAssertEqual(h.ring.availIndex, 0)
        h.ring.publish()
        XCTAssertEqual(try h.popAll().count, 0)
        // Exactly a table's worth is fine.
        XCTAssertTrue(addIndirect(h, taggedSegments(16, tag: 3), cookie: 4))
    }

    func testWithoutTablesAddIndirectRefuses() {
        let h = RingHarness(queueSize: 8)
        XCTAssertEqual(h.ring.indirectCapacity, 0)
        XCTAssertFalse(taggedSegments(2, tag: 0).withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: 0) })
        XCTAssertEqual(h.ring.numFree, 8)
        XCTAssertEqual(h.ring.availIndex, 0)
    }

    /// §2.7.5.3.1: a chain, table entries included, must not be longer than the queue.
    func testTableCapacityIsClampedToTheQueueSize() {
        let (h, _) = harness(queueSize: 4, maxSegments: 16)
        XCTAssertEqual(h.ring.indirectCapacity, 4)
        XCTAssertFalse(addIndirect(h, taggedSegments(5, tag: 0), cookie: 0))
        XCTAssertTrue(addIndirect(h, taggedSegments(4, tag: 0), cookie: 0))
    }

    func testUsedLengthAboveTheWritableTotalIsInvalid() throws {
        let (h, _) = harness(queueSize: 8)
        let posted = taggedSegments(4, tag: 5, writable: 2)
        let writable = posted[2].length + posted[3].length
        XCTAssertTrue(addIndirect(h, posted, cookie: 1))
        XCTAssertTrue(addIndirect(h, posted, cookie: 2))
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[0].head, length: writable + 1)
        h.device.pushUsed(id: chains[1].head, length: writable)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 1, length: 0), Completion(cookie: 2, length: writable)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
        // A readable-only chain always reports 0, uncounted.
        XCTAssertTrue(addIndirect(h, taggedSegments(3, tag: 6), cookie: 3))
        h.ring.publish()
        let tx = try h.popAll()
        h.device.pushUsed(id: tx[0].head, length: 500)
        XCTAssertEqual(h.dequeue(), [Completion(cookie: 3, length: 0)])
        XCTAssertEqual(h.ring.invalidUsedLengths, 1)
    }

    /// Every descriptor holds an indirect chain; the device completes them out of order and the
    /// driver reposts into the freed descriptors while the rest are still in flight: the tables
    /// of chains in flight must stay exactly as posted.
    func testTablesAreNotReusedWhileTheirChainIsInFlight() throws {
        let size: UInt16 = 16
        let (h, tables) = harness(queueSize: size)
        var expected: [UInt16: (cookie: UInt32, segments: [RingSegment])] = [:]
        var tag = 0
        func post(_ count: Int) throws -> [DeviceChain] {
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
                XCTAssertNil(expected[c.head], "head \(c.head) handed out while in flight")
                expected[c.head] = (p.0, p.1)
                assertSegments(c.segments, p.1, "fresh chain \(p.0)")
            }
            return chains
        }
        /// Decodes the table behind each in-flight head from raw memory and compares.
        func checkInFlightTables() {
            for (head, e) in expected {
                let d = ringDescriptor(h, Int(head))
                XCTAssertTrue(tables.contains(d.address, length: Int(d.length)))
                XCTAssertEqual(Int(d.length), 16 * e.segments.count)
                for (i, s) in e.segments.enumerated() {
                    let entry = tables.entry(tableAddress: d.address, i)
                    XCTAssertEqual(entry.address, s.address, "head \(head) entry \(i)")
                    XCTAssertEqual(entry.length, s.length, "head \(head) entry \(i)")
                }
            }
        }
        var rng = SplitMix(seed: 7)
        _ = try post(Int(size))
        XCTAssertEqual(h.ring.numFree, 0)
        for _ in 0..<6 {
            // Complete a random half, out of order.
            var heads = Array(expected.keys)
            rng.shuffle(&heads)
            let done = Array(heads.prefix(heads.count / 2))
            for head in done { h.device.pushUsed(id: head, length: 0) }
            let completions = h.dequeue()
            XCTAssertEqual(completions.map(\.cookie), done.map { expected[$0]!.cookie })
            for head in done { expected[head] = nil }
            // Repost into the freed descriptors; the rest must be untouched.
            _ = try post(done.count)
            XCTAssertEqual(h.ring.numFree, 0)
            checkInFlightTables()
        }
        for head in expected.keys { h.device.pushUsed(id: head, length: 0) }
        XCTAssertEqual(Set(h.dequeue().map(\.cookie)), Set(expected.values.map(\.cookie)))
        XCTAssertEqual(h.ring.numFree, Int(size))
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }

    /// IN_ORDER (§2.7.9) with indirect chains mixed with direct ones: a batched used entry
    /// completes them in order, and every chain took its own number of descriptors.
    func testIndirectWithInOrder() throws {
        let (h, _) = harness(queueSize: 8, inOrder: true)
        for lap in 0..<5 {
            let base = UInt32(lap * 10)
            XCTAssertTrue(addIndirect(h, taggedSegments(4, tag: lap, writable: 1), cookie: base))
            XCTAssertTrue(h.addChain(taggedSegments(2, tag: lap + 100), cookie: base + 1))
            XCTAssertEqual(h.add(count: 1, firstCookie: base + 2), 1)
            XCTAssertTrue(addIndirect(h, taggedSegments(3, tag: lap + 200, writable: 2), cookie: base + 3))
            XCTAssertEqual(h.ring.numFree, 8 - 5)
            h.ring.publish()
            let chains = try h.popAll()
            XCTAssertEqual(chains.map(\.ringDescriptors), [1, 2, 1, 1])
            XCTAssertEqual(chains.map(\.viaIndirect), [true, false, false, true])
            assertSegments(chains[0].segments, taggedSegments(4, tag: lap, writable: 1))
            assertSegments(chains[3].segments, taggedSegments(3, tag: lap + 200, writable: 2))
            h.device.pushUsedBatch(lastID: chains[3].head, count: 4, length: 5)
            // The chains before the batch's last were used completely: their posted writable length.
            let first = taggedSegments(4, tag: lap, writable: 1).filter(\.deviceWritable).reduce(0) { $0 + $1.length }
            XCTAssertEqual(h.dequeue(), [Completion(cookie: base, length: first), Completion(cookie: base + 1, length: 0),
                                         Completion(cookie: base + 2, length: 0), Completion(cookie: base + 3, length: 5)])
            XCTAssertEqual(h.ring.numFree, 8)
            XCTAssertEqual(h.ring.invalidUsedIds, 0)
        }
    }

    /// Many laps over a small ring, indirect chains of every length, completed shuffled.
    func testManyLapsWithIndirectChains() throws {
        let (h, _) = harness(queueSize: 8)
        var tag = 0
        var rng = SplitMix(seed: 3)
        for _ in 0..<2000 {
            let burst = Int(rng.next() % 8) + 1
            var posted: [[RingSegment]] = []
            for _ in 0..<burst {
                let segs = taggedSegments(Int(rng.next() % 8) + 1, tag: tag, writable: tag % 2)
                guard addIndirect(h, segs, cookie: UInt32(tag)) else { break }
                posted.append(segs)
                tag += 1
            }
            h.ring.publish()
            var chains = try h.popAll()
            XCTAssertEqual(chains.count, posted.count)
            for (c, p) in zip(chains, posted) { assertSegments(c.segments, p) }
            rng.shuffle(&chains)
            for c in chains { h.device.pushUsed(id: c.head, length: 0) }
            XCTAssertEqual(h.dequeue().count, posted.count)
            XCTAssertEqual(h.ring.numFree, 8)
        }
        XCTAssertGreaterThan(tag, 8 * 500, "hundreds of laps of the ring")
        XCTAssertEqual(h.ring.invalidUsedIds, 0)
    }
}
