import XCTest
import CFerry
import VirtioUser
import Vhost
@testable import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// What wakes the control thread, and what must not: each event on its own, through real
/// descriptors (socket pairs, an eventfd, a listening unix socket, a signalfd).
final class ControlEventsTests: XCTestCase {
    private var openFDs: [Int32] = []

    override func tearDown() {
        for fd in openFDs { close(fd) }
        openFDs = []
        super.tearDown()
    }

    /// A connected unix stream pair: (Ferry's end, the backend's end).
    private func socketPair() throws -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
            throw XCTSkip("socketpair: \(String(cString: strerror(errno)))")
        }
        openFDs += fds
        return (fds[0], fds[1])
    }

    func testNothingHappeningTimesOutWithNoEvents() throws {
        let wake = try EventFD.make()
        defer { wake.close() }
        let events = ControlEvents(wake: wake, handleSignals: false)
        let (ferry, _) = try socketPair()
        let woken = events.wait(linkFDs: [(0, ferry)], listenerFDs: [], timeoutMs: 20)
        XCTAssertEqual(woken.stopSignal, 0)
        XCTAssertFalse(woken.requested)
        XCTAssertEqual(woken.hungUp, [])
        XCTAssertEqual(woken.connectable, [])
    }

    func testABackendClosingItsConnectionNamesItsPort() throws {
        let wake = try EventFD.make()
        defer { wake.close() }
        let events = ControlEvents(wake: wake, handleSignals: false)
        let (ferry0, _) = try socketPair()
        let (ferry1, backend1) = try socketPair()
        close(backend1)
        openFDs.removeAll { $0 == backend1 }
        let woken = events.wait(linkFDs: [(0, ferry0), (1, ferry1)], listenerFDs: [], timeoutMs: 5000)
        XCTAssertEqual(woken.hungUp, [1])
        XCTAssertFalse(woken.requested)
    }

    /// A backend that writes bytes nobody asked for must not wake the control thread in a loop
    /// (poll asks for POLLRDHUP, not POLLIN); once it closes, the hang-up is seen even though
    /// unread bytes remain, which a MSG_PEEK check alone would take for a live peer.
    func testUnsolicitedBytesDoNotWakeButAHangUpBehindThemDoes() throws {
        let events = ControlEvents(wake: nil, handleSignals: false)
        let (ferry, backend) = try socketPair()
        let junk: [UInt8] = [1, 2, 3, 4]
        XCTAssertEqual(junk.withUnsafeBytes { write(backend, $0.baseAddress, 4) }, 4)
        var woken = events.wait(linkFDs: [(7, ferry)], listenerFDs: [], timeoutMs: 20)
        XCTAssertEqual(woken.hungUp, [], "pending bytes are not a hang-up")
        XCTAssertEqual(ferry_socket_peer_closed(ferry), 0, "the peek sees the bytes")

        shutdown(backend, Int32(SHUT_WR))
        woken = events.wait(linkFDs: [(7, ferry)], listenerFDs: [], timeoutMs: 5000)
        XCTAssertEqual(woken.hungUp, [7])
        XCTAssertEqual(ferry_socket_peer_closed(ferry), 0, "the peek alone would still say the peer is there")
    }

    func testARequestFromAnotherThreadWakesOnceAndIsDrained() throws {
        let wake = try EventFD.make()
        defer { wake.close() }
        let events = ControlEvents(wake: wake, handleSignals: false)
        let signaller = Thread { usleep(20_000); wake.signal(); wake.signal() }
        signaller.start()
        var woken = events.wait(linkFDs: [], listenerFDs: [], timeoutMs: 5000)
        XCTAssertTrue(woken.requested)
        woken = events.wait(linkFDs: [], listenerFDs: [], timeoutMs: 0)
        XCTAssertFalse(woken.requested, "two signals before the wake-up are one request, drained")
    }

    func testABackendConnectingToTheListenerMakesItsPortConnectable() throws {
        let path = forwardingSocketPath("ctl-listen")
        let listener = try VhostUserListener(path: path)
        defer { listener.close(); unlink(path) }
        let events = ControlEvents(wake: nil, handleSignals: false)
        var woken = events.wait(linkFDs: [], listenerFDs: [(3, listener.fileDescriptor)], timeoutMs: 20)
        XCTAssertEqual(woken.connectable, [])
        let client = try VhostUserSocket.connect(path: path)
        defer { client.close() }
        woken = events.wait(linkFDs: [], listenerFDs: [(3, listener.fileDescriptor)], timeoutMs: 5000)
        XCTAssertEqual(woken.connectable, [3])
    }

    /// SIGTERM, blocked as `run` blocks it, arrives through the signalfd. The signal is sent
    /// to a thread of its own, so a failure cannot kill the test process: a thread-directed
    /// signal still pending when its thread exits is discarded.
    func testAStopSignalIsTakenFromTheSignalFD() throws {
        final class Received: @unchecked Sendable { var signal: Int32 = -1 }
        let result = Received()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var set = ControlEvents.stopSignals
            pthread_sigmask(SIG_BLOCK, &set, nil)
            let events = ControlEvents(wake: nil, handleSignals: true)
            pthread_kill(pthread_self(), SIGTERM)
            result.signal = events.wait(linkFDs: [], listenerFDs: [], timeoutMs: 5000).stopSignal
            done.signal()
        }
        thread.start()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(result.signal, SIGTERM)
    }

    func testTimeoutsRoundUpAndNeverWaitPastADeadline() {
        XCTAssertEqual(FerryRuntime.timeoutMs(until: nil, now: 5), -1, "nothing timed: sleep until an event")
        XCTAssertEqual(FerryRuntime.timeoutMs(until: 1_000, now: 2_000), 0, "a deadline already passed")
        XCTAssertEqual(FerryRuntime.timeoutMs(until: 2_000_001, now: 1), 2, "2 ms exactly")
        XCTAssertEqual(FerryRuntime.timeoutMs(until: 2_000_002, now: 1), 3, "rounded up, never early")
        XCTAssertEqual(FerryRuntime.timeoutMs(until: UInt64.max, now: 0), Int32.max)
    }
}
