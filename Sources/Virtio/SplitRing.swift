import CFerry

/// The driver side of a split virtqueue (virtio 1.2 §2.7): posting buffers, publishing them,
/// deciding whether to kick, and reclaiming what the device used.
///
/// Hot path: a struct over raw pointers, no allocation after `init`, every per-packet method
/// `@inlinable` so it is specialised into the forwarding loop.
///
/// The backend is untrusted. The driver only ever *writes* the descriptor table and the avail
/// ring, and keeps its own copy of everything it needs back (chain links, posted lengths,
/// cookies, avail order) in private side tables, so a hostile used ring can at worst make it
/// report a wrong buffer as done; it cannot make it index outside its tables or trap. See
/// `dequeueUsed` for the rules.
///
/// Ownership: one thread owns a ring. The struct holds pointers to its side tables, so a copy
/// shares them; use only one copy, and call `deallocate()` once.
@frozen
public struct SplitRing {
    /// Number of descriptors (a power of two, 1...32768).
    public let queueSize: UInt16
    @usableFromInline let mask: UInt16
    @usableFromInline let desc: UnsafeMutableRawPointer
    @usableFromInline let avail: UnsafeMutableRawPointer
    @usableFromInline let used: UnsafeMutableRawPointer
    /// Byte offset of `used_event` in the avail ring.
    @usableFromInline let usedEventOffset: Int
    /// Byte offset of `avail_event` in the used ring.
    @usableFromInline let availEventOffset: Int
    @usableFromInline let eventIdx: Bool
    @usableFromInline let inOrder: Bool
    /// Per descriptor: links, cookie, posted writable length, chain length.
    @usableFromInline let state: UnsafeMutablePointer<SplitRingDescriptorState>
    /// Private copy of the avail ring: the head made available at each slot, so the driver
    /// never has to trust the shared copy to know what it posted and in which order.
    @usableFromInline let availHeads: UnsafeMutablePointer<UInt16>

    @usableFromInline var freeHead: UInt16
    @usableFromInline var _numFree: Int
    @usableFromInline var _inFlight: Int
    @usableFromInline var _availIndex: UInt16
    /// The avail idx last stored into shared memory.
    @usableFromInline var publishedIndex: UInt16
    /// The published idx at the previous `kickNeeded()` (the `old` of vring_need_event).
    @usableFromInline var kickedIndex: UInt16
    @usableFromInline var _lastUsedIndex: UInt16
    /// With IN_ORDER: the avail slot of the oldest in-flight chain. In-flight chains are then
    /// exactly the slots `oldestSlot ..< availIndex`.
    @usableFromInline var oldestSlot: UInt16
    /// With IN_ORDER: chains left in the batch whose used entry was read last (0: the next
    /// chain starts a batch, so its used entry is read), and that entry's length, which
    /// belongs to the batch's last chain.
    @usableFromInline var batchLeft: Int
    @usableFromInline var batchLength: UInt32
    @usableFromInline var _invalidUsedIds: UInt64
    @usableFromInline var _invalidUsedLengths: UInt64
    /// INDIRECT_DESC tables (see `attachIndirect`): one per descriptor, `indirectStride` bytes
    /// apart, shared with the device. Nil until attached.
    @usableFromInline var indirectTables: UnsafeMutableRawPointer? = nil
    @usableFromInline var indirectStride: Int = 0
    /// Descriptors one indirect table holds; 0 without tables.
    @usableFromInline var _indirectCapacity: Int = 0

