import Foundation
import XCTest

/// bench/scripts/tail-attribution.py on a hand-made point whose causes are known: one slow
/// frame waits out a kworker on the DUT's core, one a gap of the generator that the kernel
/// trace did not see (steal), one neither; a fourth is faster than the p99 and left out.
final class TailAttributionScriptTests: XCTestCase {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/tail-attribution.py").standardized.path

    func testEachSlowFrameIsPutDownToTheCoreThatWasTakenDuringItsFlight() throws {
        guard let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first(where: {
            FileManager.default.isExecutableFile(atPath: $0)
        }) else {
            throw XCTSkip("SKIPPED LOUDLY: no python3 to run \(Self.script)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tail-attribution-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = dir + "/ferry-rep1-load50-attempt1"

        // The window is [1 s, 2 s); p99 200 µs.
        let meta = """
        {"point": {"dut": "ferry", "load": 0.5, "targetPps": 1000000,
                   "corrected": {"p50": 2000, "p99": 200000},
                   "generatorStealMsPerSecond": 0, "dutStealMsPerSecond": 0},
         "windowStartNs": 1000000000, "windowEndNs": 2000000000, "overflow": 0,
         "generatorCPU": 0, "dutCPU": 1}
        """
        try meta.write(toFile: base + ".json", atomically: true, encoding: .utf8)
        let trace = """
        # tracer: nop
                  <idle>-0       [001] d..2.     1.000000: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=rte-worker-1 next_pid=200 next_prio=120
                  <idle>-0       [000] d..2.     1.000000: sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=ferry-bench next_pid=100 next_prio=120
             ferry-bench-100     [000] d.h..     1.100000: local_timer_entry: vector=236
             ferry-bench-100     [000] d.h..     1.100003: local_timer_exit: vector=236
            rte-worker-1-200     [001] d..2.     1.300000: sched_switch: prev_comm=rte-worker-1 prev_pid=200 prev_prio=120 prev_state=R ==> next_comm=kworker/1:2 next_pid=50 next_prio=120
             kworker/1:2-50      [001] d..2.     1.300400: sched_switch: prev_comm=kworker/1:2 prev_pid=50 prev_prio=120 prev_state=I ==> next_comm=rte-worker-1 next_pid=200 next_prio=120
            rte-worker-1-200     [001] d.h..     1.500000: local_timer_entry: vector=236
            rte-worker-1-200     [001] d.h..     1.500005: local_timer_exit: vector=236

        """
        try trace.write(toFile: base + ".trace", atomically: true, encoding: .utf8)
        // The generator's loop stood still for 300 µs at 1.6 s: nothing in the trace.
        try "1600000000 1600300000\n".write(toFile: base + ".gaps", atomically: true, encoding: .utf8)
        let tail = [
            "1300050000 1300450000",  // 400 µs, across the kworker
            "1600010000 1600320000",  // 310 µs, across the generator's gap
            "1800000000 1800250000",  // 250 µs, nothing took a core
            "1900000000 1900030000",  // 30 µs, under the p99
        ].joined(separator: "\n") + "\n"
        try tail.write(toFile: base + ".tail", atomically: true, encoding: .utf8)

        let out = dir + "/attribution.json"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [Self.script, dir, "--json", out]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)

        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        let rows = try XCTUnwrap(report["points"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 1)
        let row = rows[0]
        XCTAssertEqual(row["tail_frames"] as? Int, 3)
        let shares = try XCTUnwrap(row["shares"] as? [String: Double])
        XCTAssertEqual(shares["dut"] ?? 0, 0.333, accuracy: 0.001)
        XCTAssertEqual(shares["generator"] ?? 0, 0.333, accuracy: 0.001)
        XCTAssertEqual(shares["neither"] ?? 0, 0.333, accuracy: 0.001)
        XCTAssertNil(shares["both"])
        XCTAssertEqual(row["dut_causes_of_tail"] as? [String: Int], ["kworker": 1])
        XCTAssertEqual((row["neither_median_us"] as? Double) ?? 0, 250, accuracy: 0.001)
        // Only the 250 µs frame had no stall within 2 ms before it was due.
        XCTAssertEqual(row["quiet_tail_frames"] as? Int, 1)
        let pooled = try XCTUnwrap(report["pooled"] as? [[String: Any]])
        XCTAssertEqual(pooled.first?["tail_frames"] as? Int, 3)
        XCTAssertEqual((pooled.first?["quiet_share"] as? Double) ?? 0, 0.3333, accuracy: 0.0001)
        let cores = try XCTUnwrap(row["cores"] as? [String: [String: Any]])
        XCTAssertEqual(cores["dut"]?["owner_pid"] as? Int, 200)
        XCTAssertEqual(cores["generator"]?["owner_pid"] as? Int, 100)
        // The DUT's core: 400 µs of kworker and a 5 µs tick in a 1 s window.
        XCTAssertEqual((cores["dut"]?["away_ms_per_s"] as? Double) ?? 0, 0.405, accuracy: 0.0005)
        // The generator's: a 3 µs tick and the 300 µs gap.
        XCTAssertEqual((cores["generator"]?["away_ms_per_s"] as? Double) ?? 0, 0.303, accuracy: 0.0005)
    }
}
