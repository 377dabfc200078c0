@testable import BenchCore
import XCTest

/// The rates a job reports: the latency part's maximum is the arrival rate, not the offered one.
final class TrafficJobTests: XCTestCase {
    func testArrivalRateCountsFramesBackDuringTheWindow() {
        // 2 s window: 9 M offered (3 M sent, 6 M found the RX ring full), 2.5 M sent in the
        // window came back, and 4 M frames came back during it (some sent in the warm-up).
        let job = TrafficJob(mode: .fixedRate(4.5e6), frameLength: 64, warmupNs: 1_000_000_000,
                             durationNs: 2_000_000_000, drainNs: 50_000_000)
        job.sentMeasured = 3_000_000
        job.rxRingFull = 6_000_000
        job.receivedMeasured = 2_500_000
        job.arrivedInWindow = 4_000_000
        XCTAssertEqual(job.offeredRate, 4.5e6)
        XCTAssertEqual(job.receivedRate, 1.25e6)
        XCTAssertEqual(job.arrivalRate, 2e6)
        XCTAssertEqual(job.lost, 500_000)
    }
}
