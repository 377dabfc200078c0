import FerryConfig
import Virtio
import VirtioUser

/// The receive side of one queue pair: dequeues filled buffers from the RX vring and keeps it
/// stocked with empty ones.
///
/// Owned by exactly one worker, so nothing here is shared or locked. Every length comes from
/// the untrusted backend; the ring has already bounded it by what was posted, and this drops
/// frames too short to carry an Ethernet header.
///
/// Frames up to `maxFrameLength` arrive in one of two ways (virtio 1.2 §5.1.6.3, §5.1.6.4):
/// - MRG_RXBUF: every posted buffer is one descriptor; a large frame spans `num_buffers`
///   used entries, which are linked into one frame (PacketPool's `next` table).
/// - otherwise: each descriptor chain offers enough buffers for a whole `maxFrameLength`
///   frame; a received frame keeps the buffers its used length needs, the rest go back.
/// Either way `lengths[i]` is the whole frame, and the head segment holds at least 14 bytes.
struct RxQueue {
    /// The largest frame received (`max_pkt_len`, at most `FerryConfiguration.largestFrame`):
    /// longer ones are dropped and counted in `errors`.
    let maxFrameLength: Int

    let ring: VirtqueueRing
    let kickFD: EventFD
    /// The vring's call eventfd: the backend signals it when interrupts are enabled.
    let callFD: EventFD
    /// The virtio-net header size: 12 with VERSION_1 or MRG_RXBUF, else 10.
    let headerSize: Int
    /// Header plus frame room: what each posted (head) buffer offers the device.
    let postedLength: UInt32
    let dataRoom: Int
    let mergeable: Bool
    /// Buffers per posted descriptor chain: 1 with MRG_RXBUF, else enough for the largest frame.
    let chainBuffers: Int
    /// The most buffers a merged frame may span: what the largest frame any device may send
    /// (`FerryConfiguration.largestFrame`) needs.
    let maxMergeBuffers: Int
    /// Runts, oversized and malformed multi-buffer frames dropped here.
    var errors: UInt64 = 0
    /// Refill once this many descriptors are free, to batch the avail-index store.
    let refillThreshold: Int
    /// `receive(refill: false)` still refills when more descriptors than this are free: half
    /// the ring. Deferring is safe only while the posted buffers cover what the device can
    /// return before `replenish` runs, and a loopback device fed by this burst's TX returns a
    /// whole burst at once. Chains of five (mrg_rxbuf off, max_pkt_len 9216) fit 51 to a 256
    /// ring; deferring those made vdpa_sim_net drop frames for want of RX buffers (kernel lab).
    let maxDeferredFree: Int

    init(ring: VirtqueueRing, kickFD: EventFD, callFD: EventFD, headerSize: Int, dataRoom: Int,
         mergeable: Bool, burst: Int, maxFrameLength: Int = FerryConfiguration.largestFrame) {
        self.maxFrameLength = maxFrameLength
        self.ring = ring
        self.kickFD = kickFD
        self.callFD = callFD
        self.headerSize = headerSize
        self.dataRoom = dataRoom
        postedLength = UInt32(headerSize + dataRoom)
        self.mergeable = mergeable
        let buffersForMax = (maxFrameLength + dataRoom - 1) / dataRoom
        chainBuffers = mergeable ? 1 : max(1, buffersForMax)
        // From the largest frame any device may send, not `maxFrameLength`: a frame over the
        // limit is still taken whole (then dropped), so its tail is never read as a frame.
        let largest = FerryConfiguration.largestFrame
        maxMergeBuffers = max(1, (headerSize + largest + headerSize + dataRoom - 1) / (headerSize + dataRoom))
        let chainSlots = mergeable ? 1 : chainBuffers
        refillThreshold = max(chainSlots, min(burst * chainSlots, Int(ring.queueSize) / 4))
        maxDeferredFree = Int(ring.queueSize) / 2
    }

