import XCTest
import VirtioUser

/// PacketPool and PoolCache: buffers are indices, and no index is ever lost or handed out
/// twice, however gets and puts straddle the cache's refill and spill points.
///
/// The pool holds at least the buffers asked for (it may take all the memory left, to grow in
/// place), so every count below is read from `pool.count`, never assumed.
final class PacketPoolTests: XCTestCase {
    /// Kept alive by the test case, whatever the pool retains.
    private var memory: SharedMemory!

    override func setUpWithError() throws {
        memory = try SharedMemory(size: 2 * SharedMemory.hugepageSize, name: "ferry-vutests-pool")
    }

    override func tearDown() {
        memory = nil
        super.tearDown()
    }

    private func drainPool(_ pool: PacketPool) -> [UInt32] {
        var out = [UInt32](repeating: 0, count: pool.count + 1)
        let n = pool.take(into: &out, count: out.count)
        return Array(out.prefix(n))
    }

    private func takeSome(_ pool: PacketPool, _ n: Int) -> [UInt32] {
        var out = [UInt32](repeating: 0, count: n)
        let k = pool.take(into: &out, count: n)
        return Array(out.prefix(k))
    }

    /// Asserts `indices` is every index of the pool exactly once.
    private func assertExactlyOnce(_ indices: [UInt32], count: Int, _ context: String,
                                   file: StaticString = #filePath, line: UInt = #line) {
        var seen = [Int](repeating: 0, count: count)
        var outOfRange = 0
        for i in indices {
            if Int(i) < count { seen[Int(i)] += 1 } else { outOfRange += 1 }
        }
        XCTAssertEqual(outOfRange, 0, "\(context): indices out of range", file: file, line: line)
        let missing = seen.indices.filter { seen[$0] == 0 }
        let doubled = seen.indices.filter { seen[$0] > 1 }
        XCTAssertEqual(missing.count, 0, "\(context): lost indices \(missing.prefix(10))", file: file, line: line)
        XCTAssertEqual(doubled.count, 0, "\(context): duplicated indices \(doubled.prefix(10))", file: file, line: line)
    }

    func testLayoutIsCarvedFromSharedMemory() throws {
        let before = memory.remaining
        let pool = try PacketPool(memory: memory, count: 100)
        XCTAssertGreaterThanOrEqual(pool.count, 100)
        XCTAssertEqual(pool.available, pool.count)
        XCTAssertEqual(pool.stride, PacketPool.defaultHeadroom + PacketPool.defaultDataRoom)
        XCTAssertEqual(UInt(bitPattern: pool.base) % 64, 0)
        XCTAssertTrue(memory.contains(address: UInt64(UInt(bitPattern: pool.base)), length: pool.count * pool.stride))
        XCTAssertLessThanOrEqual(memory.remaining, before - pool.count * pool.stride)

        var cache = pool.makeCache()
        defer { cache.release() }
        XCTAssertEqual(cache.dataRoom, pool.dataRoom)
        for i in [0, 1, UInt32(pool.count - 1)] {
            XCTAssertEqual(cache.data(i), pool.base + Int(i) * pool.stride + pool.headroom)
            XCTAssertEqual(cache.address(i), UInt64(UInt(bitPattern: cache.data(i))))
        }
    }

    func testTooSmallMemoryThrows() throws {
        let small = try SharedMemory(size: 1)
        XCTAssertThrowsError(try PacketPool(memory: small, count: small.size / 2048 + 1)) { error in
            guard case .exhausted? = error as? SharedMemoryError else { return XCTFail("got \(error)") }
        }
    }

