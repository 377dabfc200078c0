import XCTest
@testable import Forwarding

/// The per-stream counters the workers publish for the control thread.
final class CountersTests: XCTestCase {
    func testPublishedCountersRoundTripEveryField() {
        let slots = PublishedCounters.allocate(count: 2)
        defer { slots.deallocate() }
        let a = PublishedCounters(slot: slots)
        let b = PublishedCounters(slot: slots + PublishedCounters.stride)
        XCTAssertEqual(a.read().rxPackets, 0, "slots start zeroed")
        let c = StreamCounters(rxPackets: 1, rxBytes: 2, txPackets: 3, txBytes: 4, txDropped: 5, rxErrors: 6)
        a.publish(c)
        let r = a.read()
        XCTAssertEqual([r.rxPackets, r.rxBytes, r.txPackets, r.txBytes, r.txDropped, r.rxErrors], [1, 2, 3, 4, 5, 6])
        let other = b.read()
        XCTAssertEqual([other.rxPackets, other.rxBytes, other.txPackets, other.txBytes, other.txDropped, other.rxErrors],
                       [0, 0, 0, 0, 0, 0], "neighbouring slots do not overlap")
        XCTAssertLessThanOrEqual(PublishedCounters.fields * 8, PublishedCounters.stride)
    }
}
