@testable import BenchCore
import Histogram
import XCTest

/// The latency target is judged on the median p99 over repetitions; these pin down what goes
/// into that median.
final class LatencySummaryTests: XCTestCase {
    private func point(_ dut: DUTKind, load: Double, p99: UInt64, overloaded: Bool = false,
                       error: String? = nil, received: UInt64 = 1000) -> LatencyPoint {
        latencyPoint(dut, load: load, mpps: 1, p99: p99, overloaded: overloaded, error: error, received: received)
    }

    private func run(_ dut: DUTKind, rep: Int, _ points: [LatencyPoint]) -> LatencyResult {
        LatencyResult(dut: dut, rep: rep, maxPps: 2e6, points: points, error: nil)
    }

    func testMedianOverRepetitionsPerDUTAndLoad() {
        let results = [
            run(.ferry, rep: 1, [point(.ferry, load: 0.5, p99: 40_000)]),
            run(.testpmd, rep: 1, [point(.testpmd, load: 0.5, p99: 90_000)]),
            run(.testpmd, rep: 2, [point(.testpmd, load: 0.5, p99: 10_000, overloaded: true)]),
            run(.ferry, rep: 2, [point(.ferry, load: 0.5, p99: 900_000, overloaded: true)]),
            run(.ferry, rep: 3, [point(.ferry, load: 0.5, p99: 20_000)]),
            run(.testpmd, rep: 3, [point(.testpmd, load: 0.5, p99: 30_000)]),
        ]
        let summary = LatencySummary.summarize(results, loads: [0.1, 0.5])
        // No point at 10 %: no row for it.
        XCTAssertEqual(summary.map(\.load), [0.5, 0.5])
        let ferry = summary.first { $0.dut == .ferry }!
        let testpmd = summary.first { $0.dut == .testpmd }!
        // Histogram values are bucketed to 3 significant digits: compare within 0.1 %.
        XCTAssertEqual(ferry.p99s.count, 3)
        XCTAssertEqual(ferry.medianP99!, 40_000, accuracy: 40)
        XCTAssertEqual(testpmd.medianP99!, 30_000, accuracy: 30)
        XCTAssertEqual(ferry.medianP50!, 500, accuracy: 1)
        XCTAssertEqual(ferry.overloadedReps, 1)
        XCTAssertEqual(testpmd.overloadedReps, 1)
    }

    func testFailedPointsStayOutOfTheMedian() {
        let results = [
            run(.ferry, rep: 1, [point(.ferry, load: 0.5, p99: 40_000)]),
            run(.ferry, rep: 2, [point(.ferry, load: 0.5, p99: 5_000_000, error: "the DUT went away")]),
            run(.ferry, rep: 3, [point(.ferry, load: 0.5, p99: 5_000_000, received: 0)]),
            run(.ferry, rep: 4, [point(.ferry, load: 0.5, p99: 60_000)]),
        ]
        let summary = LatencySummary.summarize(results, loads: [0.5])
        XCTAssertEqual(summary.count, 1)
        XCTAssertEqual(summary[0].p99s.count, 2)
        XCTAssertEqual(summary[0].medianP99!, 50_000, accuracy: 50)
    }

    func testARetriedLoadIsJudgedOnItsLastAttempt() {
        var first = point(.ferry, load: 0.5, p99: 900_000, overloaded: true)
        first.attempt = 1
        var second = point(.ferry, load: 0.5, p99: 45_000)
        second.attempt = 2
        let summary = LatencySummary.summarize([run(.ferry, rep: 1, [point(.ferry, load: 0.1, p99: 9_000), first, second])],
                                               loads: [0.1, 0.5])
        XCTAssertEqual(summary.count, 2)
        XCTAssertEqual(summary[1].p99s.count, 1)
        XCTAssertEqual(summary[1].medianP99!, 45_000, accuracy: 45)
        XCTAssertEqual(summary[1].overloadedReps, 0)
    }

    func testStealIsReadFromTheCoresLineInMilliseconds() {
        let stat = """
            cpu  4012889 16451 156694 1473624 5814 0 1760 26953 0 0
            cpu0 2064608 5752 71779 690002 804 0 208 13080 0 0
            cpu1 1948281 10699 84915 783622 5009 0 1551 13873 0 0
            cpu10 1 1 1 1 1 1 1 99 0 0
            intr 1 2 3
            """
        XCTAssertEqual(Steal.parse(stat: stat, cpu: 0), 130_800)
        XCTAssertEqual(Steal.parse(stat: stat, cpu: 1), 138_730)
        XCTAssertEqual(Steal.parse(stat: stat, cpu: 10), 990)
        XCTAssertNil(Steal.parse(stat: stat, cpu: 2))
    }
}

/// The maximum search: bisection between 0 and the rate under overload.
final class MaximumSearchTests: XCTestCase {
    func testBisectionConvergesBelowTheRateTheDUTKeepsUpWith() {
        // A DUT that keeps up to 3.3 Mpps, bounded from above by 9 Mpps under overload.
        let (max, steps) = LatencyBench.bisect(upper: 9e6, steps: 7, keptUpFraction: 0.02) { $0 <= 3.3e6 ? 0.005 : 0.3 }
        XCTAssertEqual(steps.count, 7)
        XCTAssertEqual(steps[0][0], 9e6)
        XCTAssertEqual(steps[1][0], 4.5e6)
        XCTAssertLessThanOrEqual(max, 3.3e6)
        // Seven trials pin it to within 9e6 / 64.
        XCTAssertGreaterThan(max, 3.3e6 - 9e6 / 64)
    }