    func testTakeAndGiveCount() throws {
        let pool = try PacketPool(memory: memory, count: 64)
        let n = pool.count
        XCTAssertEqual(pool.available, n)
        var out = [UInt32](repeating: 0, count: 10)
        XCTAssertEqual(pool.take(into: &out, count: 10), 10)
        XCTAssertEqual(Set(out), Set(0..<10), "low indices first")
        XCTAssertEqual(pool.available, n - 10)
        pool.give(out, count: 4)
        XCTAssertEqual(pool.available, n - 6)
        var rest = [UInt32](repeating: 0, count: n + 10)
        XCTAssertEqual(pool.take(into: &rest, count: n + 10), n - 6, "take stops at what is there")
        XCTAssertEqual(pool.available, 0)
        XCTAssertEqual(pool.take(into: &rest, count: 5), 0)
        assertExactlyOnce(Array(out[4..<10]) + Array(rest.prefix(n - 6)), count: n, "after take/give")
    }

    func testGiveIgnoresIndicesOutsideThePool() throws {
        let pool = try PacketPool(memory: memory, count: 16)
        let n = pool.count
        let out = takeSome(pool, 2)
        let bogus: [UInt32] = [UInt32(n), UInt32(n + 1), UInt32(n + 1000), UInt32.max]
        pool.give(bogus, count: bogus.count)
        XCTAssertEqual(pool.available, n - 2, "out-of-range indices must not enter the pool")
        pool.give(out, count: 2)
        XCTAssertEqual(pool.available, n)
        assertExactlyOnce(drainPool(pool), count: n, "after bogus gives")
    }

    /// The cache holds at least 64, refills half a cache at a time and spills half when full.
    func testCacheRefillsAndSpillsByHalves() throws {
        let pool = try PacketPool(memory: memory, count: 200)
        let n = pool.count
        var cache = pool.makeCache(capacity: 1)  // raised to 64
        defer { cache.release() }
        XCTAssertEqual(cache.cachedCount, 0)
        guard let first = cache.get() else { return XCTFail("empty") }
        XCTAssertEqual(pool.available, n - 32, "refill takes capacity / 2")
        XCTAssertEqual(cache.cachedCount, 31)
        cache.put(first)
        var held: [UInt32] = []
        for _ in 0..<32 { held.append(cache.get()!) }
        XCTAssertEqual(cache.cachedCount, 0)
        XCTAssertEqual(pool.available, n - 32, "no refill until the cache is empty")
        for i in held { cache.put(i) }
        for i in takeSome(pool, 32) { cache.put(i) }
        XCTAssertEqual(cache.cachedCount, 64, "full: 64")
        XCTAssertEqual(pool.available, n - 64)
        cache.put(takeSome(pool, 1)[0])
        XCTAssertEqual(cache.cachedCount, 33, "spill gives back capacity / 2 first")
        XCTAssertEqual(pool.available, n - 65 + 32)
        cache.flush()
        XCTAssertEqual(cache.cachedCount, 0)
        XCTAssertEqual(pool.available, n)
        assertExactlyOnce(drainPool(pool), count: n, "after refill and spill")
    }

    /// Get everything through the cache (one refill per 32), then put it all back (spills).
    func testCacheHandsOutEveryIndexExactlyOnce() throws {
        let pool = try PacketPool(memory: memory, count: 1000)
        let n = pool.count
        var cache = pool.makeCache(capacity: 64)
        defer { cache.release() }
        var got: [UInt32] = []
        while let i = cache.get() { got.append(i) }
        XCTAssertEqual(got.count, n)
        assertExactlyOnce(got, count: n, "get until empty")
        XCTAssertEqual(pool.available, 0)
        XCTAssertNil(cache.get(), "both empty: nil, again")

        for i in got { cache.put(i) }
        XCTAssertEqual(cache.cachedCount + pool.available, n)
        cache.flush()
        XCTAssertEqual(pool.available, n)
        assertExactlyOnce(drainPool(pool), count: n, "after putting all back")
    }

