import XCTest
import CFerry
import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// A fresh socket path under /tmp, unique per test process and call, removed by the caller's
/// teardown.
func temporarySocketPath(_ tag: String) -> String {
    temporarySocketCounter += 1
    return "/tmp/ferry-vhost-\(getpid())-\(temporarySocketCounter)-\(tag).sock"
}
nonisolated(unsafe) private var temporarySocketCounter = 0

/// A non-blocking eventfd, or fails the test.
func makeEventFD() throws -> Int32 {
    let fd = ferry_eventfd(0, FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK)
    guard fd >= 0 else { throw XCTSkip("eventfd unavailable: errno \(errno)") }
    return fd
}

/// Reads an eventfd counter (non-blocking): nil when nothing was signalled.
func readEventFD(_ fd: Int32) -> UInt64? {
    var value: UInt64 = 0
    let n = read(fd, &value, 8)
    return n == 8 ? value : nil
}

/// Shared memory for a backend to map: a memfd mapped MAP_SHARED here.
final class SharedTestMemory {
    let fd: Int32
    let base: UnsafeMutableRawPointer
    let size: Int

    init(size: Int) throws {
        fd = ferry_memfd_create("ferry-vhost-test", FERRY_MFD_CLOEXEC)
        guard fd >= 0 else { throw XCTSkip("memfd_create unavailable: errno \(errno)") }
        guard ftruncate(fd, off_t(size)) == 0 else { throw XCTSkip("ftruncate failed: errno \(errno)") }
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw XCTSkip("mmap failed: errno \(errno)")
        }
        base = p
        self.size = size
        memset(base, 0, size)
    }

    deinit {
        munmap(base, size)
        close(fd)
    }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// The region as Ferry describes it: its own virtual addresses, guest-physical = user.
    var region: VhostMemoryRegion {
        VhostMemoryRegion(guestPhysAddr: address, memorySize: UInt64(size), userAddr: address, mmapOffset: 0, fd: fd)
    }
}

/// Asserts that `body` throws exactly `expected`.
func XCTAssertThrowsVhostError<T>(_ expected: VhostError, _ body: @autoclosure () throws -> T,
                                  file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        XCTAssertEqual(error as? VhostError, expected, "got \(error)", file: file, line: line)
    }
}

/// Asserts that `body` throws a protocol violation whose detail contains `text`.
func XCTAssertThrowsViolation<T>(_ text: String, _ body: @autoclosure () throws -> T,
                                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard case let .protocolViolation(_, detail)? = error as? VhostError else {
            return XCTFail("expected a protocol violation, got \(error)", file: file, line: line)
        }
        XCTAssertTrue(detail.contains(text), "\(detail) lacks \(text)", file: file, line: line)
    }
}
