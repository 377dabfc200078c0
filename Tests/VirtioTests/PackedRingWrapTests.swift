import FerryTestSupport
import Virtio
import XCTest

/// Both wrap counters flip over many laps, at sizes that are and are not powers of two, and
/// every buffer comes back exactly once (virtio 1.2 §2.8.1).
final class PackedRingWrapTests: XCTestCase {
    func testManyLapsAtSize255() throws { try runLapsChecked(255) }
    func testManyLapsAtSize256() throws { try runLapsChecked(256) }
    func testManyLapsAtSize1025() throws { try runLapsChecked(1025) }

    private func runLapsChecked(_ size: UInt16) throws {
        try runOrdered(queueSize: size, laps: 12, inOrder: false)
        try runOrdered(queueSize: size, laps: 12, inOrder: true)
        try runShuffled(queueSize: size, laps: 12)
    }

    /// The device completes in the order it took: cookies come back exactly in add order.
    private func runOrdered(queueSize: UInt16, laps: Int, inOrder: Bool) throws {
        try runCounted(queueSize: queueSize, laps: laps, inOrder: inOrder, shuffle: false)
    }

    /// The device completes each burst shuffled: every cookie exactly once.
    private func runShuffled(queueSize: UInt16, laps: Int) throws {
        try runCounted(queueSize: queueSize, laps: laps, inOrder: false, shuffle: true)
    }

    /// Drives `laps` laps of traffic: bursts of chains of 1...4 descriptors (so chain heads land
    /// everywhere and chains cross the ring end), completed by the device in order, shuffled,
    /// or (IN_ORDER) sometimes as one batch. Cookies are tracked by buffer id (unique while in
    /// flight); checks cookies, lengths, counters and that both wrap counters flipped every lap.
    private func runCounted(queueSize: UInt16, laps: Int, inOrder: Bool, shuffle: Bool,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let h = PackedRingHarness(queueSize: queueSize, inOrder: inOrder)
        var rng = SplitMix(seed: UInt64(queueSize) &* 31 &+ (inOrder ? 1 : 0) &+ (shuffle ? 2 : 0))
        var idToCookie: [UInt16: UInt32] = [:]
        var nextCookie: UInt32 = 0
        var completedByDevice: [UInt32] = []
        var received: [Completion] = []
        var slotsAdded = 0
        var availFlips = 0, usedFlips = 0
        var lastAvailWrap = h.ring.availIndex >> 15, lastUsedWrap = h.ring.lastUsedIndex >> 15
        while slotsAdded < laps * Int(queueSize) {
            var addedThisBurst: [UInt32] = []
            var burst = Int(rng.next() % UInt64(queueSize)) + 1
            while burst > 0 {
                let length = min(Int(rng.next() % 4) + 1, Int(queueSize))
                guard h.ring.numFree >= length else { break }
                XCTAssertTrue(h.addChain(PackedRingHarness.segments(length, length: 16, writable: 1), cookie: nextCookie),
                              file: file, line: line)
                addedThisBurst.append(nextCookie)
                nextCookie &+= 1
                slotsAdded += length
                burst -= length
                let wrap = h.ring.availIndex >> 15
                if wrap != lastAvailWrap { availFlips += 1; lastAvailWrap = wrap }
            }
            h.ring.publish()
            var chains = try h.popAll()
            XCTAssertEqual(chains.count, addedThisBurst.count, file: file, line: line)
            for (c, cookie) in zip(chains, addedThisBurst) {
                XCTAssertNil(idToCookie[c.head], "an id is never in flight twice", file: file, line: line)
                idToCookie[c.head] = cookie
            }
            if shuffle { rng.shuffle(&chains) }
            if inOrder && chains.count > 1 && rng.next() % 2 == 0 {
                for c in chains { completedByDevice.append(idToCookie.removeValue(forKey: c.head)!) }
                XCTAssertEqual(h.device.pushUsedBatch(lastID: chains.last!.head, length: 16), chains.count,
                               file: file, line: line)
            } else {
                for c in chains {
                    completedByDevice.append(idToCookie.removeValue(forKey: c.head)!)
                    h.device.pushUsed(id: c.head, length: 16)
                }
            }
            while h.ring.inFlight > 0 {
                let got = h.dequeue(max: Int(rng.next() % 8) + 1)
                XCTAssertFalse(got.isEmpty, "completed chains must be reported", file: file, line: line)
                if got.isEmpty { return }
                received += got
                let wrap = h.ring.lastUsedIndex >> 15
                if wrap != lastUsedWrap { usedFlips += 1; lastUsedWrap = wrap }
            }
            XCTAssertEqual(h.ring.numFree, Int(queueSize), file: file, line: line)
            XCTAssertEqual(h.ring.lastUsedIndex, h.ring.availIndex, "both sides meet", file: file, line: line)
            XCTAssertEqual(h.device.vringBase, UInt32(h.ring.availIndex), file: file, line: line)
        }
        XCTAssertEqual(received.map(\.cookie), completedByDevice,
                       "every cookie exactly once, in the device's completion order", file: file, line: line)
        if !shuffle {
            XCTAssertEqual(received.map(\.cookie), Array(0..<nextCookie), "add order", file: file, line: line)
        }
        // Every chain reports 16: batched chains other than the batch's last were used
        // completely (§2.8, "In-order use of descriptors"), and 16 is what was posted.
        XCTAssertTrue(received.allSatisfy { $0.length == 16 }, file: file, line: line)
        XCTAssertGreaterThanOrEqual(availFlips, laps - 1, file: file, line: line)
        XCTAssertGreaterThanOrEqual(usedFlips, laps - 1, file: file, line: line)
        XCTAssertEqual(h.ring.invalidUsedIds, 0, file: file, line: line)
        XCTAssertEqual(h.ring.invalidUsedLengths, 0, file: file, line: line)
    }

    /// Buffers held by the device across laps: the driver keeps lapping the ring around a few
    /// long-lived buffers (their head slots get reused) and still completes them correctly.
    func testLongLivedBuffersWhileTheRingLaps() throws {
        for size: UInt16 in [5, 255] {
            let h = PackedRingHarness(queueSize: size)
            h.add(count: 2, firstCookie: 1000, length: 64, writable: true)
            h.ring.publish()
            let held = try h.popAll()
            var cookie: UInt32 = 0
            for _ in 0..<(4 * Int(size)) {
                XCTAssertEqual(h.add(count: 1, firstCookie: cookie), 1)
                h.ring.publish()
                let c = try h.popAll()
                h.device.pushUsed(id: c[0].head, length: 0)
                XCTAssertEqual(h.dequeue().map(\.cookie), [cookie])
                cookie += 1
            }
            h.device.pushUsed(id: held[1].head, length: 5)
            h.device.pushUsed(id: held[0].head, length: 6)
            XCTAssertEqual(h.dequeue(), [Completion(cookie: 1001, length: 5), Completion(cookie: 1000, length: 6)])
            XCTAssertEqual(h.ring.numFree, Int(size))
            XCTAssertEqual(h.ring.invalidUsedIds, 0)
        }
    }
}
