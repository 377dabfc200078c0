import XCTest
@testable import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// With no hugepages of the size asked for, shared memory falls back to 4 KiB pages (the
/// failure shows at mmap, not at memfd_create) and still works.
final class HugepageFallbackTests: XCTestCase {
    /// 1 GiB pages: none are reserved on these machines, so MFD_HUGETLB succeeds and mmap
    /// fails, exactly as 2 MiB pages do on a machine with none reserved.
    static let oneGiBPages = UInt32(30) << 26

    func testNoHugepagesFallsBackToSmallPagesAndStillShares() throws {
        let memory = try SharedMemory(size: 4 << 20, reserve: 8 << 20, maxSegments: 8, name: "fallback-test",
                                      hugepageSizeFlag: Self.oneGiBPages)
        XCTAssertFalse(memory.isHugepageBacked)
        XCTAssertEqual(memory.size, 4 << 20)
        XCTAssertEqual(memory.regions.count, 1)
        let p = try memory.allocate(bytes: 64)
        p.storeBytes(of: 0x5a5a_a5a5, as: UInt32.self)
        var readBack: UInt32 = 0
        XCTAssertEqual(pread(memory.fd, &readBack, 4, p - memory.base), 4, "the memory is the memfd's")
        XCTAssertEqual(readBack, 0x5a5a_a5a5)
        // Growing falls back the same way.
        try memory.grow(bytes: 2 << 20)
        XCTAssertEqual(memory.regions.count, 2)
        XCTAssertFalse(memory.isHugepageBacked)
    }

    func testHugepagesAreUsedWhenReserved() throws {
        let memory = try SharedMemory(size: SharedMemory.hugepageSize)
        try XCTSkipUnless(memory.isHugepageBacked, "no free 2 MiB hugepages on this machine (scripts/test reserves them)")
        XCTAssertEqual(memory.regions.count, 1)
    }
}