    /// - Parameters:
    ///   - memory: zeroed, 4096-aligned, at least `SplitRingLayout.totalSize` bytes, shared with
    ///     the device. Not owned: the caller frees it after `deallocate()`.
    ///   - queueSize: a power of two, 1...32768 (§2.7: split rings need a power of two).
    ///   - eventIdx: VIRTIO_F_EVENT_IDX was negotiated (§2.7.10).
    ///   - inOrder: VIRTIO_F_IN_ORDER was negotiated (§2.7.9 and the IN_ORDER rules of §2.7.5):
    ///     descriptors are then handed out in ring order and a used entry may complete a batch.
    ///
    /// Allocates the private side tables; call `deallocate()` once when the ring is torn down.
    public init(memory: UnsafeMutableRawPointer, queueSize: UInt16, eventIdx: Bool, inOrder: Bool) {
        precondition(queueSize > 0 && queueSize <= 32768 && queueSize & (queueSize &- 1) == 0,
                     "split ring size must be a power of two in 1...32768")
        precondition(UInt(bitPattern: memory) % UInt(SplitRingLayout.alignment) == 0,
                     "split ring memory must be 4096-aligned")
        let n = Int(queueSize)
        self.queueSize = queueSize
        mask = queueSize &- 1
        desc = memory
        avail = memory + SplitRingLayout.availOffset(queueSize: n)
        used = memory + SplitRingLayout.usedOffset(queueSize: n)
        usedEventOffset = SplitRingLayout.usedEventOffset(queueSize: n)
        availEventOffset = SplitRingLayout.availEventOffset(queueSize: n)
        self.eventIdx = eventIdx
        self.inOrder = inOrder
        // SAFETY: fresh allocations of n elements, fully initialised before use. The free list
        // links i -> i+1 (mod n): ring order, which IN_ORDER requires for chain `next` fields.
        state = .allocate(capacity: n)
        for i in 0..<n {
            (state + i).initialize(to: SplitRingDescriptorState(next: UInt16(truncatingIfNeeded: (i + 1) & (n - 1))))
        }
        availHeads = .allocate(capacity: n)
        availHeads.initialize(repeating: 0, count: n)
        freeHead = 0
        _numFree = n
        _inFlight = 0
        _availIndex = 0
        publishedIndex = 0
        kickedIndex = 0
        _lastUsedIndex = 0
        oldestSlot = 0
        batchLeft = 0
        batchLength = 0
        _invalidUsedIds = 0
        _invalidUsedLengths = 0
    }

    /// Frees the side tables. The ring must not be used afterwards.
    // SAFETY: the tables were allocated in init; the caller calls this once.
    public func deallocate() {
        state.deinitialize(count: Int(queueSize))
        state.deallocate()
        availHeads.deallocate()
    }

    // ---- addresses for SET_VRING_ADDR ---------------------------------------------------------

    public var descTable: UnsafeMutableRawPointer { desc }
    public var availRing: UnsafeMutableRawPointer { avail }
    public var usedRing: UnsafeMutableRawPointer { used }

    // ---- counters -----------------------------------------------------------------------------

    /// Free descriptors.
    @inlinable public var numFree: Int { _numFree }
    /// Chains added and not yet completed (published or not).
    @inlinable public var inFlight: Int { _inFlight }
    /// The next avail idx the driver will publish (its shadow of avail->idx).
    @inlinable public var availIndex: UInt16 { _availIndex }
    /// The next used idx the driver will read.
    @inlinable public var lastUsedIndex: UInt16 { _lastUsedIndex }
    /// Used entries skipped because their id was out of range or not an in-flight chain head.
    @inlinable public var invalidUsedIds: UInt64 { _invalidUsedIds }
    /// Used entries whose length exceeded what the chain offered the device; reported as 0.
    @inlinable public var invalidUsedLengths: UInt64 { _invalidUsedLengths }

    /// Chains the device can see: in flight and already published.
    @inlinable
    var publishedInFlight: Int { _inFlight &- Int(_availIndex &- publishedIndex) }

    // ---- adding buffers -----------------------------------------------------------------------