    func testAnUpperBoundTheDUTKeepsUpWithEndsTheSearchAtOnce() {
        var calls = 0
        let (max, steps) = LatencyBench.bisect(upper: 2e6, steps: 7, keptUpFraction: 0.02) { _ in calls += 1; return 0 }
        XCTAssertEqual(max, 2e6)
        XCTAssertEqual(steps.count, 1)
        XCTAssertEqual(calls, 1)
    }

    func testAFailedTrialStopsTheSearchWithWhatWasFound() {
        var calls = 0
        let (max, steps) = LatencyBench.bisect(upper: 8e6, steps: 7, keptUpFraction: 0.02) { rate in
            calls += 1
            return calls == 3 ? nil : (rate <= 4e6 ? 0 : 1)
        }
        XCTAssertEqual(max, 4e6)
        XCTAssertEqual(steps.map { $0[0] }, [8e6, 4e6])
    }

    func testNotAcceptedCountsRingFullAndLostAgainstTheFramesDue() {
        let job = TrafficJob(mode: .fixedRate(1e6), frameLength: 64, warmupNs: 0, durationNs: 1_000_000_000, drainNs: 0)
        job.sentMeasured = 900_000
        job.rxRingFull = 100_000
        job.receivedMeasured = 890_000
        XCTAssertEqual(LatencyBench.notAccepted(job), 0.11, accuracy: 1e-9)
        let idle = TrafficJob(mode: .fixedRate(1e6), frameLength: 64, warmupNs: 0, durationNs: 1_000_000_000, drainNs: 0)
        XCTAssertEqual(LatencyBench.notAccepted(idle), 1, "nothing due counts as not kept up")
    }
}

/// The same-traffic view: points grouped by the rate offered, whatever load fraction they were.
final class LatencyByRateTests: XCTestCase {
    private func point(_ dut: DUTKind, mpps: Double, p99: UInt64, overloaded: Bool = false,
                       error: String? = nil) -> LatencyPoint {
        latencyPoint(dut, load: 0.5, mpps: mpps, p99: p99, overloaded: overloaded, error: error)
    }

    func testPointsOfEitherLoadShareABinByRate() {
        let results = [
            LatencyResult(dut: .ferry, rep: 1, maxPps: 3.6e6,
                          points: [point(.ferry, mpps: 1.8, p99: 100_000), point(.ferry, mpps: 3.2, p99: 900_000)], error: nil),
            LatencyResult(dut: .testpmd, rep: 1, maxPps: 2.8e6,
                          points: [point(.testpmd, mpps: 1.4, p99: 80_000), point(.testpmd, mpps: 2.5, p99: 700_000)], error: nil),
            LatencyResult(dut: .ferry, rep: 2, maxPps: 3.0e6,
                          points: [point(.ferry, mpps: 1.45, p99: 60_000),
                                   point(.ferry, mpps: 1.6, p99: 5_000_000, overloaded: true),
                                   point(.ferry, mpps: 1.7, p99: 1, error: "failed")], error: nil),
        ]
        let rows = LatencyByRate.bin(results)
        XCTAssertEqual(rows.map { "\($0.lowMpps) \($0.dut.rawValue) \($0.points)" },
                       ["1.0 ferry 1", "1.0 testpmd 1", "1.5 ferry 1", "2.5 testpmd 1", "3.0 ferry 1"])
        let shared = rows.filter { $0.lowMpps == 1.0 }
        XCTAssertEqual(shared.first { $0.dut == .ferry }!.medianP99, 60_000, accuracy: 60)
        XCTAssertEqual(shared.first { $0.dut == .testpmd }!.medianP99, 80_000, accuracy: 80)
        // The overloaded and failed points at 1.6 and 1.7 Mpps are left out: one point in that bin.
        XCTAssertEqual(rows.first { $0.lowMpps == 1.5 }!.medianP99, 100_000, accuracy: 100)
        XCTAssertEqual(rows.first { $0.lowMpps == 1.5 }!.highMpps, 2.0)
    }

    func testNoPointsNoRows() {
        XCTAssertEqual(LatencyByRate.bin([]), [])
    }
}

/// A point whose histogram holds 98 frames of 500 ns and 2 of `p99`: its 99th percentile is
/// `p99` and its median 500 ns.
private func latencyPoint(_ dut: DUTKind, load: Double, mpps: Double, p99: UInt64, overloaded: Bool,
                          error: String?, received: UInt64 = 1000) -> LatencyPoint {
    var h = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000,
                              numberOfSignificantValueDigits: .three)
    for _ in 0..<98 { h.record(500) }
    h.record(p99)
    h.record(p99)
    return LatencyPoint(dut: dut, load: load, targetPps: mpps * 1e6, offeredPps: mpps * 1e6, receivedPps: mpps * 1e6,
                        sent: received, received: received, lost: 0, rxRingFull: 0, reordered: 0, foreign: 0,
                        corrected: Percentiles(h), uncorrected: Percentiles(h), cdf: [],
                        overloaded: overloaded, error: error)
}
