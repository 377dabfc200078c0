import XCTest
@testable import BenchCore

final class LatencyComparisonTests: XCTestCase {
    func testIdenticalRepetitionsGiveARatioOfOneInsideItsInterval() throws {
        let reps: [UInt64] = [40_000, 80_000, 60_000, 300_000, 70_000]
        let c = try XCTUnwrap(LatencyComparison.compare(load: 0.5, ferry: reps, testpmd: reps))
        XCTAssertEqual(c.ratio, 1, accuracy: 1e-12)
        XCTAssertLessThan(c.low, 1)
        XCTAssertGreaterThan(c.high, 1)
        XCTAssertEqual(c.ferryReps, 5)
        XCTAssertEqual(c.testpmdReps, 5)
        // Ties count as "not worse", so a coin toss leans above one half.
        XCTAssertGreaterThan(c.ferryNotWorse, 0.4)
        XCTAssertLessThan(c.ferryNotWorse, 0.8)
    }

    func testSeparatedRepetitionsGiveAnIntervalAwayFromOne() throws {
        let ferry: [UInt64] = [10_000, 12_000, 11_000, 9_000, 13_000]
        let testpmd: [UInt64] = [100_000, 90_000, 120_000, 110_000, 95_000]
        let c = try XCTUnwrap(LatencyComparison.compare(load: 0.5, ferry: ferry, testpmd: testpmd))
        XCTAssertEqual(c.ratio, 11_000.0 / 100_000.0, accuracy: 1e-12)
        XCTAssertLessThan(c.high, 0.2)
        XCTAssertGreaterThanOrEqual(c.low, 9_000.0 / 120_000.0)
        XCTAssertEqual(c.ferryNotWorse, 1)

        let reversed = try XCTUnwrap(LatencyComparison.compare(load: 0.5, ferry: testpmd, testpmd: ferry))
        XCTAssertGreaterThan(reversed.low, 5)
        XCTAssertEqual(reversed.ferryNotWorse, 0)
    }

    /// One wild repetition moves a median of five little, and the interval shows the spread.
    func testAnOutlierWidensTheIntervalButBarelyMovesTheRatio() throws {
        let testpmd: [UInt64] = [70_000, 80_000, 75_000, 85_000, 78_000]
        let calm: [UInt64] = [60_000, 65_000, 62_000, 70_000, 68_000]
        let wild: [UInt64] = [60_000, 65_000, 62_000, 70_000, 9_000_000]
        let a = try XCTUnwrap(LatencyComparison.compare(load: 0.5, ferry: calm, testpmd: testpmd))
        let b = try XCTUnwrap(LatencyComparison.compare(load: 0.5, ferry: wild, testpmd: testpmd))
        XCTAssertEqual(a.ratio, b.ratio, accuracy: 0.05)
        XCTAssertGreaterThan(b.high, a.high)
    }

    func testTheSameInputGivesTheSameInterval() {
        let f: [UInt64] = [1, 5, 9, 2, 7, 3], t: [UInt64] = [4, 6, 8, 2, 5]
        XCTAssertEqual(LatencyComparison.compare(load: 0.1, ferry: f, testpmd: t),
                       LatencyComparison.compare(load: 0.1, ferry: f, testpmd: t))
    }

    func testNothingToCompareGivesNil() {
        XCTAssertNil(LatencyComparison.compare(load: 0.5, ferry: [], testpmd: [1]))
        XCTAssertNil(LatencyComparison.compare(load: 0.5, ferry: [1], testpmd: []))
        XCTAssertNil(LatencyComparison.compare(load: 0.5, ferry: [1], testpmd: [0]))
    }

    func testComparesEachLoadBothDUTsHave() {
        let summary = [
            LatencySummary(dut: .ferry, load: 0.1, p99s: [10, 20], p50s: [1, 1], medianP99: 15, medianP50: 1, overloadedReps: 0),
            LatencySummary(dut: .ferry, load: 0.5, p99s: [30], p50s: [1], medianP99: 30, medianP50: 1, overloadedReps: 0),
            LatencySummary(dut: .testpmd, load: 0.5, p99s: [60], p50s: [1], medianP99: 60, medianP50: 1, overloadedReps: 0),
        ]
        let c = LatencyComparison.compare(summary)
        XCTAssertEqual(c.map(\.load), [0.5])
        XCTAssertEqual(c.first?.ratio, 0.5)
        XCTAssertEqual(c.first?.low, 0.5)
        XCTAssertEqual(c.first?.high, 0.5)
    }
}
