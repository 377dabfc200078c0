import XCTest
import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// EventFD: the kick/call notifier. Non-blocking, close-on-exec, counting.
final class EventFDTests: XCTestCase {
    func testDrainOfAnUnsignalledEventFDIsNilAndDoesNotBlock() throws {
        let e = try EventFD.make()
        defer { e.close() }
        XCTAssertNil(e.drain())
    }

    func testSignalsAccumulateAndDrainClears() throws {
        let e = try EventFD.make()
        defer { e.close() }
        e.signal()
        XCTAssertEqual(e.drain(), 1)
        XCTAssertNil(e.drain(), "drain resets the counter")
        e.signal()
        e.signal()
        e.signal()
        XCTAssertEqual(e.drain(), 3)
        XCTAssertNil(e.drain())
    }

    func testFlagsAreNonBlockingAndCloseOnExec() throws {
        let e = try EventFD.make()
        defer { e.close() }
        XCTAssertGreaterThanOrEqual(e.fd, 0)
        XCTAssertNotEqual(fcntl(e.fd, F_GETFL) & O_NONBLOCK, 0)
        XCTAssertNotEqual(fcntl(e.fd, F_GETFD) & FD_CLOEXEC, 0)
    }

    /// Two notifiers are independent: a kick on one is not seen on the other.
    func testEventFDsAreIndependent() throws {
        let a = try EventFD.make(), b = try EventFD.make()
        defer { a.close(); b.close() }
        XCTAssertNotEqual(a.fd, b.fd)
        a.signal()
        XCTAssertNil(b.drain())
        XCTAssertEqual(a.drain(), 1)
    }

    /// A signal is visible through the same descriptor a backend receives (SCM_RIGHTS
    /// duplicates it): here a dup stands in for the backend's copy.
    func testADuplicatedDescriptorSeesTheSameCounter() throws {
        let e = try EventFD.make()
        defer { e.close() }
        let copy = dup(e.fd)
        XCTAssertGreaterThanOrEqual(copy, 0)
        defer { close(copy) }
        e.signal()
        var value: UInt64 = 0
        XCTAssertEqual(read(copy, &value, 8), 8)
        XCTAssertEqual(value, 1)
        XCTAssertNil(e.drain())
    }
}
