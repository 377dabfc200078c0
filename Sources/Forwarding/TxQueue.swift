import Virtio
import VirtioUser

/// The transmit side of one queue pair: posts frames on the TX vring and takes back the
/// buffers the device has finished with.
///
/// Owned by exactly one worker. Reclaim runs only when the ring is short of descriptors, as
/// DPDK's virtio TX does with its free threshold, so the common case reads the used index at
/// most once per burst.
struct TxQueue {
    let ring: VirtqueueRing
    let kickFD: EventFD
    let headerSize: Int
    /// Whether TX headers must carry `num_buffers` = 0 (see `VirtioNetHeader.prepareTransmit`).
    let clearNumBuffers: Bool
    /// Scratch for reclaim: the ring writes completed cookies here.
    let scratchCookies: UnsafeMutablePointer<UInt32>
    let scratchCapacity: Int
    /// Scratch for one chained frame's descriptors.
    let chainScratch: UnsafeMutablePointer<RingSegment>
    /// The most segments a chained frame may have; a longer one is not sent (the caller
    /// drops it with the rest of the burst). Far above what RX or txpkts produce.
    static let maxSegments = 64
    /// Frames posted between two `publish()` calls within a burst (a power of two).
    ///
    /// Why not once per burst: the backend polls the ring, and with one burst circulating
    /// (testpmd's `--tx-first` loop) the rate is the inverse of a burst's round trip. Publishing
    /// as the burst is written lets the device start copying its head while the driver writes
    /// its tail, as DPDK's virtio TX does by making each descriptor available as it goes. Four
    /// frames is one cache line of packed descriptors (§2.8.1: 16 bytes each), so the device
    /// never reads a line the driver is still filling. Measured against testpmd's `net_vhost`
    /// (io, 64 B, builds alternating, 10 rounds of 8 s): split +30 % median (8 of 10 rounds
    /// faster) against once per burst; packed +10–16 % in the machine's slow mode, even in its
    /// fast one; every frame instead of 4 lost 2–6 % in the fast mode (see bench/README.md).
    static let publishEvery = 4

    init(ring: VirtqueueRing, kickFD: EventFD, headerSize: Int, clearNumBuffers: Bool = true) {
        self.ring = ring
        self.kickFD = kickFD
        self.headerSize = headerSize
        self.clearNumBuffers = clearNumBuffers
        scratchCapacity = Int(ring.queueSize)
        scratchCookies = .allocate(capacity: scratchCapacity)
        chainScratch = .allocate(capacity: Self.maxSegments)
    }

    func deallocate() {
        scratchCookies.deallocate()
        chainScratch.deallocate()
    }

    /// Posts up to `count` frames; returns how many went on the ring. The caller owns the rest.
    /// One switch on the ring kind per burst; the rest is specialised for that kind.
    @inline(__always)
    mutating func transmit(bufs: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                           count: Int, cache: inout PoolCache) -> Int {
        switch ring {
        case let .split(r): return transmit(r, bufs: bufs, lengths: lengths, count: count, cache: &cache)
        case let .packed(r): return transmit(r, bufs: bufs, lengths: lengths, count: count, cache: &cache)
        }
    }

    @inline(__always)
    private mutating func transmit<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, bufs: UnsafeMutablePointer<UInt32>,
                                                  lengths: UnsafeMutablePointer<UInt32>, count: Int,
                                                  cache: inout PoolCache) -> Int {
        if ring.pointee.numFree < count { reclaim(ring, cache: &cache) }
        var sent = 0
        let header = UInt64(headerSize)
        while sent < count {
            let buf = bufs[sent]
            // Offloads are not negotiated, so the header says none (virtio 1.2 §5.1.6.2).
            VirtioNetHeader.prepareTransmit(at: cache.data(buf) - headerSize, size: headerSize,
                                            clearNumBuffers: clearNumBuffers)
            if cache.next(buf) == PacketPool.noBuffer {
                let ok = ring.pointee.addBuffer(address: cache.address(buf) &- header,
                                                length: UInt32(headerSize) &+ lengths[sent],
                                                deviceWritable: false, cookie: buf)
                if !ok { break }
            } else if !addChained(ring, head: buf, cache: &cache) {
                break
            }
            sent &+= 1
            if sent & (Self.publishEvery &- 1) == 0 { ring.pointee.publish() }
        }
        if sent > 0 {
            ring.pointee.publish()
            if ring.pointee.kickNeeded() { kickFD.signal() }
        }
        return sent
    }

    /// A multi-buffer frame as one descriptor chain: the header right before the head
    /// segment's data, then each segment (virtio 1.2 §2.7.6/§2.8.6 chaining). With
    /// INDIRECT_DESC negotiated (the ring has tables) a chain that fits a table goes through
    /// one ring descriptor pointing at it (§2.7.5.3/§2.8.7), as DPDK's virtio TX does with
    /// `use_indirect`; a longer one is posted direct. Reclaims once if the ring is short of
    /// descriptors. False when it does not fit. Single-buffer frames never come here, so the
    /// indirect choice costs them nothing.
    @inline(never)
    private mutating func addChained<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, head: UInt32,
                                                    cache: inout PoolCache) -> Bool {
        chainScratch[0] = RingSegment(address: cache.address(head) &- UInt64(headerSize),
                                      length: UInt32(headerSize &+ cache.segmentLength(head)), deviceWritable: false)
        var count = 1
        var b = cache.next(head)
        while b != PacketPool.noBuffer {
            guard count < Self.maxSegments else { return false }
            chainScratch[count] = RingSegment(address: UInt64(UInt(bitPattern: cache.segmentData(b))),
                                              length: UInt32(cache.segmentLength(b)), deviceWritable: false)
            count &+= 1
            b = cache.next(b)
        }
        let chain = UnsafeBufferPointer(start: chainScratch, count: count)
        if count <= ring.pointee.indirectCapacity {
            if ring.pointee.numFree < 1 { reclaim(ring, cache: &cache) }
            return ring.pointee.addIndirect(chain, cookie: head)
        }
        if ring.pointee.numFree < count { reclaim(ring, cache: &cache) }
        return ring.pointee.addChain(chain, cookie: head)
    }

    /// Returns every buffer the device has consumed to the cache.
    @inline(__always)
    private mutating func reclaim<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, cache: inout PoolCache) {
        let n = ring.pointee.reclaimUsed(cookies: scratchCookies, max: scratchCapacity)
        var i = 0
        while i < n {
            cache.freeChain(scratchCookies[i])
            i &+= 1
        }
    }
}