    /// Posts one buffer as a one-descriptor chain. Returns false when no descriptor is free.
    /// Visible to the device only after `publish()`.
    // SAFETY: writes descriptor `head` (< queueSize, from the private free list) and avail slot
    // `availIndex & mask`, both inside the ring memory the caller provided.
    @inlinable
    public mutating func addBuffer(address: UInt64, length: UInt32, deviceWritable: Bool, cookie: UInt32) -> Bool {
        guard _numFree > 0 else { return false }
        let head = freeHead
        let h = Int(head)
        freeHead = state[h].next
        _numFree &-= 1
        writeDescriptor(h, address: address, length: length,
                        flags: deviceWritable ? VringFlags.descWrite : 0, next: 0)
        state[h].cookie = cookie
        state[h].writableLength = deviceWritable ? length : 0
        state[h].chainLength = 1
        makeAvailable(head)
        return true
    }

    /// Posts a chain of buffers. Returns false when fewer than `segments.count` descriptors are
    /// free, when `segments` is empty, or when a readable segment follows a writable one
    /// (§2.7.4.2: device-writable descriptors must come last). Nothing is posted then.
    // SAFETY: every descriptor written comes from the private free list (< queueSize).
    @inlinable
    public mutating func addChain(_ segments: UnsafeBufferPointer<RingSegment>, cookie: UInt32) -> Bool {
        let count = segments.count
        guard count > 0, count <= _numFree else { return false }
        if count == 1 {
            let s = segments[0]
            return addBuffer(address: s.address, length: s.length, deviceWritable: s.deviceWritable, cookie: cookie)
        }
        // Check the direction order first, so a refused chain leaves no trace.
        var sawWritable = false
        var writable: UInt64 = 0
        for s in segments {
            if s.deviceWritable {
                sawWritable = true
                writable &+= UInt64(s.length)
            } else if sawWritable {
                return false
            }
        }
        let head = freeHead
        var index = head
        var i = 0
        while true {
            let s = segments[i]
            let next = state[Int(index)].next
            let last = i == count &- 1
            var flags: UInt16 = s.deviceWritable ? VringFlags.descWrite : 0
            if !last { flags |= VringFlags.descNext }
            writeDescriptor(Int(index), address: s.address, length: s.length, flags: flags, next: last ? 0 : next)
            if last { break }
            index = next
            i &+= 1
        }
        freeHead = state[Int(index)].next
        _numFree &-= count
        let h = Int(head)
        state[h].cookie = cookie
        state[h].writableLength = writable > UInt64(UInt32.max) ? UInt32.max : UInt32(truncatingIfNeeded: writable)
        state[h].chainLength = UInt16(truncatingIfNeeded: count)
        makeAvailable(head)
        return true
    }