    /// Receives up to `max` frames into `bufs`/`lengths` (frame lengths, header excluded).
    /// One switch on the ring kind per burst; the rest is specialised for that kind.
    ///
    /// With `refill` (the default) the ring is restocked before returning once enough
    /// descriptors are free. The forwarding loop passes false and calls `replenish` after it
    /// has transmitted the burst: the refill's descriptor writes then stay off the path from a
    /// frame's arrival to its departure (DPDK's virtio refills inside its RX burst, before the
    /// frames go out). Only while at least half the ring stays posted (`maxDeferredFree`);
    /// below that it refills here as with `refill`.
    @inline(__always)
    mutating func receive(bufs: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                          max: Int, cache: inout PoolCache, refill: Bool = true) -> Int {
        switch ring {
        case let .split(r): return receive(r, bufs: bufs, lengths: lengths, max: max, cache: &cache, refill: refill)
        case let .packed(r): return receive(r, bufs: bufs, lengths: lengths, max: max, cache: &cache, refill: refill)
        }
    }

    /// Restocks the ring once `refillThreshold` descriptors are free; a compare otherwise.
    @inline(__always)
    mutating func replenish(cache: inout PoolCache) {
        switch ring {
        case let .split(r): if r.pointee.numFree >= refillThreshold { refill(r, cache: &cache) }
        case let .packed(r): if r.pointee.numFree >= refillThreshold { refill(r, cache: &cache) }
        }
    }

