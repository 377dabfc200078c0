import Virtio
import VirtioUser

/// The receive side of one queue pair: dequeues filled buffers from the RX vring and keeps it
/// stocked with empty ones.
///
/// Owned by exactly one worker, so nothing here is shared or locked. Every length comes from
/// the untrusted backend; the ring has already bounded it by what was posted, and this drops
/// frames too short to carry an Ethernet header.
struct RxQueue {
    let ring: VirtqueueRing
    let kickFD: EventFD
    /// The vring's call eventfd: the backend signals it when interrupts are enabled.
    let callFD: EventFD
    /// The virtio-net header size: 12 with VERSION_1 or MRG_RXBUF, else 10.
    let headerSize: Int
    /// Header plus frame room: what each posted buffer offers the device.
    let postedLength: UInt32
    let mergeable: Bool
    /// Buffers still to drop from a multi-buffer frame (mergeable frames come with the rings
    /// work; today they are dropped whole).
    var skipBuffers = 0
    /// Runts, oversized and multi-buffer frames dropped here.
    var errors: UInt64 = 0
    /// Refill once this many descriptors are free, to batch the avail-index store.
    let refillThreshold: Int

    init(ring: VirtqueueRing, kickFD: EventFD, callFD: EventFD, headerSize: Int, dataRoom: Int,
         mergeable: Bool, burst: Int) {
        self.ring = ring
        self.kickFD = kickFD
        self.callFD = callFD
        self.headerSize = headerSize
        postedLength = UInt32(headerSize + dataRoom)
        self.mergeable = mergeable
        refillThreshold = max(1, min(burst, Int(ring.queueSize) / 4))
    }

    /// Receives up to `max` frames into `bufs`/`lengths` (frame lengths, header excluded).
    /// One switch on the ring kind per burst; the rest is specialised for that kind.
    @inline(__always)
    mutating func receive(bufs: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                          max: Int, cache: inout PoolCache) -> Int {
        switch ring {
        case let .split(r): return receive(r, bufs: bufs, lengths: lengths, max: max, cache: &cache)
        case let .packed(r): return receive(r, bufs: bufs, lengths: lengths, max: max, cache: &cache)
        }
    }

    @inline(__always)
    private mutating func receive<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, bufs: UnsafeMutablePointer<UInt32>,
                                                 lengths: UnsafeMutablePointer<UInt32>, max: Int,
                                                 cache: inout PoolCache) -> Int {
        let n = ring.pointee.dequeueUsed(cookies: bufs, lengths: lengths, max: max)
        var out = 0
        var i = 0
        let minimum = UInt32(headerSize + 14)
        while i < n {
            let buf = bufs[i]
            let length = lengths[i]
            i &+= 1
            if skipBuffers > 0 {
                skipBuffers &-= 1
                cache.put(buf)
                continue
            }
            if mergeable {
                let count = VirtioNetHeader.numBuffers(at: cache.data(buf) - headerSize)
                if count > 1 {
                    skipBuffers = Int(count) &- 1
                    errors &+= 1
                    cache.put(buf)
                    continue
                }
            }
            if length < minimum {
                errors &+= 1
                cache.put(buf)
                continue
            }
            bufs[out] = buf
            lengths[out] = length &- UInt32(headerSize)
            out &+= 1
        }
        if ring.pointee.numFree >= refillThreshold { refill(ring, cache: &cache) }
        return out
    }

    /// Posts empty buffers on every free descriptor, then publishes and kicks if asked.
    mutating func refill(cache: inout PoolCache) {
        switch ring {
        case let .split(r): refill(r, cache: &cache)
        case let .packed(r): refill(r, cache: &cache)
        }
    }

    @inline(__always)
    private mutating func refill<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, cache: inout PoolCache) {
        var added = false
        while ring.pointee.numFree > 0 {
            guard let buf = cache.get() else { break }
            let ok = ring.pointee.addBuffer(address: cache.address(buf) &- UInt64(headerSize),
                                            length: postedLength, deviceWritable: true, cookie: buf)
            if !ok {
                cache.put(buf)
                break
            }
            added = true
        }
        if added {
            ring.pointee.publish()
            if ring.pointee.kickNeeded() { kickFD.signal() }
        }
    }
}
