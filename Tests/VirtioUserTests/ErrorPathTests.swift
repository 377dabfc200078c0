import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A backend that is missing, quits mid-session, refuses or lies: every phase throws an error
/// naming the path, and nothing traps or hangs (each wait is bounded by the reply timeout).
final class ErrorPathTests: VirtioUserTestCase {
    enum Phase: String { case initialize, negotiate, start, stop, none }

    /// Runs init → negotiate → start → stop and returns the phase that threw, and the error.
    private func runSession(_ double: VhostUserDeviceDouble,
                            _ configure: (inout VirtioUserOptions) -> Void = { _ in }) -> (Phase, Error?) {
        let device: VirtioUserDevice
        do { device = try openDevice(double, configure) } catch { return (.initialize, error) }
        do { try device.negotiate() } catch { return (.negotiate, error) }
        do { try device.start() } catch { return (.start, error) }
        do { try device.stop() } catch { return (.stop, error) }
        return (.none, nil)
    }

    func testMissingSocketThrowsNamingThePath() throws {
        let path = socketPath("missing")
        XCTAssertThrowsError(try VirtioUserDevice(options: VirtioUserOptions(path: path), memory: makeMemory())) { error in
            guard case let .backendMissing(errorPath, errno)? = error as? VhostError else {
                return XCTFail("expected backendMissing, got \(error)")
            }
            XCTAssertEqual(errorPath, path)
            XCTAssertEqual(errno, ENOENT)
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
    }

    /// A socket file nobody listens on (a crashed backend's leftover): connection refused.
    func testStaleSocketWithNoListenerThrowsNamingThePath() throws {
        let double = try startDouble(tag: "stale")
        let path = double.path
        double.stop()  // closes the listener and removes the file
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            path.utf8CString.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(raw.count))) }
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0, "bind a socket file without listening: errno \(errno)")
        XCTAssertThrowsError(try VirtioUserDevice(options: VirtioUserOptions(path: path), memory: makeMemory())) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
    }

    /// The backend closes after its N-th message, for every N of a whole session: the phase
    /// that sent message N throws (GET_STATUS excepted: its failure is ignored as in the seed's
    /// `virtio_user_dev_update_status`, so the next phase throws instead). Message counts with
    /// REPLY_ACK and STATUS: init 1–4, negotiate 5–9, start 10–22, stop 23–26.
    func testBackendClosingAfterEachMessageMakesTheRightPhaseThrow() throws {
        var expected: [Int: Phase] = [:]
        for n in 1...3 { expected[n] = .initialize }
        // SET_PROTOCOL_FEATURES (4) is the last init message and has no reply: init returns,
        // and negotiate's acked SET_STATUS finds the connection gone.
        for n in 4...8 { expected[n] = .negotiate }
        // 9 is negotiate's GET_STATUS, 22 start's read-back GET_STATUS: both failures ignored.
        for n in 9...21 { expected[n] = .start }
        for n in 22...26 { expected[n] = .stop }
        expected[27] = Phase.none

        for n in 1...27 {
            let double = try startDouble(.init(closeAfterMessages: n), tag: "close\(n)")
            let (phase, error) = runSession(double)
            XCTAssertEqual(phase, expected[n], "closing after message \(n) (\(error.map { "\($0)" } ?? "no error"))")
            if let error {
                XCTAssertTrue("\(error)".contains(double.path), "closing after message \(n): \(error)")
            }
            double.stop()
        }
    }

    func testNackedSetMemTableMakesStartThrowNack() throws {
        let double = try startDouble(.init(nackRequests: [.setMemTable]))
        let device = try openDevice(double)
        try device.negotiate()
        XCTAssertThrowsError(try device.start()) { error in
            XCTAssertEqual(error as? VhostError, .nack(path: double.path, request: "SET_MEM_TABLE", code: 1))
        }
        XCTAssertFalse(device.started)
        XCTAssertFalse(double.receivedRequests.contains(.setVringKick), "no vring may be started after the NACK")
    }

    func testNackedSetStatusMakesNegotiateThrow() throws {
        let double = try startDouble(.init(nackRequests: [.setStatus]))
        let device = try openDevice(double)
        XCTAssertThrowsError(try device.negotiate()) { error in
            XCTAssertEqual(error as? VhostError, .nack(path: double.path, request: "SET_STATUS", code: 1))
        }
    }

    func testGetVringBaseReplyWithTheWrongRequestCodeMakesStopThrow() throws {
        let double = try startDouble(.init(getVringBaseReplyRequest: .getFeatures))
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        XCTAssertThrowsError(try device.stop()) { error in
            guard case let .protocolViolation(path, _)? = error as? VhostError else {
                return XCTFail("expected a protocol violation, got \(error)")
            }
            XCTAssertEqual(path, double.path)
        }
        XCTAssertTrue(device.backend.isPeerClosed(), "a wrong reply drops the connection")
    }

    func testGetVringBaseReplyForAnotherRingMakesStopThrow() throws {
        let double = try startDouble(.init(getVringBaseReplyIndex: 7))
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        XCTAssertThrowsError(try device.stop()) { error in
            guard case let .protocolViolation(path, detail)? = error as? VhostError else {
                return XCTFail("expected a protocol violation, got \(error)")
            }
            XCTAssertEqual(path, double.path)
            XCTAssertTrue(detail.contains("7"), detail)
        }
    }

    /// A device that never answers GET_VRING_BASE: stop gives up after the reply timeout.
    func testUnansweredGetVringBaseTimesOut() throws {
        let double = try startDouble(.init(unansweredRequests: [.getVringBase]))
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        (device.backend as? VhostUserBackend)?.replyTimeoutMs = 200
        XCTAssertThrowsError(try device.stop()) { error in
            guard case .timeout(let path, _)? = error as? VhostError else {
                return XCTFail("expected a timeout, got \(error)")
            }
            XCTAssertEqual(path, double.path)
        }
    }

    func testUnansweredSetStatusAckMakesNegotiateTimeOut() throws {
        let double = try startDouble(.init(unansweredRequests: [.setStatus]))
        let device = try openDevice(double)
        (device.backend as? VhostUserBackend)?.replyTimeoutMs = 200
        XCTAssertThrowsError(try device.negotiate()) { error in
            guard case .timeout? = error as? VhostError else { return XCTFail("expected a timeout, got \(error)") }
        }
    }

    func testTruncatedGetFeaturesReplyMakesInitThrow() throws {
        let double = try startDouble(.init(truncatedReplies: [.getFeatures]))
        XCTAssertThrowsError(try openDevice(double)) { error in
            XCTAssertTrue("\(error)".contains(double.path), "\(error)")
        }
    }

    func testReplyWithoutTheReplyFlagMakesInitThrow() throws {
        let double = try startDouble(.init(replyFlagsOverride: 0x1))
        XCTAssertThrowsError(try openDevice(double)) { error in
            guard case .protocolViolation? = error as? VhostError else {
                return XCTFail("expected a protocol violation, got \(error)")
            }
        }
    }

    /// After the backend quits, the port can still be closed, and start/stop fail cleanly.
    func testBackendDroppingAfterStartLeavesTheDeviceClosable() throws {
        let double = try startDouble()
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        double.dropConnection()
        waitFor(double, "the double to drop the connection") { !double.isConnected }
        XCTAssertTrue(device.backend.waitForPeerClosed(), "Ferry must notice the backend is gone")
        XCTAssertThrowsError(try device.stop())
        device.markBackendLost()
        XCTAssertFalse(device.started)
        XCTAssertEqual(try device.stop(), [], "a stopped device sends nothing")
        device.close()
        device.close()  // idempotent
        XCTAssertTrue(device.rings.isEmpty)
        XCTAssertTrue(device.kickFDs.isEmpty)
    }

    func testDriverOKBeforeFeaturesOKIsRefused() throws {
        let double = try startDouble()
        let device = try openDevice(double)
        XCTAssertThrowsError(try device.start()) { error in
            guard case let .invalidState(path, _)? = error as? VirtioUserError else {
                return XCTFail("expected invalidState, got \(error)")
            }
            XCTAssertEqual(path, double.path)
        }
        XCTAssertFalse(double.receivedRequests.contains(.setMemTable))
    }

    func testPathThatIsNoVhostBackendIsRefusedNamingThePath() throws {
        // /dev/null is a character device with the mem major: neither vhost-net nor vdpa.
        XCTAssertThrowsError(try VirtioUserDevice(options: VirtioUserOptions(path: "/dev/null"), memory: makeMemory())) { error in
            XCTAssertTrue("\(error)".contains("/dev/null"), "\(error)")
        }
    }
}

private extension VhostBackend {
    /// Polls `isPeerClosed()` for a bounded time.
    func waitForPeerClosed(timeoutMs: Int = 5000) -> Bool {
        for _ in 0..<(timeoutMs / 5) {
            if isPeerClosed() { return true }
            usleep(5000)
        }
        return isPeerClosed()
    }
}
