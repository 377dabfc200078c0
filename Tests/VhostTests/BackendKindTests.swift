import XCTest
import Vhost
#if canImport(Glibc)
import Glibc
#endif

final class BackendKindTests: XCTestCase {
    func testMissingPathIsVhostUser() throws {
        XCTAssertEqual(try VhostBackendKind.detect(path: "/tmp/ferry-vhost-absent-\(getpid()).sock"), .vhostUser)
    }

    func testSocketIsVhostUser() throws {
        let path = temporarySocketPath("kind")
        let listener = try VhostUserListener(path: path)
        defer { listener.close() }
        XCTAssertEqual(try VhostBackendKind.detect(path: path), .vhostUser)
    }

    func testRegularFileIsAnErrorNamingThePath() throws {
        let path = temporarySocketPath("regular")
        let fd = open(path, O_CREAT | O_WRONLY, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        close(fd)
        defer { unlink(path) }
        XCTAssertThrowsError(try VhostBackendKind.detect(path: path)) { error in
            XCTAssertEqual(error as? VhostBackendKindError, .unrecognised(path: path, what: "a regular file"))
            XCTAssertTrue("\(error)".hasPrefix(path), "\(error)")
        }
    }

    func testDirectoryIsAnError() {
        XCTAssertThrowsError(try VhostBackendKind.detect(path: "/tmp")) { error in
            XCTAssertEqual(error as? VhostBackendKindError, .unrecognised(path: "/tmp", what: "a directory"))
        }
    }

    func testDevNullIsACharacterDeviceOfTheWrongMajor() throws {
        var st = stat()
        guard stat("/dev/null", &st) == 0 else { throw XCTSkip("no /dev/null") }
        XCTAssertEqual(VhostBackendKind.deviceMajor(UInt64(st.st_rdev)), 1)
        XCTAssertThrowsError(try VhostBackendKind.detect(path: "/dev/null")) { error in
            guard case let .unrecognised(path, what)? = error as? VhostBackendKindError else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(path, "/dev/null")
            XCTAssertTrue(what.contains("major 1"), what)
            XCTAssertTrue("\(error)".contains("/dev/null"))
        }
    }

    func testVdpaMajorFromProcDevices() throws {
        let text = """
        Character devices:
          1 mem
         10 misc
        236 vhost-vdpa
        237 vduse

        Block devices:
        240 vhost-vdpa
        """
        XCTAssertEqual(VhostBackendKind.vdpaMajor(procDevices: text), 236)
        XCTAssertNil(VhostBackendKind.vdpaMajor(procDevices: "Character devices:\n  1 mem\nBlock devices:\n 7 vhost-vdpa\n"))

        // /dev/null (major 1) becomes vhost-vdpa if /proc/devices says major 1 is vhost-vdpa.
        var st = stat()
        guard stat("/dev/null", &st) == 0 else { throw XCTSkip("no /dev/null") }
        XCTAssertEqual(try VhostBackendKind.detect(path: "/dev/null", procDevices: "Character devices:\n  1 vhost-vdpa\n"),
                       .vhostVdpa)
    }

    func testMiscDeviceIsVhostKernel() throws {
        // /dev/vhost-net when present; otherwise any misc device (major 10) decides the same way.
        for candidate in ["/dev/vhost-net", "/dev/net/tun", "/dev/fuse", "/dev/loop-control"] {
            var st = stat()
            if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFCHR,
               VhostBackendKind.deviceMajor(UInt64(st.st_rdev)) == 10 {
                XCTAssertEqual(try VhostBackendKind.detect(path: candidate), .vhostKernel)
                return
            }
        }
        throw XCTSkip("no misc character device here")
    }

    func testDeviceMajorDecodesLinuxDevT() {
        // makedev(10, 238) and a large major/minor.
        XCTAssertEqual(VhostBackendKind.deviceMajor((10 << 8) | 238), 10)
        // Major 0x1234: the low 12 bits sit at bit 8, the rest from bit 44 (bits 32+ of dev_t).
        XCTAssertEqual(VhostBackendKind.deviceMajor((0x1000 << 32) | (0x234 << 8) | 0xff), 0x1234)
    }
}