    @inline(__always)
    private mutating func receive<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, bufs: UnsafeMutablePointer<UInt32>,
                                                 lengths: UnsafeMutablePointer<UInt32>, max: Int,
                                                 cache: inout PoolCache, refill doRefill: Bool) -> Int {
        let n = ring.pointee.dequeueUsed(cookies: bufs, lengths: lengths, max: max)
        var out = 0
        var i = 0
        let minimum = UInt32(headerSize + 14)
        let maximum = UInt32(headerSize + maxFrameLength)
        while i < n {
            let buf = bufs[i]
            let length = lengths[i]
            i &+= 1
            if mergeable {
                let count = VirtioNetHeader.numBuffers(at: cache.data(buf) - headerSize)
                if count != 1 {
                    // Rare: a jumbo frame (or a malformed header). `i` moves past its buffers.
                    let total = merge(ring, head: buf, headLength: length, count: Int(count),
                                      bufs: bufs, lengths: lengths, next: &i, available: n, cache: &cache)
                    if total > 0 {
                        bufs[out] = buf
                        lengths[out] = total
                        out &+= 1
                    }
                    continue
                }
            }
            if length < minimum || length > maximum {
                errors &+= 1
                cache.freeChain(buf)
                continue
            }
            let frameLength = length &- UInt32(headerSize)
            if chainBuffers > 1 { trimChain(head: buf, frameLength: Int(frameLength), cache: &cache) }
            bufs[out] = buf
            lengths[out] = frameLength
            out &+= 1
        }
        let free = ring.pointee.numFree
        if free >= refillThreshold && (doRefill || free > maxDeferredFree) { refill(ring, cache: &cache) }
        return out
    }

    /// Without MRG_RXBUF: keeps the buffers of the posted chain that `frameLength` filled
    /// (recording their segment lengths when more than one) and frees the rest.
    @inline(__always)
    private func trimChain(head: UInt32, frameLength: Int, cache: inout PoolCache) {
        if frameLength <= dataRoom {
            let rest = cache.next(head)
            if rest != PacketPool.noBuffer {
                cache.setNext(head, PacketPool.noBuffer)
                cache.freeTail(rest)
            }
            return
        }
        splitChain(head: head, frameLength: frameLength, cache: &cache)
    }

    @inline(never)
    private func splitChain(head: UInt32, frameLength: Int, cache: inout PoolCache) {
        let headroom = cache.headroomSize
        var remaining = frameLength
        var b = head
        var last = head
        // The ring bounded the used length by what was posted, so the chain has the buffers.
        while b != PacketPool.noBuffer && remaining > 0 {
            let take = Swift.min(remaining, dataRoom)
            cache.setSegment(b, offset: headroom, length: take)
            remaining &-= take
            last = b
            b = cache.next(b)
        }
        cache.setNext(last, PacketPool.noBuffer)
        if b != PacketPool.noBuffer { cache.freeTail(b) }
    }

    /// MRG_RXBUF: links the `count` used buffers of one frame (this one and the ones after
    /// it, dequeued further if the burst ended first). Returns the frame length, or 0 when the
    /// frame was dropped: `num_buffers` 0, more than a `maxFrameLength` frame needs, more than
    /// the device has returned, a runt head, or an empty or oversized total (§5.1.6.4.1: the
    /// device sets `num_buffers`; nothing here trusts it beyond what it can check).
    @inline(never)
    private mutating func merge<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, head: UInt32, headLength: UInt32,
                                               count: Int, bufs: UnsafeMutablePointer<UInt32>,
                                               lengths: UnsafeMutablePointer<UInt32>, next i: inout Int,
                                               available n: Int, cache: inout PoolCache) -> UInt32 {
        guard count >= 1 && count <= maxMergeBuffers else {
            // Nothing tells where this frame ends: drop its head only.
            errors &+= 1
            cache.freeChain(head)
            return 0
        }
        // A plausible count: its buffers are taken (and dropped with it if anything else is
        // wrong), so they are not mistaken for frames of their own.
        let headroom = cache.headroomSize
        var bad = headLength < UInt32(headerSize + 14)
        var total = Int(headLength) &- headerSize
        cache.setSegment(head, offset: headroom, length: total)
        var tail = head
        var k = 1
        while k < count {
            var b: UInt32
            var l: UInt32
            if i < n {
                b = bufs[i]
                l = lengths[i]
                i &+= 1
            } else if let (cookie, length) = dequeueOne(ring) {
                b = cookie
                l = length
            } else {
                bad = true
                break
            }
            cache.setNext(tail, b)
            tail = b
            k &+= 1
            // Following buffers carry frame bytes from the descriptor's start, which is where
            // the header would go: inside the headroom.
            cache.setSegment(b, offset: headroom &- headerSize, length: Int(l))
            if l == 0 { bad = true }
            total &+= Int(l)
        }
        if bad || total > maxFrameLength {
            errors &+= 1
            cache.freeChain(head)
            return 0
        }
        return UInt32(total)
    }

    /// One more used entry, for a merged frame whose buffers did not all fit the burst.
    private func dequeueOne<R: DriverRing>(_ ring: UnsafeMutablePointer<R>) -> (UInt32, UInt32)? {
        var cookie: UInt32 = 0
        var length: UInt32 = 0
        let got = withUnsafeMutablePointer(to: &cookie) { c in
            withUnsafeMutablePointer(to: &length) { l in ring.pointee.dequeueUsed(cookies: c, lengths: l, max: 1) }
        }
        return got == 1 ? (cookie, length) : nil
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
        if chainBuffers > 1 {
            added = refillChains(ring, cache: &cache)
        } else {
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
        }
        if added {
            ring.pointee.publish()
            if ring.pointee.kickNeeded() { kickFD.signal() }
        }
    }

    /// Without MRG_RXBUF: posts chains of `chainBuffers` buffers, the header before the first
    /// one's frame room, so any frame up to `maxFrameLength` fits one chain.
    private mutating func refillChains<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, cache: inout PoolCache) -> Bool {
        withUnsafeTemporaryAllocation(of: RingSegment.self, capacity: chainBuffers) { scratch in
            refillChains(ring, scratch: scratch.baseAddress!, cache: &cache)
        }
    }

    private mutating func refillChains<R: DriverRing>(_ ring: UnsafeMutablePointer<R>, scratch chainScratch: UnsafeMutablePointer<RingSegment>,
                                                      cache: inout PoolCache) -> Bool {
        var added = false
        let k = chainBuffers
        while ring.pointee.numFree >= k {
            guard let head = cache.get() else { break }
            chainScratch[0] = RingSegment(address: cache.address(head) &- UInt64(headerSize),
                                          length: postedLength, deviceWritable: true)
            var tail = head
            var got = 1
            while got < k {
                guard let b = cache.get() else { break }
                cache.setNext(tail, b)
                tail = b
                chainScratch[got] = RingSegment(address: cache.address(b), length: UInt32(dataRoom), deviceWritable: true)
                got &+= 1
            }
            if got < k || !ring.pointee.addChain(UnsafeBufferPointer(start: chainScratch, count: k), cookie: head) {
                cache.freeChain(head)
                break
            }
            added = true
        }
        return added
    }
}
