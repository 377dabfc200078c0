import XCTest
import CFerry
import Vhost
#if canImport(Glibc)
import Glibc
#endif

final class VhostUserSocketTests: XCTestCase {
    private var pair: (VhostUserSocket, VhostUserSocket)!

    override func setUpWithError() throws {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
            throw XCTSkip("socketpair failed: errno \(errno)")
        }
        pair = (VhostUserSocket(adopting: fds[0], path: "pair-a"), VhostUserSocket(adopting: fds[1], path: "pair-b"))
    }

    override func tearDown() {
        pair?.0.close()
        pair?.1.close()
    }

    func testMessageAndEventFDCrossTheSocket() throws {
        let efd = try makeEventFD()
        defer { close(efd) }
        let sent = VhostUserMessage(request: .setVringCall, payload: .u64(VhostUserMessage.vringFilePayload(index: 1, hasFd: true)))
        try pair.0.send(sent, fds: [efd])
        let (received, fds) = try pair.1.receive(timeoutMs: 2000)
        XCTAssertEqual(received, sent)
        XCTAssertEqual(fds.count, 1)
        guard let arrived = fds.first else { return }
        defer { close(arrived) }
        XCTAssertNotEqual(arrived, efd, "the peer gets its own descriptor")
        // Signalling through the received fd is seen on the original: it is the same eventfd.
        var one: UInt64 = 5
        XCTAssertEqual(write(arrived, &one, 8), 8)
        XCTAssertEqual(readEventFD(efd), 5)
    }

    func testSeveralFdsArriveInOrder() throws {
        let a = try makeEventFD(), b = try makeEventFD()
        defer { close(a); close(b) }
        try pair.0.send(VhostUserMessage(request: .setMemTable, payload: .memoryTable([])), fds: [a, b])
        let (_, fds) = try pair.1.receive(timeoutMs: 2000)
        defer { fds.forEach { close($0) } }
        XCTAssertEqual(fds.count, 2)
        var v: UInt64 = 1
        _ = write(fds[1], &v, 8)
        XCTAssertNil(readEventFD(a))
        XCTAssertEqual(readEventFD(b), 1)
    }

    func testSilentPeerTimesOut() {
        XCTAssertThrowsVhostError(.timeout(path: "pair-b", what: "the reply"),
                                  try pair.1.receive(timeoutMs: 20, waitingFor: "the reply"))
    }

    func testHalfAMessageThenSilenceTimesOut() throws {
        try pair.0.sendBytes([1, 0, 0, 0, 5, 0])
        XCTAssertThrowsVhostError(.timeout(path: "pair-b", what: "a message"), try pair.1.receive(timeoutMs: 20))
    }

    func testEOFIsClosedAndPeerClosedIsSeen() {
        XCTAssertFalse(pair.1.isPeerClosed())
        pair.0.close()
        XCTAssertTrue(pair.1.isPeerClosed())
        XCTAssertThrowsVhostError(.closed(path: "pair-b"), try pair.1.receive(timeoutMs: 1000))
    }

    func testEOFInsidePayloadIsClosed() throws {
        try pair.0.sendBytes([1, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4])
        pair.0.close()
        XCTAssertThrowsVhostError(.closed(path: "pair-b"), try pair.1.receive(timeoutMs: 1000))
    }

    func testHugeSizeIsRefusedWithoutReadingIt() throws {
        try pair.0.sendBytes([1, 0, 0, 0, 5, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f])
        XCTAssertThrowsViolation("exceeds", try pair.1.receive(timeoutMs: 1000))
    }

    func testMalformedPayloadIsAViolationNamingThePath() throws {
        try pair.0.sendBytes([1, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4])
        XCTAssertThrowsError(try pair.1.receive(timeoutMs: 1000)) { error in
            guard case let .protocolViolation(path, detail)? = error as? VhostError else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(path, "pair-b")
            XCTAssertTrue(detail.contains("expected 8"), detail)
        }
    }

    func testCloseIsIdempotentAndLaterUseIsClosed() {
        pair.0.close()
        pair.0.close()
        XCTAssertEqual(pair.0.fileDescriptor, -1)
        XCTAssertTrue(pair.0.isPeerClosed())
        XCTAssertThrowsVhostError(.closed(path: "pair-a"), try pair.0.send(VhostUserMessage(request: .setOwner)))
    }

    func testSendToClosedPeerIsClosed() {
        pair.1.close()
        // The first write may still land in the buffer before the kernel notices; keep going.
        var result: Error?
        for _ in 0..<4 {
            do { try pair.0.send(VhostUserMessage(request: .setOwner)) } catch { result = error; break }
        }
        XCTAssertEqual(result as? VhostError, .closed(path: "pair-a"))
    }

    func testTooManyFdsAreRefusedBeforeSending() throws {
        XCTAssertThrowsError(try pair.0.send(VhostUserMessage(request: .setOwner), fds: Array(repeating: 0, count: 9)))
    }

    // MARK: Connect and listen

    func testConnectToMissingPathNamesThePath() {
        let path = "/tmp/ferry-vhost-no-such-\(getpid()).sock"
        XCTAssertThrowsError(try VhostUserSocket.connect(path: path)) { error in
            XCTAssertEqual(error as? VhostError, .backendMissing(path: path, errno: ENOENT))
            XCTAssertTrue("\(error)".contains(path))
        }
    }

    func testConnectToAPathTooLongIsRefused() {
        let path = "/tmp/" + String(repeating: "x", count: 200)
        XCTAssertThrowsError(try VhostUserSocket.connect(path: path)) { error in
            guard case let .io(p, _, e)? = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
            XCTAssertEqual(e, ENAMETOOLONG)
        }
    }

    func testListenerAcceptsAndUnlinksItsSocketOnClose() throws {
        let path = temporarySocketPath("listen")
        let listener = try VhostUserListener(path: path)
        let client = try VhostUserSocket.connect(path: path)
        let server = try listener.accept(timeoutMs: 2000)
        try client.send(VhostUserMessage(request: .setOwner))
        XCTAssertEqual(try server.receive(timeoutMs: 2000).0, VhostUserMessage(request: .setOwner))
        listener.close()
        XCTAssertNotEqual(access(path, F_OK), 0, "socket file removed")
        listener.close()
    }

    func testListenerTimesOutNamingThePath() throws {
        let path = temporarySocketPath("lonely")
        let listener = try VhostUserListener(path: path)
        defer { listener.close() }
        XCTAssertThrowsVhostError(.timeout(path: path, what: "a vhost backend to connect"),
                                  try listener.accept(timeoutMs: 10))
    }

    func testListenerReplacesAStaleSocketFile() throws {
        let path = temporarySocketPath("stale")
        // A socket file nobody listens on, as a crashed run leaves.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(rc, 0)
        close(fd)
        XCTAssertEqual(access(path, F_OK), 0)

        let listener = try VhostUserListener(path: path)
        defer { listener.close() }
        let client = try VhostUserSocket.connect(path: path)
        defer { client.close() }
        _ = try listener.accept(timeoutMs: 2000)
    }

    func testListenerRefusesALiveSocketAndARegularFile() throws {
        let path = temporarySocketPath("live")
        let first = try VhostUserListener(path: path)
        defer { first.close() }
        XCTAssertThrowsError(try VhostUserListener(path: path)) { error in
            guard case let .io(p, _, e)? = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
            XCTAssertEqual(e, EADDRINUSE)
        }

        let filePath = temporarySocketPath("file")
        let f = open(filePath, O_CREAT | O_WRONLY, 0o600)
        close(f)
        defer { unlink(filePath) }
        XCTAssertThrowsError(try VhostUserListener(path: filePath)) { error in
            guard case let .io(_, _, e)? = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EEXIST)
        }
        XCTAssertEqual(access(filePath, F_OK), 0, "a regular file is never removed")
    }
}
