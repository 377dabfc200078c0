import CFerry
import Virtio

/// A PROTOTYPE of the driver side of an IN_ORDER split ring with one descriptor per chain,
/// to measure (with callgrind) what a fast path in Ferry's `SplitRing` would save. Bench code,
/// not product: the proposal for `Sources/Virtio` is written up in bench/README.md.
///
/// What differs from `SplitRing` (same safety rules otherwise):
/// - With IN_ORDER and one-descriptor chains, descriptors are handed out in ring order, so the
///   descriptor of avail slot `s` is `s & mask`: no free list, no private copy of the avail
///   ring, no `next` links to read or write.
/// - Completion takes the fast path when the used id is the oldest in-flight chain (what
///   every in-order device does, one entry per chain), and reads `{id, len}` in one load.
/// - The loop keeps the ring state in locals and stores it once: the stores into the caller's
///   `cookies`/`lengths` go through raw pointers the optimizer must assume alias `self`.
/// The device stays untrusted: at most min(used->idx − last, published in flight, max) entries
/// are read; an id that is not an in-flight descriptor is counted and skipped; a batch entry
/// (an id further ahead) completes the chains before it, bounded the same way; a length above
/// what was posted is reported as 0.
struct ProtoInOrderRing {
    let size: UInt16
    let mask: UInt16
    let desc: UnsafeMutableRawPointer
    let avail: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer
    /// Per descriptor: the caller's cookie and the writable length posted.
    let cookie: UnsafeMutablePointer<UInt32>
    let writable: UnsafeMutablePointer<UInt32>
    var availIndex: UInt16 = 0
    var publishedIndex: UInt16 = 0
    var kickedIndex: UInt16 = 0
    var lastUsedIndex: UInt16 = 0
    /// The avail slot of the oldest chain in flight.
    var oldestSlot: UInt16 = 0
    var invalidIds: UInt64 = 0
    var invalidLengths: UInt64 = 0

    init(memory: UnsafeMutableRawPointer, queueSize: UInt16) {
        size = queueSize
        mask = queueSize &- 1
        desc = memory
        avail = memory + SplitRingLayout.availOffset(queueSize: Int(queueSize))
        used = memory + SplitRingLayout.usedOffset(queueSize: Int(queueSize))
        cookie = .allocate(capacity: Int(queueSize))
        cookie.initialize(repeating: 0, count: Int(queueSize))
        writable = .allocate(capacity: Int(queueSize))
        writable.initialize(repeating: 0, count: Int(queueSize))
    }

    @inline(__always) var numFree: Int { Int(size) &- Int(availIndex &- oldestSlot) }

    /// Posts one buffer; false when the ring is full.
    @inline(__always)
    mutating func addBuffer(address: UInt64, length: UInt32, deviceWritable: Bool, cookie c: UInt32) -> Bool {
        guard availIndex &- oldestSlot != size else { return false }
        let d = Int(availIndex & mask)
        let p = desc + d &* SplitRingLayout.descriptorSize
        p.storeBytes(of: address.littleEndian, as: UInt64.self)
        let flags: UInt64 = deviceWritable ? UInt64(VringFlags.descWrite) << 32 : 0
        p.storeBytes(of: (UInt64(length) | flags).littleEndian, toByteOffset: 8, as: UInt64.self)
        avail.storeBytes(of: UInt16(d).littleEndian, toByteOffset: SplitRingLayout.availRingOffset &+ d &* 2, as: UInt16.self)
        cookie[d] = c
        writable[d] = deviceWritable ? length : 0
        availIndex &+= 1
        return true
    }

    @inline(__always)
    mutating func publish() {
        guard availIndex != publishedIndex else { return }
        ferry_store_release_u16(avail + SplitRingLayout.availIdxOffset, availIndex.littleEndian)
        publishedIndex = availIndex
    }

    @inline(__always)
    mutating func kickNeeded() -> Bool {
        guard publishedIndex != kickedIndex else { return false }
        kickedIndex = publishedIndex
        ferry_fence_seq_cst()
        let flags = UInt16(littleEndian: ferry_load_relaxed_u16(used + SplitRingLayout.usedFlagsOffset))
        return flags & VringFlags.usedNoNotify == 0
    }

    @inline(__always)
    mutating func dequeueUsed(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>, max: Int) -> Int {
        let deviceIndex = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitRingLayout.usedIdxOffset))
        var last = lastUsedIndex
        var oldest = oldestSlot
        let published = publishedIndex
        // Constants in locals too: the stores into `cookies`/`lengths` would otherwise force
        // a reload of every field of `self` after each one.
        let mask = self.mask, used = self.used, cookie = self.cookie, writable = self.writable
        var entries = Int(deviceIndex &- last)
        let inFlight = Int(published &- oldest)
        if entries > inFlight { entries = inFlight }
        var produced = 0
        while entries > 0 && produced < max {
            let e = UInt64(littleEndian: used.load(fromByteOffset: SplitRingLayout.usedRingOffset &+ Int(last & mask) &* 8,
                                                   as: UInt64.self))
            let id = UInt32(truncatingIfNeeded: e)
            let length = UInt32(truncatingIfNeeded: e >> 32)
            let expected = UInt32(oldest & mask)
            if id == expected {
                let d = Int(id)
                cookies[produced] = cookie[d]
                let w = writable[d]
                if length <= w {
                    lengths[produced] = length
                } else {
                    lengths[produced] = 0
                    if w != 0 { invalidLengths &+= 1 }
                }
                produced &+= 1
                oldest &+= 1
                last &+= 1
                entries &-= 1
                continue
            }
            // A batch (IN_ORDER lets one entry complete the chains before it) or a bad id.
            let ahead = Int(UInt16(truncatingIfNeeded: id) &- UInt16(expected)) & Int(mask)
            guard id < UInt32(size), ahead < Int(published &- oldest) else {
                invalidIds &+= 1
                last &+= 1
                entries &-= 1
                continue
            }
            var k = 0
            while k <= ahead && produced < max {
                let d = Int(oldest & mask)
                cookies[produced] = cookie[d]
                lengths[produced] = k == ahead ? (length <= writable[d] ? length : 0) : 0
                produced &+= 1
                oldest &+= 1
                k &+= 1
            }
            guard k > ahead else { break }  // finish the batch next call
            last &+= 1
            entries &-= 1
        }
        lastUsedIndex = last
        oldestSlot = oldest
        return produced
    }
}
