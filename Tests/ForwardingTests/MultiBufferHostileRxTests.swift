import XCTest
import FerryTestSupport
import Virtio
import VirtioUser
@testable import Forwarding

/// MRG_RXBUF against a device that lies in `num_buffers` (virtio 1.2 §5.1.6.4): Ferry's RX
/// queue on a split ring, with the test playing the device by hand. A malformed frame is
/// dropped and counted, every one of its buffers goes back to the pool, and the frames around
/// it are still received intact.
final class MultiBufferHostileRxTests: XCTestCase {
    private let headerSize = 12
    private let queueSize: UInt16 = 64

    private struct Harness {
        var memory: SharedMemory
        var pool: PacketPool
        var cache: PoolCache
        var ringMemory: UnsafeMutableRawPointer
        var ring: UnsafeMutablePointer<SplitRing>
        var rx: RxQueue
        var device: DeviceSplitRing
    }

    private func makeHarness(mergeable: Bool, maxFrameLength: Int = 9216) throws -> Harness {
        let memory = try SharedMemory(size: 4 * SharedMemory.hugepageSize, name: "ferry-mbhostile")
        let pool = try PacketPool(memory: memory, count: 600)
        var cache = pool.makeCache(capacity: 128)
        let ringMemory = UnsafeMutableRawPointer.allocate(byteCount: SplitRing.memorySize(queueSize: Int(queueSize)),
                                                          alignment: SplitRing.memoryAlignment)
        ringMemory.initializeMemory(as: UInt8.self, repeating: 0, count: SplitRing.memorySize(queueSize: Int(queueSize)))
        let ring = UnsafeMutablePointer<SplitRing>.allocate(capacity: 1)
        ring.initialize(to: SplitRing(memory: ringMemory, queueSize: queueSize, eventIdx: false, inOrder: false))
        var rx = RxQueue(ring: .split(ring), kickFD: try EventFD.make(), callFD: try EventFD.make(),
                         headerSize: headerSize, dataRoom: pool.dataRoom, mergeable: mergeable, burst: 32,
                         maxFrameLength: maxFrameLength)
        rx.refill(cache: &cache)
        // Ferry's addresses are its own virtual addresses: the "device" maps them 1:1.
        let device = DeviceSplitRing(queueSize: queueSize, desc: ring.pointee.descTable, avail: ring.pointee.availRing,
                                     used: ring.pointee.usedRing) { address, _ in UnsafeMutableRawPointer(bitPattern: UInt(address)) }
        return Harness(memory: memory, pool: pool, cache: cache, ringMemory: ringMemory, ring: ring, rx: rx, device: device)
    }

    /// Writes `bytes` into the next RX buffer; `numBuffers` into its header when `header`.
    private func deliver(_ h: inout Harness, frameBytes: [UInt8], numBuffers: UInt16?, publish: Bool = true) throws {
        let chain = try XCTUnwrap(try h.device.popAvail())
        var out: [UInt8] = []
        if let nb = numBuffers {
            out = [UInt8](repeating: 0, count: headerSize)
            out[10] = UInt8(nb & 0xff); out[11] = UInt8(nb >> 8)
        }
        out += frameBytes
        let written = chain.writeWritable(out)
        XCTAssertEqual(written, out.count)
        if publish {
            h.device.pushUsed(id: chain.head, length: UInt32(written))
        } else {
            h.device.writeUsedEntry(slot: h.device.usedIndex, id: UInt32(chain.head), length: UInt32(written))
        }
    }

