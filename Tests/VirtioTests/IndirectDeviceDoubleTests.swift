import FerryTestSupport
import Virtio
import XCTest

/// The device doubles follow INDIRECT descriptors with a backend's bounds checks, so a driver
/// bug shows as a refused chain rather than as a double reading out of bounds.
final class IndirectDeviceDoubleTests: XCTestCase {
    /// Tables stay alive for the whole test, whatever the test keeps of them.
    private var keep: [IndirectTables] = []

    override func tearDown() {
        keep = []
        super.tearDown()
    }

    // MARK: Split

    /// A split harness with one published indirect chain of `count` readable segments; returns
    /// the harness, its tables and the head descriptor's address.
    private func splitWithOneChain(count: Int = 3) -> (RingHarness, IndirectTables, UnsafeMutableRawPointer) {
        let h = RingHarness(queueSize: 8)
        let tables = IndirectTables(bytes: SplitRing.indirectTableSize(queueSize: 8, maxSegments: 8), maxSegments: 8)
        keep.append(tables)
        h.ring.attachIndirect(tables: tables.base, maxSegments: 8)
        XCTAssertTrue(taggedSegments(count, tag: 1).withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: 1) })
        h.ring.publish()
        return (h, tables, h.memory)  // the first head is descriptor 0
    }

    private func assertSplitRefuses(_ h: RingHarness, _ expected: DeviceRingError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try h.device.popAvail(), file: file, line: line) { error in
            XCTAssertEqual(error as? DeviceRingError, expected, file: file, line: line)
        }
        XCTAssertEqual(h.device.lastAvailIndex, 0, "a refused chain is not consumed", file: file, line: line)
    }

    func testSplitIndirectWithNextIsRefused() {
        let (h, _, d) = splitWithOneChain()
        d.storeBytes(of: VringFlags.descIndirect | VringFlags.descNext, toByteOffset: 12, as: UInt16.self)
        assertSplitRefuses(h, .indirectWithNext(head: 0))
    }

    func testSplitIndirectTableOfBadLengthIsRefused() {
        for length: UInt32 in [0, 20, 16 * 9] {
            let (h, _, d) = splitWithOneChain()
            d.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
            assertSplitRefuses(h, .badIndirectLength(head: 0, length: Int(length)))
        }
    }

    func testSplitNestedIndirectIsRefused() {
        let (h, tables, d) = splitWithOneChain()
        let table = UnsafeMutableRawPointer(bitPattern: UInt(d.load(as: UInt64.self)))!
        XCTAssertTrue(tables.contains(UInt64(UInt(bitPattern: table)), length: 48))
        (table + 16).storeBytes(of: VringFlags.descIndirect | VringFlags.descNext, toByteOffset: 12, as: UInt16.self)
        assertSplitRefuses(h, .nestedIndirect(head: 0))
    }

    func testSplitTableNextOutsideTheTableOrLoopingIsRefused() {
        let (h, _, d) = splitWithOneChain()
        let table = UnsafeMutableRawPointer(bitPattern: UInt(d.load(as: UInt64.self)))!
        (table + 16).storeBytes(of: 3, toByteOffset: 14, as: UInt16.self)  // 3 entries: 0...2
        assertSplitRefuses(h, .badIndex(3))
        (table + 16).storeBytes(of: 0, toByteOffset: 14, as: UInt16.self)  // 1 -> 0 -> 1 ...
        assertSplitRefuses(h, .loop(head: 0))
    }

    /// §2.7.5.3.2: zero or more direct descriptors, then one indirect, is a valid chain.
    func testSplitDirectDescriptorsFollowedByAnIndirectOne() throws {
        let h = RingHarness(queueSize: 8)
        let tables = IndirectTables(bytes: 64, maxSegments: 4)
        keep.append(tables)
        let direct = taggedSegments(2, tag: 5)
        XCTAssertTrue(h.addChain(direct, cookie: 1))
        h.ring.publish()
        // Turn the chain's second descriptor (1) into an indirect one over a 2-entry table.
        let inTable = taggedSegments(2, tag: 6, writable: 1)
        for (i, s) in inTable.enumerated() {
            let e = tables.base + 16 * i
            e.storeBytes(of: s.address, as: UInt64.self)
            e.storeBytes(of: s.length, toByteOffset: 8, as: UInt32.self)
            let flags = (s.deviceWritable ? VringFlags.descWrite : 0) | (i == 0 ? VringFlags.descNext : 0)
            e.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
            e.storeBytes(of: UInt16(i == 0 ? 1 : 0), toByteOffset: 14, as: UInt16.self)
        }
        let d1 = h.memory + 16
        d1.storeBytes(of: tables.address, as: UInt64.self)
        d1.storeBytes(of: 32, toByteOffset: 8, as: UInt32.self)
        d1.storeBytes(of: VringFlags.descIndirect, toByteOffset: 12, as: UInt16.self)
        let chain = try XCTUnwrap(try h.device.popAvail())
        XCTAssertTrue(chain.viaIndirect)
        XCTAssertEqual(chain.ringDescriptors, 2)
        assertSegments(chain.segments, [direct[0]] + inTable)
    }

    // MARK: Packed

    private func packedWithOneChain() -> (PackedRingHarness, IndirectTables) {
        let h = PackedRingHarness(queueSize: 8)
        let tables = IndirectTables(bytes: PackedRing.indirectTableSize(queueSize: 8, maxSegments: 8), maxSegments: 8)
        keep.append(tables)
        h.ring.attachIndirect(tables: tables.base, maxSegments: 8)
        XCTAssertTrue(taggedSegments(3, tag: 2).withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: 1) })
        h.ring.publish()
        return (h, tables)
    }

    private func assertPackedRefuses(_ h: PackedRingHarness, _ expected: DevicePackedRingError,
                                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try h.device.popAvail(), file: file, line: line) { error in
            XCTAssertEqual(error as? DevicePackedRingError, expected, file: file, line: line)
        }
        XCTAssertEqual(h.device.lastAvailIndex, 0, "a refused chain is not consumed", file: file, line: line)
        XCTAssertTrue(h.device.outstanding.isEmpty, file: file, line: line)
    }

    func testPackedIndirectWithNextIsRefused() {
        let (h, _) = packedWithOneChain()
        let flags = h.descriptor(0).flags | PackedRingFlags.descNext
        h.memory.storeBytes(of: flags, toByteOffset: 14, as: UInt16.self)
        assertPackedRefuses(h, .indirectWithNext(position: 0))
    }

    func testPackedEmptyOrMisSizedTableIsRefused() {
        for length: UInt32 in [0, 24, 16 * 9] {
            let (h, _) = packedWithOneChain()
            h.memory.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
            assertPackedRefuses(h, .badIndirectLength(position: 0, length: Int(length)))
        }
    }

    func testPackedNestedIndirectIsRefused() {
        let (h, tables) = packedWithOneChain()
        let table = UnsafeMutableRawPointer(bitPattern: UInt(h.descriptor(0).address))!
        XCTAssertTrue(tables.contains(h.descriptor(0).address, length: 48))
        (table + 32).storeBytes(of: PackedRingFlags.descIndirect, toByteOffset: 14, as: UInt16.self)
        assertPackedRefuses(h, .nestedIndirect(position: 0))
    }

    func testPackedTableAddressTheDeviceCannotTranslateIsRefused() throws {
        let h = PackedRingHarness(queueSize: 4)
        // A device whose memory is only the ring: the table lies outside it.
        let ringStart = UInt64(UInt(bitPattern: h.memory))
        let ringEnd = ringStart + UInt64(PackedRingLayout.totalSize(queueSize: 4))
        var device = DevicePackedRing(queueSize: 4, desc: h.ring.descTable, driverEvent: h.ring.availRing,
                                      deviceEvent: h.ring.usedRing) { address, length in
            address >= ringStart && address + UInt64(length) <= ringEnd ? UnsafeMutableRawPointer(bitPattern: UInt(address)) : nil
        }
        let tables = IndirectTables(bytes: PackedRing.indirectTableSize(queueSize: 4, maxSegments: 4), maxSegments: 4)
        keep.append(tables)
        h.ring.attachIndirect(tables: tables.base, maxSegments: 4)
        XCTAssertTrue(taggedSegments(2, tag: 3).withUnsafeBufferPointer { h.ring.addIndirect($0, cookie: 1) })
        h.ring.publish()
        XCTAssertThrowsError(try device.popAvail()) { error in
            XCTAssertEqual(error as? DevicePackedRingError, .badAddress(h.descriptor(0).address, length: 32))
        }
    }
}
