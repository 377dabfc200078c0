import XCTest
import FerryConfig
import FerryTestSupport
@testable import Forwarding

/// The control thread sleeps until it has work: it wakes for its timers, a stop request or a
/// backend leaving, not on a fixed tick. On a core it shares with another busy thread, each
/// needless wake-up preempts that thread.
final class RuntimeControlThreadTests: DoubleOwningTestCase {
    func testAQuietRunWakesOnlyAtTheEndOfItsDuration() throws {
        let double = try makeDouble("quiet")
        let config = try forwardingConfig(["port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "duration = 1"])
        let box = OutputBox()
        let runtime = makeRuntime(config, output: box)
        let summary = try runtime.run()
        XCTAssertGreaterThan(summary.ports[0].rxPackets, 1000, "it forwarded while the control thread slept")
        // One wake-up at the deadline; a stray EINTR may add one. A 50 ms tick made 20.
        XCTAssertLessThanOrEqual(runtime.controlWakeups, 2)
        XCTAssertGreaterThanOrEqual(runtime.controlWakeups, 1)
    }

    func testStatsPeriodWakesOncePerPeriod() throws {
        let double = try makeDouble("period")
        let config = try forwardingConfig([
            "port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "stats_period = 1", "duration = 2.5",
        ])
        let box = OutputBox()
        let runtime = makeRuntime(config, output: box)
        _ = try runtime.run()
        XCTAssertEqual(box.value.components(separatedBy: "NIC statistics for port 0").count - 1, 2, box.value)
        // At 1 s and 2 s to print, at 2.5 s to stop.
        XCTAssertLessThanOrEqual(runtime.controlWakeups, 4)
        XCTAssertGreaterThanOrEqual(runtime.controlWakeups, 3)
    }

    /// `requestStop` wakes the sleeping control thread, and `snapshot` is current without it:
    /// the caller builds it from the workers' published counters.
    func testRequestStopWakesTheControlThreadAndSnapshotsAreLive() throws {
        let double = try makeDouble("stop")
        let config = try forwardingConfig(["port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "duration = 60"])
        let run = BackgroundRun(config)
        XCTAssertTrue(double.waitUntil(timeoutMs: 5000) { (run.runtime.snapshot()?.ports[0].rxPackets ?? 0) > 1000 })
        let first = try XCTUnwrap(run.runtime.snapshot()?.ports[0].rxPackets)
        XCTAssertTrue(double.waitUntil(timeoutMs: 5000) { (run.runtime.snapshot()?.ports[0].rxPackets ?? 0) > first + 1000 },
                      "snapshots follow the counters while the control thread sleeps")
        let summary = try run.stop()
        XCTAssertLessThan(summary.durationSeconds, 30, "the stop request ended the run, not the duration")
        XCTAssertLessThanOrEqual(run.runtime.controlWakeups, 2, "woken by the request, not by a tick")
        XCTAssertEqual(run.runtime.snapshot()?.ports[0].rxPackets, summary.ports[0].rxPackets,
                       "after the run, the snapshot is the final summary")
    }

    /// A backend that writes bytes nobody asked for and then closes: the hang-up takes the link
    /// down although unread bytes remain (a MSG_PEEK check alone would see a live peer), and
    /// the bytes alone never woke the control thread.
    func testUnsolicitedBytesThenAHangUpTakeTheLinkDown() throws {
        let double = try makeDouble("unasked")
        let config = try forwardingConfig(["port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "duration = 60"])
        let run = BackgroundRun(config)
        XCTAssertTrue(double.waitUntil(timeoutMs: 5000) { (run.runtime.snapshot()?.ports[0].rxPackets ?? 0) > 1000 })
        XCTAssertTrue(double.sendUnsolicited([0x55, 0xaa, 0x55, 0xaa]))
        usleep(200_000)
        XCTAssertEqual(run.runtime.snapshot()?.ports[0].linkUp, true, "bytes alone are not a link change")
        double.dropConnection()
        XCTAssertTrue(double.waitUntil(timeoutMs: 5000) { run.runtime.snapshot()?.ports[0].linkUp == false },
                      "the hang-up behind the bytes took the link down")
        let summary = try run.stop()
        XCTAssertFalse(summary.ports[0].linkUp)
        XCTAssertLessThanOrEqual(run.runtime.controlWakeups, 4, "the hang-up and the stop request, not the bytes")
        XCTAssertTrue(run.output.value.contains("Link: down"), run.output.value)
    }
}