    // SAFETY: `index` < queueSize, so the 16 bytes lie inside the descriptor table.
    @inlinable
    func writeDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let d = desc + index &* SplitRingLayout.descriptorSize
        d.storeBytes(of: address.littleEndian, toByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self)
        d.storeBytes(of: length.littleEndian, toByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self)
        // flags and next are adjacent: one 32-bit store.
        let flagsAndNext = UInt32(flags) | UInt32(next) << 16
        d.storeBytes(of: flagsAndNext.littleEndian, toByteOffset: SplitRingLayout.descFlagsOffset, as: UInt32.self)
    }

    // SAFETY: the slot is masked, so it lies inside the avail ring and the private copy.
    @inlinable
    mutating func makeAvailable(_ head: UInt16) {
        let slot = Int(_availIndex & mask)
        avail.storeBytes(of: head.littleEndian, toByteOffset: SplitRingLayout.availRingOffset &+ slot &* 2,
                         as: UInt16.self)
        availHeads[slot] = head
        _availIndex &+= 1
        _inFlight &+= 1
    }

    // ---- publishing and kicking ---------------------------------------------------------------

    /// Makes everything added since the last call visible: a release store of avail->idx, so
    /// the device that sees the new idx also sees the descriptors and ring slots (§2.7.13.3).
    // SAFETY: avail->idx lies inside the ring memory.
    @inlinable
    public mutating func publish() {
        guard _availIndex != publishedIndex else { return }
        ferry_store_release_u16(avail + SplitRingLayout.availIdxOffset, _availIndex.littleEndian)
        publishedIndex = _availIndex
    }

    /// Whether the device must be notified of what was published since the previous call
    /// (§2.7.13.4). The full fence orders the avail idx store before the read of the device's
    /// suppression field; without it both sides can miss each other and the ring stalls.
    /// With EVENT_IDX: `vring_need_event(avail_event, new, old)`; otherwise: used->flags lacks
    /// NO_NOTIFY. False when nothing was published since the previous call. Call it after every
    /// `publish()`: the EVENT_IDX window is 16 bits, so more than 65535 publications between two
    /// calls would wrap it.
    // SAFETY: reads used->flags or avail_event, both inside the ring memory.
    @inlinable
    public mutating func kickNeeded() -> Bool {
        let new = publishedIndex
        let old = kickedIndex
        guard new != old else { return false }
        kickedIndex = new
        ferry_fence_seq_cst()
        if eventIdx {
            let event = UInt16(littleEndian: ferry_load_relaxed_u16(used + availEventOffset))
            return VringFlags.needEvent(eventIndex: event, new: new, old: old)
        }
        let flags = UInt16(littleEndian: ferry_load_relaxed_u16(used + SplitRingLayout.usedFlagsOffset))
        return flags & VringFlags.usedNoNotify == 0
    }

    // ---- interrupts ---------------------------------------------------------------------------

    /// Asks the device not to interrupt (§2.7.7, §2.7.10). Without EVENT_IDX: avail->flags =
    /// NO_INTERRUPT. With EVENT_IDX the flags must stay 0, so used_event is set just behind
    /// lastUsedIndex: the device would only reach it again after 65535 more entries. Advisory:
    /// a device may still interrupt.
    // SAFETY: avail->flags and used_event lie inside the ring memory.
    public mutating func disableInterrupts() {
        if eventIdx {
            ferry_store_relaxed_u16(avail + usedEventOffset, (_lastUsedIndex &- 1).littleEndian)
        } else {
            ferry_store_relaxed_u16(avail + SplitRingLayout.availFlagsOffset, VringFlags.availNoInterrupt.littleEndian)
        }
    }

    /// Asks the device to interrupt on the next used entry, then re-checks the used ring after a
    /// full fence. Returns true when entries are already pending: the device may have added
    /// them before it saw the request, so the caller must poll again rather than sleep.
    // SAFETY: avail->flags, used_event and used->idx lie inside the ring memory.
    public mutating func enableInterrupts() -> Bool {
        if eventIdx {
            ferry_store_relaxed_u16(avail + usedEventOffset, _lastUsedIndex.littleEndian)
        } else {
            ferry_store_relaxed_u16(avail + SplitRingLayout.availFlagsOffset, 0)
        }
        ferry_fence_seq_cst()
        return pendingUsed() > 0
    }

    /// Used entries waiting: used->idx - lastUsedIndex, clamped to the published chains in
    /// flight (a device cannot legitimately have completed more).
    // SAFETY: used->idx lies inside the ring memory.
    public func pendingUsed() -> Int {
        let deviceIndex = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitRingLayout.usedIdxOffset))
        return min(Int(deviceIndex &- _lastUsedIndex), publishedInFlight)
    }

    /// Calls `body` with the cookie of every chain not yet completed, published or not: the
    /// buffers to release when the ring is stopped. Avail order with IN_ORDER, otherwise
    /// descriptor order.
    public func forEachInFlight(_ body: (UInt32) -> Void) {
        if inOrder {
            var slot = oldestSlot
            while slot != _availIndex {
                body(state[Int(availHeads[Int(slot & mask)])].cookie)
                slot &+= 1
            }
        } else {
            for i in 0..<Int(queueSize) where state[i].chainLength != 0 {
                body(state[i].cookie)
            }
        }
    }
}

// A ring is handed to the worker thread that owns it; it is not shared between threads.
extension SplitRing: @unchecked Sendable {}
