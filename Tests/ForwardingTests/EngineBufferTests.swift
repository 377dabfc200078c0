import XCTest
import VirtioUser
@testable import Forwarding

/// The engines' per-burst work on real pool buffers, without rings: a hand-built stream whose
/// queue pointers are never touched by `process`/`produce`.
final class EngineBufferTests: XCTestCase {
    private var memory: SharedMemory!
    private var pool: PacketPool!
    private var cache: PoolCache!
    private var stream: UnsafeMutablePointer<Forwarding.Stream>!
    private var bufs: UnsafeMutablePointer<UInt32>!
    private var lengths: UnsafeMutablePointer<UInt32>!
    private var scratch: [UnsafeMutableRawPointer] = []

    private let txPortMAC: [UInt8] = [0x02, 0xfe, 0x00, 0x00, 0x00, 0x01]
    private let txPeerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xbb]
    private let template = UDPTemplate.frame(length: 60, source: [2, 0xfe, 0, 0, 0, 1], destination: [2, 0, 0, 0, 0, 0xbb])

    override func setUpWithError() throws {
        memory = try SharedMemory(size: 1 << 20, name: "ferry-engine-test")
        pool = try PacketPool(memory: memory, count: 16)
        cache = pool.makeCache(capacity: 64)
        bufs = .allocate(capacity: 16)
        lengths = .allocate(capacity: 16)

        func bytes(_ b: [UInt8]) -> UnsafeMutablePointer<UInt8> {
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: b.count)
            p.initialize(from: b, count: b.count)
            scratch.append(UnsafeMutableRawPointer(p))
            return p
        }
        // The engines under test never read the queues; the pointers only fill the fields.
        let rx = UnsafeMutablePointer<RxQueue>.allocate(capacity: 1)
        let tx = UnsafeMutablePointer<TxQueue>.allocate(capacity: 1)
        scratch.append(UnsafeMutableRawPointer(rx))
        scratch.append(UnsafeMutableRawPointer(tx))
        let links = bytes([1, 1])
        let published = PublishedCounters.allocate(count: 1)
        scratch.append(published)
        stream = .allocate(capacity: 1)
        stream.initialize(to: Forwarding.Stream(rxPort: 0, rxQueueIndex: 0, txPort: 1, txQueueIndex: 0, rx: rx, tx: tx,
                                     rxLink: links, txLink: links + 1,
                                     txPortMAC: bytes(txPortMAC), txPeerMAC: bytes(txPeerMAC),
                                     template: bytes(template), templateLength: template.count,
                                     published: PublishedCounters(slot: published)))
    }

    override func tearDown() {
        stream?.deinitialize(count: 1)
        stream?.deallocate()
        for p in scratch { p.deallocate() }
        scratch = []
        bufs?.deallocate()
        lengths?.deallocate()
        cache?.release()
        cache = nil
        pool = nil
        memory = nil
        super.tearDown()
    }

    /// Three distinct frames in pool buffers: returns their bytes as written.
    private func loadFrames() -> [[UInt8]] {
        var frames: [[UInt8]] = []
        for i in 0..<3 {
            let length = 60 + 10 * i
            var frame = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7 + i * 31 + 1) }
            frame[0] = 0x0a + UInt8(i)  // unicast, distinct per frame
            guard let buf = cache.get() else { XCTFail("pool empty"); return [] }
            cache.data(buf).copyMemory(from: frame, byteCount: frame.count)
            bufs[i] = buf
            lengths[i] = UInt32(length)
            frames.append(frame)
        }
        return frames
    }

    private func frame(_ i: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: cache.data(bufs[i]), count: Int(lengths[i])))
    }

    func testModesDeclareWhetherTheyReceiveAndTransmit() {
        XCTAssertTrue(IOEngine.receives); XCTAssertTrue(IOEngine.transmits)
        XCTAssertTrue(MacEngine.receives); XCTAssertTrue(MacEngine.transmits)
        XCTAssertTrue(MacSwapEngine.receives); XCTAssertTrue(MacSwapEngine.transmits)
        XCTAssertTrue(RxOnlyEngine.receives); XCTAssertFalse(RxOnlyEngine.transmits)
        XCTAssertFalse(TxOnlyEngine.receives); XCTAssertTrue(TxOnlyEngine.transmits)
    }

    func testMacWritesThePeerAsDestinationAndTheTXPortAsSource() {
        let before = loadFrames()
        MacEngine.process(stream, bufs: bufs, lengths: lengths, count: 3, cache: &cache)
        for i in 0..<3 {
            let after = frame(i)
            XCTAssertEqual(Array(after[0..<6]), txPeerMAC, "frame \(i): destination is eth_peer of the TX port")
            XCTAssertEqual(Array(after[6..<12]), txPortMAC, "frame \(i): source is the TX port's MAC")
            XCTAssertEqual(Array(after[12...]), Array(before[i][12...]), "frame \(i): the rest is untouched")
            XCTAssertEqual(Int(lengths[i]), before[i].count)
        }
    }

    func testMacLeavesFramesBeyondTheBurstAlone() {
        let before = loadFrames()
        MacEngine.process(stream, bufs: bufs, lengths: lengths, count: 2, cache: &cache)
        XCTAssertEqual(frame(2), before[2])
        XCTAssertEqual(Array(frame(1)[0..<6]), txPeerMAC)
    }

    func testMacSwapExchangesSourceAndDestination() {
        let before = loadFrames()
        MacSwapEngine.process(stream, bufs: bufs, lengths: lengths, count: 3, cache: &cache)
        for i in 0..<3 {
            let after = frame(i)
            XCTAssertEqual(Array(after[0..<6]), Array(before[i][6..<12]), "frame \(i): destination was the source")
            XCTAssertEqual(Array(after[6..<12]), Array(before[i][0..<6]), "frame \(i): source was the destination")
            XCTAssertEqual(Array(after[12...]), Array(before[i][12...]))
        }
        MacSwapEngine.process(stream, bufs: bufs, lengths: lengths, count: 3, cache: &cache)
        for i in 0..<3 { XCTAssertEqual(frame(i), before[i], "swapping twice restores frame \(i)") }
    }

    func testIOAndRxOnlyLeaveBytesAlone() {
        let before = loadFrames()
        IOEngine.process(stream, bufs: bufs, lengths: lengths, count: 3, cache: &cache)
        for i in 0..<3 { XCTAssertEqual(frame(i), before[i]) }
        RxOnlyEngine.process(stream, bufs: bufs, lengths: lengths, count: 3, cache: &cache)
        for i in 0..<3 { XCTAssertEqual(frame(i), before[i]) }
    }

    func testTxOnlyFillsBuffersWithTheStreamTemplate() {
        let n = TxOnlyEngine.produce(stream, bufs: bufs, lengths: lengths, max: 5, cache: &cache)
        XCTAssertEqual(n, 5)
        XCTAssertEqual(Set((0..<n).map { bufs[$0] }).count, n, "distinct buffers")
        for i in 0..<n {
            XCTAssertEqual(Int(lengths[i]), template.count)
            XCTAssertEqual(frame(i), template)
        }
    }

    func testTxOnlyStopsWhenThePoolRunsDry() {
        // The pool holds at least the 16 buffers asked for (it takes the rest of the memory):
        // draining all of them, the next request gets none, never more than there is.
        let total = pool.count
        var n = 0, last = 0
        while n < total {
            last = TxOnlyEngine.produce(stream, bufs: bufs, lengths: lengths, max: 16, cache: &cache)
            guard last > 0 else { return XCTFail("buffers remain, produce must return some") }
            n += last
        }
        XCTAssertEqual(n, total)
        XCTAssertEqual(TxOnlyEngine.produce(stream, bufs: bufs, lengths: lengths, max: 4, cache: &cache), 0)
        for i in 0..<last { cache.put(bufs[i]) }
        XCTAssertEqual(TxOnlyEngine.produce(stream, bufs: bufs, lengths: lengths, max: 4, cache: &cache), min(4, last))
    }
}
