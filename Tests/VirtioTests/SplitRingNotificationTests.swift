import FerryTestSupport
import Virtio
import XCTest

/// Kicks and interrupts (virtio 1.2 §2.7.7, §2.7.10, §2.7.13.4).
final class SplitRingNotificationTests: XCTestCase {
    func testKickWithoutEventIdxFollowsNoNotify() {
        let h = RingHarness(queueSize: 8)
        XCTAssertFalse(h.ring.kickNeeded(), "nothing published")
        h.add(count: 1, firstCookie: 0)
        XCTAssertFalse(h.ring.kickNeeded(), "added but not published")
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded())
        XCTAssertFalse(h.ring.kickNeeded(), "nothing new since the last call")
        h.device.setNoNotify(true)
        h.add(count: 1, firstCookie: 1)
        h.ring.publish()
        XCTAssertFalse(h.ring.kickNeeded())
        h.device.setNoNotify(false)
        h.add(count: 1, firstCookie: 2)
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded())
    }

    func testKickWithEventIdx() {
        let h = RingHarness(queueSize: 8, eventIdx: true)
        h.device.setNoNotify(true) // ignored with EVENT_IDX
        h.add(count: 1, firstCookie: 0)
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded(), "avail_event 0 lies in [0, 1)")
        h.device.setAvailEvent(5)
        h.add(count: 2, firstCookie: 1)
        h.ring.publish()
        XCTAssertFalse(h.ring.kickNeeded(), "old 1, new 3: 5 not passed")
        h.add(count: 3, firstCookie: 3)
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded(), "old 3, new 6: 5 passed")
        h.device.setAvailEvent(6)
        h.add(count: 1, firstCookie: 6)
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded(), "old 6, new 7: exactly the event")
        h.add(count: 1, firstCookie: 7)
        h.ring.publish()
        XCTAssertFalse(h.ring.kickNeeded(), "old 7, new 8: 6 already passed")
    }

    func testNeedEventArithmeticWraps() {
        XCTAssertTrue(VringFlags.needEvent(eventIndex: 0, new: 1, old: 0))
        XCTAssertFalse(VringFlags.needEvent(eventIndex: 1, new: 1, old: 0))
        XCTAssertTrue(VringFlags.needEvent(eventIndex: 65535, new: 2, old: 65534))
        XCTAssertTrue(VringFlags.needEvent(eventIndex: 1, new: 2, old: 65534))
        XCTAssertFalse(VringFlags.needEvent(eventIndex: 2, new: 2, old: 65534))
        XCTAssertFalse(VringFlags.needEvent(eventIndex: 65533, new: 2, old: 65534))
        XCTAssertFalse(VringFlags.needEvent(eventIndex: 7, new: 5, old: 5))
    }

    /// The ring's own indices cross 65535 between two kicks.
    func testKickWithEventIdxAcrossIndexWrap() throws {
        let h = RingHarness(queueSize: 8, eventIdx: true)
        // Drive avail idx to 65534 through complete cycles.
        var cookie: UInt32 = 0
        while h.ring.availIndex != 65534 {
            let n = min(8, Int(65534 - h.ring.availIndex))
            h.add(count: n, firstCookie: cookie)
            cookie &+= UInt32(n)
            h.ring.publish()
            for chain in try h.popAll() { h.device.pushUsed(id: chain.head, length: 0) }
            XCTAssertEqual(h.dequeue().count, n)
        }
        _ = h.ring.kickNeeded() // old = 65534 from here
        h.device.setAvailEvent(65535)
        h.add(count: 3, firstCookie: 0)
        h.ring.publish()
        XCTAssertEqual(h.ring.availIndex, 1)
        XCTAssertTrue(h.ring.kickNeeded(), "old 65534, new 1: 65535 passed")
        h.device.setAvailEvent(2)
        h.add(count: 1, firstCookie: 3)
        h.ring.publish()
        XCTAssertFalse(h.ring.kickNeeded(), "old 1, new 2: 2 not passed")
    }

    func testInterruptFlagsWithoutEventIdx() throws {
        let h = RingHarness(queueSize: 8)
        h.ring.disableInterrupts()
        XCTAssertEqual(h.device.availFlags, VringFlags.availNoInterrupt)
        h.add(count: 2, firstCookie: 0)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[0].head, length: 0)
        XCTAssertFalse(h.device.driverWantsInterrupt())
        XCTAssertTrue(h.ring.enableInterrupts(), "an entry is already pending: do not sleep")
        XCTAssertEqual(h.device.availFlags, 0)
        XCTAssertTrue(h.device.driverWantsInterrupt())
        XCTAssertEqual(h.dequeue().count, 1)
        XCTAssertFalse(h.ring.enableInterrupts(), "nothing pending")
    }

    func testInterruptsWithEventIdx() throws {
        let h = RingHarness(queueSize: 8, eventIdx: true)
        h.add(count: 4, firstCookie: 0)
        h.ring.publish()
        let chains = try h.popAll()
        h.device.pushUsed(id: chains[0].head, length: 0)
        XCTAssertEqual(h.dequeue().count, 1)
        h.ring.disableInterrupts()
        XCTAssertEqual(h.device.availFlags, 0, "flags stay 0 with EVENT_IDX")
        XCTAssertEqual(h.device.usedEvent, 0, "just behind lastUsedIndex 1")
        _ = h.device.shouldInterrupt()
        h.device.pushUsed(id: chains[1].head, length: 0)
        XCTAssertFalse(h.device.shouldInterrupt())
        XCTAssertTrue(h.ring.enableInterrupts(), "entry 1 already pending")
        XCTAssertEqual(h.device.usedEvent, 1)
        XCTAssertEqual(h.dequeue().count, 1)
        XCTAssertFalse(h.ring.enableInterrupts())
        XCTAssertEqual(h.device.usedEvent, 2)
        h.device.pushUsed(id: chains[2].head, length: 0)
        XCTAssertTrue(h.device.shouldInterrupt(), "used idx moved past used_event 2")
        h.device.pushUsed(id: chains[3].head, length: 0)
        XCTAssertFalse(h.device.shouldInterrupt(), "one interrupt per enable")
    }

    func testPendingUsedIsClampedToInFlight() throws {
        let h = RingHarness(queueSize: 8)
        h.add(count: 2, firstCookie: 0)
        h.ring.publish()
        h.device.forceUsedIndex(40)
        XCTAssertEqual(h.ring.pendingUsed(), 2)
        h.ring.disableInterrupts()
        XCTAssertTrue(h.ring.enableInterrupts())
    }
}