    private func frame(_ length: Int, _ seed: UInt8) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    }

    private func receive(_ h: inout Harness, max: Int = 32) -> [[UInt8]] {
        let bufs = UnsafeMutablePointer<UInt32>.allocate(capacity: max)
        let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: max)
        defer { bufs.deallocate(); lengths.deallocate() }
        let n = h.rx.receive(bufs: bufs, lengths: lengths, max: max, cache: &h.cache)
        var out: [[UInt8]] = []
        for i in 0..<n {
            out.append(MultiBufferLoopbackTests.read(head: bufs[i], length: Int(lengths[i]), cache: h.cache))
            h.cache.freeChain(bufs[i])
        }
        return out
    }

    /// Every buffer is in the pool, the cache or posted on the ring: none lost, and every
    /// free one unlinked.
    private func assertNoBufferLost(_ h: Harness, file: StaticString = #filePath, line: UInt = #line) {
        var posted = 0
        h.ring.pointee.forEachInFlight { head in
            var b = head
            while b != PacketPool.noBuffer { posted += 1; b = h.pool.next(of: b) }
        }
        XCTAssertEqual(h.pool.available + h.cache.cachedCount + posted, h.pool.count, "no buffer lost", file: file, line: line)
    }

    private func tearDown(_ h: inout Harness) {
        h.ring.pointee.forEachInFlight { h.cache.freeChain($0) }
        h.cache.release()
        h.ring.deinitialize(count: 1)
        h.ring.deallocate()
        h.ringMemory.deallocate()
        withExtendedLifetime(h.memory) {}
    }

    /// The forwarding loop receives without refilling and restocks after TX (`replenish`):
    /// a receive with `refill: false` leaves the taken descriptors free while at least half the
    /// ring stays posted, `replenish` posts them once `refillThreshold` are free and not
    /// before, and the default receive refills itself.
    func testReceiveWithoutRefillLeavesRestockingToReplenish() throws {
        var h = try makeHarness(mergeable: true)
        defer { tearDown(&h) }
        XCTAssertEqual(h.ring.pointee.numFree, 0, "every slot posted at start")
        let threshold = h.rx.refillThreshold
        XCTAssertEqual(threshold, 16, "a 64-slot ring restocks at a quarter")
        XCTAssertEqual(try deliverAndReceive(&h, threshold - 1, refill: false), threshold - 1)
        XCTAssertEqual(h.ring.pointee.numFree, threshold - 1)
        h.rx.replenish(cache: &h.cache)
        XCTAssertEqual(h.ring.pointee.numFree, threshold - 1, "below the threshold: nothing posted")
        XCTAssertEqual(try deliverAndReceive(&h, 1, refill: false), 1)
        XCTAssertEqual(h.ring.pointee.numFree, threshold, "receive alone does not restock")
        h.rx.replenish(cache: &h.cache)
        XCTAssertEqual(h.ring.pointee.numFree, 0, "at the threshold: every free slot posted")
        XCTAssertEqual(try deliverAndReceive(&h, threshold, refill: true), threshold)
        XCTAssertEqual(h.ring.pointee.numFree, 0, "the default receive restocks itself")
        // Deferred only while half the ring stays posted (`maxDeferredFree`, 32 of 64).
        XCTAssertEqual(h.rx.maxDeferredFree, 32)
        XCTAssertEqual(try deliverAndReceive(&h, 32, refill: false), 32)
        XCTAssertEqual(h.ring.pointee.numFree, 32, "half the ring free: still deferred")
        XCTAssertEqual(try deliverAndReceive(&h, 1, refill: false), 1)
        XCTAssertEqual(h.ring.pointee.numFree, 0, "over half free: restocked despite refill: false")
        assertNoBufferLost(h)
    }

    /// Delivers `count` one-buffer frames and receives them, freeing what comes back.
    private func deliverAndReceive(_ h: inout Harness, _ count: Int, refill: Bool) throws -> Int {
        for k in 0..<count { try deliver(&h, frameBytes: frame(60, UInt8(k)), numBuffers: 1) }
        let bufs = UnsafeMutablePointer<UInt32>.allocate(capacity: 32)
        let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: 32)
        defer { bufs.deallocate(); lengths.deallocate() }
        let n = h.rx.receive(bufs: bufs, lengths: lengths, max: 32, cache: &h.cache, refill: refill)
        for i in 0..<n { h.cache.freeChain(bufs[i]) }
        return n
    }

    func testMalformedNumBuffersAreDroppedAndCounted() throws {
        var h = try makeHarness(mergeable: true)
        let good1 = frame(100, 1), good2 = frame(3000, 2)
        try deliver(&h, frameBytes: good1, numBuffers: 1)
        try deliver(&h, frameBytes: frame(60, 3), numBuffers: 0)                 // 0: malformed
        try deliver(&h, frameBytes: frame(60, 4), numBuffers: 40)                // far beyond a 9216-byte frame
        // A genuine two-buffer frame: header and first 2048 bytes, then the remaining 952.
        try deliver(&h, frameBytes: Array(good2[0..<2048]), numBuffers: 2)
        try deliver(&h, frameBytes: Array(good2[2048...]), numBuffers: nil)
        var got = receive(&h)
        XCTAssertEqual(got, [good1, good2])
        XCTAssertEqual(h.rx.errors, 2)
        // More buffers claimed than the device returned: dropped, counted, buffers back.
        try deliver(&h, frameBytes: frame(2048, 5), numBuffers: 3)
        try deliver(&h, frameBytes: frame(500, 6), numBuffers: nil)
        got = receive(&h)
        XCTAssertEqual(got, [])
        XCTAssertEqual(h.rx.errors, 3)
        // A runt head (shorter than an Ethernet header) in a multi-buffer frame.
        try deliver(&h, frameBytes: frame(4, 7), numBuffers: 2)
        try deliver(&h, frameBytes: frame(100, 8), numBuffers: nil)
        XCTAssertEqual(receive(&h), [])
        XCTAssertEqual(h.rx.errors, 4)
        // And the queue still works.
        let good3 = frame(9000, 9)
        try deliver(&h, frameBytes: Array(good3[0..<2048]), numBuffers: 5)
        for k in 1..<5 {
            let start = 2048 + (k - 1) * 2060
            try deliver(&h, frameBytes: Array(good3[start..<min(good3.count, start + 2060)]), numBuffers: nil)
        }
        XCTAssertEqual(receive(&h), [good3])
        XCTAssertEqual(h.rx.errors, 4)
        assertNoBufferLost(h)
        tearDown(&h)
    }

    /// A merged frame whose tail buffers arrive after the burst limit: the queue dequeues them
    /// itself rather than splitting the frame.
    func testMergedFrameCompletedBeyondTheBurst() throws {
        var h = try makeHarness(mergeable: true)
        let small = frame(64, 1), big = frame(4000, 2)
        try deliver(&h, frameBytes: small, numBuffers: 1)
        try deliver(&h, frameBytes: Array(big[0..<2048]), numBuffers: 2)
        try deliver(&h, frameBytes: Array(big[2048...]), numBuffers: nil)
        XCTAssertEqual(receive(&h, max: 2), [small, big])
        XCTAssertEqual(h.rx.errors, 0)
        assertNoBufferLost(h)
        tearDown(&h)
    }

    /// `max_pkt_len` sizes the non-mergeable chains: at 1518 a chain is one buffer, so the ring
    /// holds a frame per descriptor (as testpmd's virtio RX posts one mbuf per descriptor), and
    /// a frame longer than the limit is dropped and counted, its buffers kept.
    func testMaxPktLenSizesChainsAndDropsLongerFrames() throws {
        var h = try makeHarness(mergeable: false, maxFrameLength: 1518)
        XCTAssertEqual(h.rx.chainBuffers, 1)
        XCTAssertEqual(h.ring.pointee.inFlight, Int(queueSize), "one frame per descriptor")
        let fits = frame(1518, 1), tooLong = frame(1519, 2), small = frame(60, 3)
        try deliver(&h, frameBytes: fits, numBuffers: 0)
        try deliver(&h, frameBytes: tooLong, numBuffers: 0)
        try deliver(&h, frameBytes: small, numBuffers: 0)
        XCTAssertEqual(receive(&h), [fits, small])
        XCTAssertEqual(h.rx.errors, 1)
        assertNoBufferLost(h)
        tearDown(&h)
    }

    /// With MRG_RXBUF the limit applies to whole frames, one buffer or several.
    func testMaxPktLenWithMergeableBuffers() throws {
        var h = try makeHarness(mergeable: true, maxFrameLength: 1518)
        let fits = frame(1518, 1), oneBufferTooLong = frame(2000, 2), merged = frame(3000, 3)
        try deliver(&h, frameBytes: fits, numBuffers: 1)
        try deliver(&h, frameBytes: oneBufferTooLong, numBuffers: 1)
        try deliver(&h, frameBytes: Array(merged[0..<2048]), numBuffers: 2)
        try deliver(&h, frameBytes: Array(merged[2048...]), numBuffers: nil)
        XCTAssertEqual(receive(&h), [fits])
        XCTAssertEqual(h.rx.errors, 2)
        assertNoBufferLost(h)
        tearDown(&h)
    }

    /// Without MRG_RXBUF every posted chain holds a 9216-byte frame; a small frame keeps one
    /// buffer and the rest go back, a jumbo keeps exactly the buffers it filled.
    func testChainedRxKeepsOnlyTheBuffersUsed() throws {
        var h = try makeHarness(mergeable: false)
        XCTAssertEqual(h.rx.chainBuffers, 5)
        let small = frame(64, 1), big = frame(9000, 2)
        try deliver(&h, frameBytes: small, numBuffers: 0)
        try deliver(&h, frameBytes: big, numBuffers: 0)
        let bufs = UnsafeMutablePointer<UInt32>.allocate(capacity: 4)
        let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: 4)
        defer { bufs.deallocate(); lengths.deallocate() }
        XCTAssertEqual(h.rx.receive(bufs: bufs, lengths: lengths, max: 4, cache: &h.cache), 2)
        XCTAssertEqual(h.pool.next(of: bufs[0]), PacketPool.noBuffer)
        var segments = 0
        var b = bufs[1]
        while b != PacketPool.noBuffer { segments += 1; b = h.pool.next(of: b) }
        XCTAssertEqual(segments, 5, "9000 bytes need five 2048-byte buffers")
        XCTAssertEqual(MultiBufferLoopbackTests.read(head: bufs[0], length: Int(lengths[0]), cache: h.cache), small)
        XCTAssertEqual(MultiBufferLoopbackTests.read(head: bufs[1], length: Int(lengths[1]), cache: h.cache), big)
        XCTAssertEqual(lengths[1], 9000)
        h.cache.freeChain(bufs[0]); h.cache.freeChain(bufs[1])
        assertNoBufferLost(h)
        tearDown(&h)
    }

    /// Freeing a frame frees its whole chain and unlinks every buffer, through the cache and
    /// through the pool (which rings drain into directly).
    func testFreeingAChainReturnsEveryBufferUnlinked() throws {
        let memory = try SharedMemory(size: 2 * SharedMemory.hugepageSize, name: "ferry-mbpool")
        let pool = try PacketPool(memory: memory, count: 64)
        var cache = pool.makeCache(capacity: 64)
        func chain(_ n: Int) -> [UInt32] {
            var bs: [UInt32] = []
            for _ in 0..<n { bs.append(cache.get()!) }
            for k in 1..<n { cache.setNext(bs[k - 1], bs[k]) }
            return bs
        }
        let a = chain(3)
        let before = cache.cachedCount
        cache.freeChain(a[0])
        XCTAssertEqual(cache.cachedCount, before + 3)
        for b in a { XCTAssertEqual(pool.next(of: b), PacketPool.noBuffer) }
        cache.flush()
        XCTAssertEqual(pool.available, pool.count)
        let c = chain(4)
        cache.flush()
        XCTAssertEqual(pool.available, pool.count - 4)
        var head = c[0]
        pool.give(&head, count: 1)
        XCTAssertEqual(pool.available, pool.count, "the pool takes the whole chain back")
        for b in c { XCTAssertEqual(pool.next(of: b), PacketPool.noBuffer) }
        cache.release()
        withExtendedLifetime(memory) {}
    }
}
