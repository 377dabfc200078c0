import FerryTestSupport
import Virtio
import XCTest

/// Heap memory for a ring's INDIRECT_DESC tables (the harnesses translate addresses as
/// identity, so heap memory stands in for shared memory), freed on deinit.
final class IndirectTables {
    let base: UnsafeMutableRawPointer
    let bytes: Int
    let maxSegments: Int

    init(bytes: Int, maxSegments: Int) {
        self.bytes = bytes
        self.maxSegments = maxSegments
        base = .allocate(byteCount: bytes, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    }

    deinit { base.deallocate() }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// Whether `[address, address + length)` lies inside the tables.
    func contains(_ address: UInt64, length: Int) -> Bool {
        address >= self.address && address + UInt64(length) <= self.address + UInt64(bytes)
    }

    /// The raw descriptor `entry` of the table at `tableAddress`: (addr, len, the 16-bit word at
    /// offset 12, the 16-bit word at offset 14). Split: (flags, next); packed: (id, flags).
    func entry(tableAddress: UInt64, _ entry: Int) -> (address: UInt64, length: UInt32, word12: UInt16, word14: UInt16) {
        let d = UnsafeRawPointer(bitPattern: UInt(tableAddress))! + entry * 16
        return (d.load(as: UInt64.self), d.load(fromByteOffset: 8, as: UInt32.self),
                d.load(fromByteOffset: 12, as: UInt16.self), d.load(fromByteOffset: 14, as: UInt16.self))
    }
}

/// What a device segment must be for a posted segment (identity translation).
func assertSegments(_ got: [DeviceSegment], _ posted: [RingSegment], _ message: String = "",
                    file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, posted.count, "segment count \(message)", file: file, line: line)
    for (g, p) in zip(got, posted) {
        XCTAssertEqual(UInt64(UInt(bitPattern: g.pointer)), p.address, "address \(message)", file: file, line: line)
        XCTAssertEqual(g.length, Int(p.length), "length \(message)", file: file, line: line)
        XCTAssertEqual(g.deviceWritable, p.deviceWritable, "WRITE \(message)", file: file, line: line)
    }
}

/// A chain of `count` segments tagged by `tag` (distinct addresses and lengths per tag), the
/// last `writable` of them device-writable.
func taggedSegments(_ count: Int, tag: Int, writable: Int = 0) -> [RingSegment] {
    (0..<count).map { i in
        RingSegment(address: 0x4000_0000 + UInt64(tag) * 0x1_0000 + UInt64(i) * 0x800,
                    length: UInt32(64 + (tag % 97) * 8 + i), deviceWritable: i >= count - writable)
    }
}
