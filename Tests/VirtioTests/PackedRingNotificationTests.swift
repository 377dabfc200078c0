import FerryTestSupport
import Virtio
import XCTest

/// Event suppression in both directions (virtio 1.2 §2.8.10): kicks the driver sends, and
/// interrupts it asks for.
final class PackedRingNotificationTests: XCTestCase {
    private func addPublish(_ h: PackedRingHarness, _ count: Int, from cookie: UInt32 = 0) {
        XCTAssertEqual(h.add(count: count, firstCookie: cookie), count)
        h.ring.publish()
    }

    /// Moves both sides to `position` on the first lap by completing that many buffers.
    private func advance(_ h: PackedRingHarness, to position: Int) throws {
        addPublish(h, position, from: 500)
        for c in try h.popAll() { h.device.pushUsed(id: c.head, length: 0) }
        XCTAssertEqual(h.dequeue().count, position)
        _ = h.ring.kickNeeded()
    }

    // MARK: Kicks

    func testKickWithoutEventIdxFollowsTheDeviceFlags() {
        let h = PackedRingHarness(queueSize: 8)
        XCTAssertFalse(h.ring.kickNeeded(), "nothing published")
        addPublish(h, 1)
        XCTAssertTrue(h.ring.kickNeeded(), "ENABLE (0) in a zeroed area")
        XCTAssertFalse(h.ring.kickNeeded(), "nothing published since")
        h.device.setNoNotify(true)
        addPublish(h, 1, from: 1)
        XCTAssertFalse(h.ring.kickNeeded(), "DISABLE")
        h.device.setNoNotify(false)
        addPublish(h, 1, from: 2)
        XCTAssertTrue(h.ring.kickNeeded())
        // DESC is only meaningful with EVENT_IDX; without it the driver kicks.
        h.device.setKickEvent(position: 7, wrap: true)
        addPublish(h, 1, from: 3)
        XCTAssertTrue(h.ring.kickNeeded())
    }

    func testKickWithEventIdxWaitsForTheEventSlot() {
        let h = PackedRingHarness(queueSize: 8, eventIdx: true)
        h.device.setKickEvent(position: 2, wrap: true)
        addPublish(h, 2)
        XCTAssertFalse(h.ring.kickNeeded(), "slots 0 and 1 do not reach slot 2")
        addPublish(h, 1, from: 2)
        XCTAssertTrue(h.ring.kickNeeded(), "slot 2 was made available")
        addPublish(h, 1, from: 3)
        XCTAssertFalse(h.ring.kickNeeded(), "the event is behind")
    }

    func testKickEventOnTheNextLap() throws {
        let h = PackedRingHarness(queueSize: 8, eventIdx: true)
        try advance(h, to: 6)
        h.device.setKickEvent(position: 1, wrap: false)
        addPublish(h, 2)
        XCTAssertEqual(h.ring.availIndex, 0, "slots 6 and 7: now at slot 0 of lap 0")
        XCTAssertFalse(h.ring.kickNeeded())
        addPublish(h, 2, from: 2)
        XCTAssertTrue(h.ring.kickNeeded(), "slot 1 of lap 0 made available")
    }

    func testKickEventOnThePreviousLapCrossedByOneBatch() throws {
        let h = PackedRingHarness(queueSize: 8, eventIdx: true)
        try advance(h, to: 6)
        h.device.setKickEvent(position: 7, wrap: true)
        addPublish(h, 4)
        XCTAssertTrue(h.ring.kickNeeded(), "slots 6, 7 | 0, 1: slot 7 of lap 1 is among them")
    }

    func testKickEventAtAnOddSize() throws {
        let h = PackedRingHarness(queueSize: 255, eventIdx: true)
        try advance(h, to: 250)
        h.device.setKickEvent(position: 3, wrap: false)
        addPublish(h, 8)
        XCTAssertFalse(h.ring.kickNeeded(), "slots 250...254, 0...2")
        addPublish(h, 1, from: 8)
        XCTAssertTrue(h.ring.kickNeeded(), "slot 3 of lap 0")
    }

    func testAWholeLapAlwaysKicks() throws {
        let h = PackedRingHarness(queueSize: 4, eventIdx: true)
        h.device.setKickEvent(position: 3, wrap: false) // a lap away
        addPublish(h, 4)
        XCTAssertTrue(h.ring.kickNeeded())
    }

    func testEventIdxWithDisableDoesNotKick() {
        let h = PackedRingHarness(queueSize: 8, eventIdx: true)
        h.device.setNoNotify(true)
        addPublish(h, 8)
        XCTAssertFalse(h.ring.kickNeeded())
    }

    func testKickIsDecidedOncePerPublication() {
        let h = PackedRingHarness(queueSize: 8, eventIdx: true)
        h.device.setKickEvent(position: 0, wrap: true)
        h.add(count: 1, firstCookie: 0)
        XCTAssertFalse(h.ring.kickNeeded(), "added but not published")
        h.ring.publish()
        XCTAssertTrue(h.ring.kickNeeded())
        XCTAssertFalse(h.ring.kickNeeded())
    }

    // MARK: Interrupts

    func testDisableAndEnableWithoutEventIdx() throws {
        let h = PackedRingHarness(queueSize: 8)
        h.ring.disableInterrupts()
        XCTAssertEqual(h.device.driverEventFlags, PackedRingFlags.eventFlagsDisable)
        addPublish(h, 2)
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 0)
        XCTAssertFalse(h.device.shouldInterrupt())
        XCTAssertTrue(h.ring.enableInterrupts(), "a used descriptor already waits: poll again")
        XCTAssertEqual(h.device.driverEventFlags, PackedRingFlags.eventFlagsEnable)
        XCTAssertEqual(h.dequeue().count, 1)
        XCTAssertFalse(h.ring.enableInterrupts(), "nothing waits: safe to sleep")
        h.device.pushUsed(id: c[1].head, length: 0)
        XCTAssertTrue(h.device.shouldInterrupt())
    }

    func testEnableWithEventIdxAsksForTheNextUsedSlot() throws {
        let h = PackedRingHarness(queueSize: 8, eventIdx: true)
        try advance(h, to: 7)
        h.ring.disableInterrupts()
        XCTAssertEqual(h.device.driverEventFlags, PackedRingFlags.eventFlagsDisable)
        XCTAssertFalse(h.ring.enableInterrupts())
        XCTAssertEqual(h.device.driverEventFlags, PackedRingFlags.eventFlagsDesc)
        XCTAssertEqual(h.device.driverEventOffWrap, 0x8007, "slot 7, used wrap counter 1")
        _ = h.device.shouldInterrupt() // start a fresh window
        addPublish(h, 3)
        let c = try h.popAll()
        h.device.pushUsed(id: c[0].head, length: 0)
        XCTAssertTrue(h.device.shouldInterrupt(), "slot 7 was used")
        h.device.pushUsed(id: c[1].head, length: 0)
        XCTAssertFalse(h.device.shouldInterrupt(), "the event is behind")
        XCTAssertEqual(h.dequeue().count, 2)
        XCTAssertFalse(h.ring.enableInterrupts())
        XCTAssertEqual(h.device.driverEventOffWrap, 0x0001, "slot 1 of lap 0")
        h.device.pushUsed(id: c[2].head, length: 0)
        XCTAssertTrue(h.device.shouldInterrupt())
    }
}
