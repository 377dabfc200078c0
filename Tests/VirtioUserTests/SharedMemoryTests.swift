import XCTest
import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// SharedMemory: the 2 MiB rounding, the one-region table, the bump allocator and bounds.
final class SharedMemoryTests: XCTestCase {
    private let page = SharedMemory.hugepageSize

    func testSizeIsRoundedUpToWholeHugepages() throws {
        XCTAssertEqual(try SharedMemory(size: 1).size, page)
        XCTAssertEqual(try SharedMemory(size: page).size, page)
        XCTAssertEqual(try SharedMemory(size: page + 1).size, 2 * page)
        XCTAssertEqual(try SharedMemory(size: 0).size, page, "an empty request still maps one page")
    }

    func testRegionsDescribeTheWholeMemfdWithIdentityAddresses() throws {
        let memory = try SharedMemory(size: page)
        XCTAssertGreaterThanOrEqual(memory.fd, 0)
        let base = UInt64(UInt(bitPattern: memory.base))
        XCTAssertEqual(memory.regions.count, 1)
        XCTAssertEqual(memory.regions.first?.guestPhysAddr, base)
        XCTAssertEqual(memory.regions.first?.userAddr, base)
        XCTAssertEqual(memory.regions.first?.memorySize, UInt64(memory.size))
        XCTAssertEqual(memory.regions.first?.mmapOffset, 0)
        XCTAssertEqual(memory.regions.first?.fd, memory.fd)
        XCTAssertEqual(base % UInt64(4096), 0)
    }

    /// What is written through the mapping is in the memfd: another mapping of the same fd
    /// (what a backend makes) sees it.
    func testTheMemfdIsReallyShared() throws {
        let memory = try SharedMemory(size: page)
        let p = try memory.allocate(bytes: 8)
        p.storeBytes(of: 0x0123_4567_89ab_cdef as UInt64, as: UInt64.self)
        guard let other = mmap(nil, memory.size, PROT_READ, MAP_SHARED, memory.fd, 0), other != MAP_FAILED else {
            throw XCTSkip("second mmap failed: errno \(errno)")
        }
        defer { munmap(other, memory.size) }
        XCTAssertEqual(other.load(fromByteOffset: p - memory.base, as: UInt64.self), 0x0123_4567_89ab_cdef)
    }

    func testAllocateHonoursAlignmentAndAdvances() throws {
        let memory = try SharedMemory(size: page)
        let a = try memory.allocate(bytes: 1, alignment: 1)
        XCTAssertEqual(a, memory.base)
        let b = try memory.allocate(bytes: 10, alignment: 64)
        XCTAssertEqual(b - memory.base, 64)
        let c = try memory.allocate(bytes: 3, alignment: 2)
        XCTAssertEqual(c - memory.base, 74)
        let d = try memory.allocate(bytes: 100, alignment: 4096)
        XCTAssertEqual(d - memory.base, 4096)
        XCTAssertEqual(memory.remaining, memory.size - 4196)
        let e = try memory.allocate(bytes: 0, alignment: 64)
        XCTAssertEqual(e - memory.base, 4224, "a zero-byte carve still aligns")
        // Fresh memory is zeroed.
        XCTAssertTrue(UnsafeRawBufferPointer(start: d, count: 100).allSatisfy { $0 == 0 })
    }

    func testAllocateDefaultAlignmentIs64() throws {
        let memory = try SharedMemory(size: page)
        _ = try memory.allocate(bytes: 1)
        let p = try memory.allocate(bytes: 1)
        XCTAssertEqual(UInt(bitPattern: p) % 64, 0)
        XCTAssertEqual(p - memory.base, 64)
    }

    func testExhaustionThrowsAndConsumesNothing() throws {
        let memory = try SharedMemory(size: page)
        _ = try memory.allocate(bytes: 100)
        let left = memory.remaining
        XCTAssertThrowsError(try memory.allocate(bytes: left + 1, alignment: 1)) { error in
            guard case let .exhausted(requested, remaining)? = error as? SharedMemoryError else {
                return XCTFail("expected exhausted, got \(error)")
            }
            XCTAssertEqual(requested, left + 1)
            XCTAssertEqual(remaining, left)
            XCTAssertTrue("\(error)".contains("exhausted"), "\(error)")
        }
        XCTAssertEqual(memory.remaining, left, "a refused carve takes nothing")
        let last = try memory.allocate(bytes: left, alignment: 1)
        XCTAssertEqual(last + left, memory.base + memory.size)
        XCTAssertEqual(memory.remaining, 0)
        XCTAssertThrowsError(try memory.allocate(bytes: 1, alignment: 1))
        XCTAssertNoThrow(try memory.allocate(bytes: 0, alignment: 1), "an empty carve at the very end fits")
    }

    /// Padding counts: a carve that fits unaligned but not after alignment is refused.
    func testAlignmentPaddingCanExhaust() throws {
        let memory = try SharedMemory(size: page)
        _ = try memory.allocate(bytes: memory.size - 8191, alignment: 1)
        XCTAssertEqual(memory.remaining, 8191)
        XCTAssertThrowsError(try memory.allocate(bytes: 8000, alignment: 4096), "aligned start is size - 4096")
        XCTAssertEqual(memory.remaining, 8191)
        XCTAssertNoThrow(try memory.allocate(bytes: 8000, alignment: 1))
    }

    func testNegativeSizeIsRefused() throws {
        let memory = try SharedMemory(size: page)
        XCTAssertThrowsError(try memory.allocate(bytes: -1))
        XCTAssertEqual(memory.remaining, memory.size)
    }

    func testContainsChecksBothEnds() throws {
        let memory = try SharedMemory(size: page)
        let base = UInt64(UInt(bitPattern: memory.base))
        let size = memory.size
        XCTAssertTrue(memory.contains(address: base, length: 0))
        XCTAssertTrue(memory.contains(address: base, length: size))
        XCTAssertTrue(memory.contains(address: base + UInt64(size) - 1, length: 1))
        XCTAssertTrue(memory.contains(address: base + 100, length: size - 100))
        XCTAssertFalse(memory.contains(address: base + 100, length: size - 99))
        XCTAssertFalse(memory.contains(address: base + UInt64(size) - 1, length: 2))
        XCTAssertFalse(memory.contains(address: base + UInt64(size), length: 1))
        XCTAssertFalse(memory.contains(address: base - 1, length: 1))
        XCTAssertFalse(memory.contains(address: 0, length: 1))
        XCTAssertFalse(memory.contains(address: UInt64.max, length: 1))
        XCTAssertFalse(memory.contains(address: base, length: -1))
    }

    /// A length larger than the whole memory must be "not contained", not a trap: callers
    /// pass lengths that come from descriptors and config. (It once trapped converting a
    /// negative `size - length` to UInt64.)
    func testContainsWithALengthLargerThanTheMemoryIsFalse() throws {
        let memory = try SharedMemory(size: page)
        let base = UInt64(UInt(bitPattern: memory.base))
        XCTAssertFalse(memory.contains(address: base, length: memory.size + 1))
        XCTAssertFalse(memory.contains(address: base, length: Int.max))
    }
}