    /// A long mixed run of gets and puts, by a fixed pseudo-random pattern, across two caches
    /// sharing one pool: at the end every index is in exactly one place.
    func testInterleavedGetsAndPutsAcrossTwoCachesLoseAndDuplicateNothing() throws {
        let pool = try PacketPool(memory: memory, count: 300)
        let count = pool.count
        // Keep only ~300 buffers in play, so the run crosses empty often.
        let parked = takeSome(pool, max(0, count - 300))
        var caches = [pool.makeCache(capacity: 64), pool.makeCache(capacity: 100)]
        defer { for i in caches.indices { caches[i].release() } }
        var outstanding: [UInt32] = []
        var rng: UInt64 = 0x9e37_79b9_7f4a_7c15
        func next() -> UInt64 {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
            return rng
        }
        for step in 0..<40_000 {
            let r = next()
            let c = Int(r & 1)
            // Biased towards gets in the first half and puts in the second, so the run crosses
            // empty and full in both caches and in the pool.
            let wantGet = (r >> 8) % 100 < (step < 20_000 ? 60 : 40)
            if wantGet {
                if let i = caches[c].get() { outstanding.append(i) }
            } else if !outstanding.isEmpty {
                let k = Int((r >> 16) % UInt64(outstanding.count))
                outstanding.swapAt(k, outstanding.count - 1)
                caches[c].put(outstanding.removeLast())
            }
            if step % 5000 == 4999 {
                XCTAssertEqual(parked.count + outstanding.count + caches[0].cachedCount + caches[1].cachedCount
                                + pool.available, count, "conservation at step \(step)")
            }
        }
        for i in outstanding { caches[0].put(i) }
        caches[0].flush()
        caches[1].flush()
        pool.give(parked, count: parked.count)
        XCTAssertEqual(pool.available, count)
        assertExactlyOnce(drainPool(pool), count: count, "after the mixed run")
    }
}

/// The low-water signal that lets the control thread sleep instead of watching the pool.
final class PacketPoolLowWaterTests: XCTestCase {
    private var memory: SharedMemory!
    private var event: EventFD!

    override func setUpWithError() throws {
        memory = try SharedMemory(size: 2 * SharedMemory.hugepageSize, name: "ferry-vutests-lowwater")
        event = try EventFD.make()
    }

    override func tearDown() {
        event.close()
        memory = nil
        super.tearDown()
    }

    private func take(_ pool: PacketPool, _ n: Int) -> [UInt32] {
        var out = [UInt32](repeating: 0, count: n)
        let k = pool.take(into: &out, count: n)
        return Array(out.prefix(k))
    }

    func testSignalsOnceWhenATakeCrossesTheThresholdAndAgainOnlyWhenRearmed() throws {
        let pool = try PacketPool(memory: memory, count: 64)
        let threshold = pool.count / 8
        pool.armLowWater(below: threshold, event: event)
        XCTAssertNil(event.drain(), "a full pool does not signal")

        // Down to exactly the threshold: not below it yet.
        var held = take(pool, pool.count - threshold)
        XCTAssertEqual(pool.available, threshold)
        XCTAssertNil(event.drain(), "at the threshold, not below it")

        held += take(pool, 1)
        XCTAssertEqual(event.drain(), 1, "the take that goes below signals")
        held += take(pool, 1)
        XCTAssertNil(event.drain(), "one signal per crossing, not one per take")

        // Re-arming while still below signals at once: the pool is still low.
        pool.armLowWater(below: threshold, event: event)
        XCTAssertEqual(event.drain(), 1)

        // Buffers back above the threshold, re-armed: silent until the next crossing.
        pool.give(held, count: held.count)
        pool.armLowWater(below: threshold, event: event)
        XCTAssertNil(event.drain())
        let again = take(pool, pool.count - threshold + 1)
        XCTAssertEqual(again.count, pool.count - threshold + 1)
        XCTAssertEqual(event.drain(), 1)
    }

    func testNoSignalWithoutArming() throws {
        let pool = try PacketPool(memory: memory, count: 64)
        let all = take(pool, pool.count)
        XCTAssertEqual(all.count, pool.count)
        XCTAssertEqual(pool.available, 0)
        XCTAssertNil(event.drain())
    }
}
