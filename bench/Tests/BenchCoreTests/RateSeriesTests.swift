@testable import BenchCore
import XCTest

final class RateSeriesTests: XCTestCase {
    /// A Ferry log: two periodic blocks, then the final block whose Rx-pps line is not a period.
    let ferryLog = """
    [0.005] INFO worker 0 on core 1: 1 stream(s), io mode, burst 32, rx_mode poll

    Port statistics ====================================
      ######################## NIC statistics for port 0  ########################
      RX-packets: 2642080    RX-errors:  0          RX-bytes:  169093120
      TX-packets: 2642112    TX-dropped: 0          TX-bytes:  169095168
      Link: up  Path: /tmp/fb/vh0.sock

      Throughput (since last show)
      Rx-pps:      2614120          Rx-bps:   1338429474
      Tx-pps:      2614121          Tx-bps:   1338429474
      ############################################################################

    Port statistics ====================================
      Throughput (since last show)
      Rx-pps:      2475350          Rx-bps:   1267379266
      Tx-pps:      2475351          Tx-bps:   1267379266

      ---------------------- Forward statistics for port 0  ----------------------
      RX-packets: 8376064        RX-errors:  0              RX-bytes: 536068096
      TX-packets: 8376096        TX-dropped: 0              TX-bytes: 536070144
      Rx-pps: 1390693            Tx-pps: 1390698            Link: up
    """

    /// A testpmd log, with the clear-screen sequences of --stats-period and the first block
    /// printed before any period passed.
    let testpmdLog = """
    \u{1B}[2J\u{1B}[1;1H
    Port statistics ====================================
      Throughput (since last show)
      Rx-pps:            0          Rx-bps:            0
      Tx-pps:            0          Tx-bps:            0
    \u{1B}[2J\u{1B}[1;1H
    Port statistics ====================================
      Throughput (since last show)
      Rx-pps:       991058          Rx-bps:    507422144
      Tx-pps:       991058          Tx-bps:    507422144
      Throughput (since last show)
      Rx-pps:       967311          Rx-bps:    495263400
      Tx-pps:       967311          Tx-bps:    495263400
      ---------------------- Forward statistics for port 0  ----------------------
      RX-packets: 6056448        RX-dropped: 0             RX-total: 6056448
      TX-packets: 6056480        TX-dropped: 0             TX-total: 6056480
    """

    func testFerryPeriodsSkipTheFinalBlock() {
        XCTAssertEqual(RateSeries.rxPps(in: ferryLog), [2_614_120, 2_475_350])
        XCTAssertEqual(RateSeries.txPps(in: ferryLog), [2_614_121, 2_475_351])
    }

    func testTestpmdLeadingZeroBlockIsDropped() {
        XCTAssertEqual(RateSeries.rxPps(in: testpmdLog), [0, 991_058, 967_311])
        XCTAssertEqual(ThroughputBench.periods(log: testpmdLog, kind: .testpmd, ports: 1), [991_058, 967_311])
        // Ferry's first block is a real period: kept.
        XCTAssertEqual(ThroughputBench.periods(log: ferryLog, kind: .ferry, ports: 1).count, 2)
    }

    func testSeveralPortsFoldPerPeriod() {
        let log = "  Rx-pps: 10 Rx-bps: 1\n  Rx-pps: 20 Rx-bps: 1\n  Rx-pps: 30 Rx-bps: 1\n  Rx-pps: 40 Rx-bps: 1\n"
        XCTAssertEqual(RateSeries.rxPps(in: log, ports: 2), [30, 70])
    }

    func testSteadyMeanSkipsWarmupAndNeedsEnoughPeriods() {
        let s: [Double] = [100, 1, 2, 3, 4, 5]
        XCTAssertEqual(RateSeries.steadyMean(s, warmup: 1, count: 4), 2.5)
        XCTAssertNil(RateSeries.steadyMean(s, warmup: 3, count: 4))
    }

    func testLastCounterIsTheFinalTotal() {
        XCTAssertEqual(ThroughputBench.lastCounter("TX-packets:", in: ferryLog), 8_376_096)
        XCTAssertEqual(ThroughputBench.lastCounter("RX-packets:", in: testpmdLog), 6_056_448)
        XCTAssertNil(ThroughputBench.lastCounter("TX-packets:", in: "nothing here"))
    }

    func testQueuesWithTrafficFromStatsJSON() {
        let json = """
          "streams": [
            {"rx_port": 0, "rx_queue": 0, "tx_port": 0, "tx_queue": 0, "rx_packets": 12, "tx_packets": 12},
            {"rx_port": 0, "rx_queue": 1, "tx_port": 0, "tx_queue": 1, "rx_packets": 0, "tx_packets": 32}
          ]
        """
        XCTAssertEqual(ThroughputBench.queuesWithTraffic(statsJSON: json), [0])
    }
}

final class ReportMathTests: XCTestCase {
    func testMedian() {
        XCTAssertNil(Stats.median([]))
        XCTAssertEqual(Stats.median([3, 1, 2]), 2)
        XCTAssertEqual(Stats.median([4, 1, 3, 2]), 2.5)
    }

    func testRowRatiosPairByPair() {
        func run(_ dut: DUTKind, _ pair: Int, _ mpps: Double?) -> ThroughputRun {
            ThroughputRun(dut: dut, pair: pair, mpps: mpps, periodsMpps: [], warmupPeriods: 0, loadAverage: 0)
        }
        let config = BenchConfig(packed: false, frameSize: 64, queues: 1)
        let row = ThroughputRow(config: config, status: "ok", reason: nil, runs: [
            run(.ferry, 1, 6), run(.testpmd, 1, 4),
            run(.ferry, 2, 4), run(.testpmd, 2, 4),
            run(.ferry, 3, 2), run(.testpmd, 3, 4),
            run(.ferry, 4, nil), run(.testpmd, 4, 4),  // a failed run drops its pair
        ])
        XCTAssertEqual(row.pairs.map(\.ratio), [1.5, 1.0, 0.5])
        XCTAssertEqual(row.medianRatio, 1.0)
        XCTAssertEqual(row.minRatio, 0.5)
        XCTAssertEqual(row.maxRatio, 1.5)
        XCTAssertEqual(row.ferryMedianMpps, 4)
        XCTAssertEqual(row.testpmdMedianMpps, 4)
    }

    func testConfigTokens() {
        XCTAssertEqual(BenchConfig(token: "split-64"), BenchConfig(packed: false, frameSize: 64, queues: 1))
        XCTAssertEqual(BenchConfig(token: "packed-1518")?.name, "packed 1518B")
        XCTAssertEqual(BenchConfig(token: "split-64-2q")?.queues, 2)
        XCTAssertEqual(BenchConfig(token: "split-64-2q")?.token, "split-64-2q")
        XCTAssertNil(BenchConfig(token: "ring-64"))
        XCTAssertNil(BenchConfig(token: "split-20"))
        XCTAssertNil(BenchConfig(token: "split-64-two"))
    }

    func testFormat() {
        XCTAssertEqual(fmt(1.23456, 2), "1.23")
        XCTAssertEqual(fmt(2, 3), "2.000")
        XCTAssertEqual(fmt(.nan, 1), "n/a")
    }
}
