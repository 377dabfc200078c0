@testable import BenchCore
import XCTest

/// The generator's record of slow frames and of its own gaps (the `--latency-trace` diagnostic).
final class IntervalLogTests: XCTestCase {
    func testKeepsOnlyIntervalsLongerThanTheThreshold() {
        var log = IntervalLog(thresholdNs: 20_000, capacity: 8)
        defer { log.deallocate() }
        log.note(from: 1_000, to: 21_000)  // exactly the threshold: not over it
        log.note(from: 1_000, to: 21_001)
        log.note(from: 50_000, to: 10_000)  // backwards (a clock read before the frame's due time)
        log.note(from: 100_000, to: 400_000)
        XCTAssertEqual(log.count, 2)
        XCTAssertEqual(log.entry(0).from, 1_000)
        XCTAssertEqual(log.entry(0).to, 21_001)
        XCTAssertEqual(log.entry(1).to, 400_000)
        XCTAssertEqual(log.text(), "1000 21001\n100000 400000\n")
    }

    func testAFullLogCountsWhatItDropped() {
        var log = IntervalLog(thresholdNs: 0, capacity: 2)
        defer { log.deallocate() }
        for i in 0..<5 { log.note(from: UInt64(i) * 10, to: UInt64(i) * 10 + 5) }
        XCTAssertEqual(log.count, 2)
        XCTAssertEqual(log.overflow, 3)
        XCTAssertEqual(log.entry(1).from, 10)
    }
}
