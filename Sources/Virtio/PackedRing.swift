import CFerry

/// The driver side of a packed virtqueue (virtio 1.2 §2.8): posting buffers, publishing them,
/// deciding whether to kick, and reclaiming what the device used.
///
/// One descriptor ring carries both directions. The driver writes available descriptors at
/// its avail position, flagged with its avail wrap counter (AVAIL = w, USED = !w); the device
/// overwrites them with used descriptors at its own used position (AVAIL = USED = its used wrap
/// counter). Each counter flips when its position passes the end of the ring, so a slot's owner
/// is told by the flag bits alone and the ring size need not be a power of two (1...32768).
///
/// Buffer ids are not ring positions: a chain of k descriptors takes k consecutive slots and
/// one id, and a used descriptor names the id. Without IN_ORDER ids come from a private free
/// list; with IN_ORDER the id is the chain's head position, which is free whenever that slot is
/// (chains complete in ring order), and which lets the driver locate a batch without a lookup.
///
/// Publishing: the flags of the first descriptor of the not-yet-published batch are held back
/// and release-stored by `publish()`, after every other descriptor of the batch is written; the
/// device reads the ring in order, so the whole batch appears at once (§2.8, "Supplying Buffers
/// to The Device"). Every other chain's head flags are release-stored after the rest of its
/// chain.
///
/// Hot path: a struct over raw pointers, no allocation after `init`, every per-packet method
/// `@inlinable` so it is specialised into the forwarding loop.
///
/// The backend is untrusted: the driver keeps chain lengths, posted writable lengths and cookies
/// per id in private memory, so a hostile used descriptor can at worst make it report a wrong
/// buffer as done or stall the queue; it cannot make it index outside its tables or the ring,
/// complete a buffer twice, or loop. See `dequeueUsed` for the rules.
///
/// Ownership: one thread owns a ring. A copy shares the side table; use only one copy, and
/// call `deallocate()` once.
@frozen
public struct PackedRing {
    /// Number of descriptors (1...32768, any value).
    public let queueSize: UInt16
    @usableFromInline let desc: UnsafeMutableRawPointer
    /// The driver event suppression area (written by the driver: used buffer notifications).
    @usableFromInline let driverEvent: UnsafeMutableRawPointer
    /// The device event suppression area (written by the device: available buffer
    /// notifications).
    @usableFromInline let deviceEvent: UnsafeMutableRawPointer
    @usableFromInline let eventIdx: Bool
    @usableFromInline let inOrder: Bool
    /// Per buffer id: cookie, posted writable length, chain length, free link, serial.
    @usableFromInline let state: UnsafeMutablePointer<PackedRingBufferState>

    /// Next ring slot the driver writes, and the avail wrap counter there.
    @usableFromInline var availPosition: UInt16
    @usableFromInline var availWrap: Bool
    /// Next ring slot the driver reads a used descriptor from, and the used wrap counter there.
    @usableFromInline var usedPosition: UInt16
    @usableFromInline var usedWrap: Bool
    /// Head of the free id list (not IN_ORDER).
    @usableFromInline var freeId: UInt16
    @usableFromInline var _numFree: Int
    @usableFromInline var _inFlight: Int
    /// Chains added so far (wrapping): the next chain's serial.
    @usableFromInline var addSerial: UInt32
    /// Slots and chains added since the last `publish()`.
    @usableFromInline var unpublishedSlots: Int
    @usableFromInline var unpublishedChains: Int
    /// The first descriptor of the unpublished batch and the flags `publish()` will store there.
    @usableFromInline var pendingHeadPosition: UInt16
    @usableFromInline var pendingHeadFlags: UInt16
    /// The avail position and wrap counter at the last `publish()`: the `new` of the kick test.
    @usableFromInline var publishedPosition: UInt16
    @usableFromInline var publishedWrap: Bool
    /// Slots published since the previous `kickNeeded()`.
    @usableFromInline var slotsSinceKick: Int
    /// With IN_ORDER: head position (= id) of the oldest in-flight chain and the wrap counter
    /// there. In-flight chains then occupy exactly the slots from it up to the avail position.
    @usableFromInline var oldestPosition: UInt16
    @usableFromInline var oldestWrap: Bool
    /// With IN_ORDER: a used descriptor already consumed whose batch is not fully reported yet
    /// (the caller's room ran out): its id and length.
    @usableFromInline var batchPending: Bool
    @usableFromInline var batchId: UInt16
    @usableFromInline var batchLength: UInt32
    @usableFromInline var _invalidUsedIds: UInt64
    @usableFromInline var _invalidUsedLengths: UInt64
    /// INDIRECT_DESC tables (see `attachIndirect`): one per buffer id, `indirectStride` bytes
    /// apart, shared with the device. Nil until attached.
    @usableFromInline var indirectTables: UnsafeMutableRawPointer? = nil
    @usableFromInline var indirectStride: Int = 0
    /// Descriptors one indirect table holds; 0 without tables.
    @usableFromInline var _indirectCapacity: Int = 0

    /// - Parameters:
    ///   - memory: zeroed, 4096-aligned, at least `PackedRingLayout.totalSize` bytes, shared
    ///     with the device. Not owned: the caller frees it after `deallocate()`.
    ///   - queueSize: 1...32768, not necessarily a power of two (§2.8).
    ///   - eventIdx: VIRTIO_F_EVENT_IDX was negotiated: descriptor-based event suppression
    ///     (§2.8.10) is then honoured and used.
    ///   - inOrder: VIRTIO_F_IN_ORDER was negotiated (§2.8, "In-order use of descriptors"): the
    ///     device uses buffers in the order they were made available and may write one used
    ///     descriptor for a whole batch.
    ///
    /// Both wrap counters start at 1 (§2.8.1), so a zeroed ring holds no available and no used
    /// descriptor. Allocates the private side table; call `deallocate()` once.
    public init(memory: UnsafeMutableRawPointer, queueSize: UInt16, eventIdx: Bool, inOrder: Bool) {
        precondition(queueSize > 0 && Int(queueSize) <= PackedRingLayout.maxQueueSize,
                     "packed ring size must be in 1...32768")
        precondition(UInt(bitPattern: memory) % UInt(PackedRingLayout.alignment) == 0,
                     "packed ring memory must be 4096-aligned")
        let n = Int(queueSize)
        self.queueSize = queueSize
        desc = memory
        driverEvent = memory + PackedRingLayout.driverEventOffset(queueSize: n)
        deviceEvent = memory + PackedRingLayout.deviceEventOffset(queueSize: n)
        self.eventIdx = eventIdx
        self.inOrder = inOrder
        // SAFETY: a fresh allocation of n elements, fully initialised before use. The free id
        // list links i -> i+1; the last link is never followed (n ids cover n slots).
        state = .allocate(capacity: n)
        for i in 0..<n {
            (state + i).initialize(to: PackedRingBufferState(nextFree: UInt16(truncatingIfNeeded: i + 1)))
        }
        availPosition = 0
        availWrap = true
        usedPosition = 0
        usedWrap = true
        freeId = 0
        _numFree = n
        _inFlight = 0
        addSerial = 0
        unpublishedSlots = 0
        unpublishedChains = 0
        pendingHeadPosition = 0
        pendingHeadFlags = 0
        publishedPosition = 0
        publishedWrap = true
        slotsSinceKick = 0
        oldestPosition = 0
        oldestWrap = true
        batchPending = false
        batchId = 0
        batchLength = 0
        _invalidUsedIds = 0
        _invalidUsedLengths = 0
    }

    /// Frees the side table. The ring must not be used afterwards.
    // SAFETY: the table was allocated in init; the caller calls this once.
    public func deallocate() {
        state.deinitialize(count: Int(queueSize))
        state.deallocate()
    }

    // ---- addresses for SET_VRING_ADDR ---------------------------------------------------------

    /// The descriptor ring (SET_VRING_ADDR `desc_user_addr`).
    public var descTable: UnsafeMutableRawPointer { desc }
    /// The driver event suppression area (SET_VRING_ADDR `avail_user_addr`, as the seed sends).
    public var availRing: UnsafeMutableRawPointer { driverEvent }
    /// The device event suppression area (SET_VRING_ADDR `used_user_addr`).
    public var usedRing: UnsafeMutableRawPointer { deviceEvent }

    // ---- counters -----------------------------------------------------------------------------

    /// Free descriptor slots.
    @inlinable public var numFree: Int { _numFree }
    /// Chains added and not yet completed (published or not).
    @inlinable public var inFlight: Int { _inFlight }
    /// The next slot the driver writes, with the avail wrap counter in bit 15
    /// (`position | wrap << 15`): the encoding of `off_wrap` and of the vring base.
    @inlinable public var availIndex: UInt16 { PackedRingFlags.encode(position: availPosition, wrap: availWrap) }
    /// The next slot the driver reads a used descriptor from, with the used wrap counter in
    /// bit 15.
    @inlinable public var lastUsedIndex: UInt16 { PackedRingFlags.encode(position: usedPosition, wrap: usedWrap) }
    /// Used descriptors skipped because their id was out of range, not in flight, or not yet
    /// published.
    @inlinable public var invalidUsedIds: UInt64 { _invalidUsedIds }
    /// Used descriptors whose length exceeded what the chain offered the device; reported as 0.
    @inlinable public var invalidUsedLengths: UInt64 { _invalidUsedLengths }

    /// Chains the device can see: in flight and already published.
    @inlinable
    var publishedInFlight: Int { _inFlight &- unpublishedChains }

    // ---- vring base (SET_VRING_BASE / GET_VRING_BASE) -----------------------------------------

    /// `availIndex` as a vring base: where the driver writes next.
    public var availBase: UInt32 { UInt32(availIndex) }
    /// `lastUsedIndex` as a vring base: where the driver expects the next used descriptor.
    public var usedBase: UInt32 { UInt32(lastUsedIndex) }

    /// The SET_VRING_BASE value when the device (re)starts on this ring: the used position with
    /// the used wrap counter in bit 15, `0x8000` for a fresh ring exactly as the seed sends.
    /// DPDK's vhost takes bits 0–14 and bit 15 as both its next avail and its next used position
    /// (it ignores bits 16–31), so the used side is the one to send: the device must write used
    /// descriptors where the driver reads them. With nothing in flight the two positions agree.
    public var initialBase: UInt32 { usedBase }

    /// Splits a packed vring base (`position | wrap << 15`, as SET/GET_VRING_BASE carry it;
    /// bits 16–31, the used half some back-ends add, are ignored) into position and wrap counter.
    public static func decodeBase(_ base: UInt32) -> (position: UInt16, wrap: Bool) {
        let low = UInt16(truncatingIfNeeded: base)
        return (low & PackedRingFlags.offsetMask, low >> PackedRingFlags.wrapShift != 0)
    }

    /// Slots the driver has made available (or added) that the device has not taken, given
    /// the device's next avail position from GET_VRING_BASE; clamped to the slots in use, so a
    /// nonsense base gives a bounded answer.
    public func pendingAvail(deviceBase: UInt32) -> Int {
        let (position, wrap) = Self.decodeBase(deviceBase)
        let n = Int(queueSize)
        // Positions on a line of 2n slots: the wrap counter alternates every lap.
        let driver = Int(availPosition) + (availWrap ? n : 0)
        let device = Int(position) + (wrap ? n : 0)
        let ahead = ((driver - device) % (2 * n) + 2 * n) % (2 * n)
        return min(ahead, n - _numFree)
    }

    // ---- adding buffers -----------------------------------------------------------------------

    /// Posts one buffer as a one-descriptor chain. Returns false when no slot is free. Visible
    /// to the device only after `publish()`.
    // SAFETY: writes slot `availPosition` (< queueSize) of the descriptor ring; the id comes
    // from the private free list or is that slot (< queueSize).
    @inlinable
    public mutating func addBuffer(address: UInt64, length: UInt32, deviceWritable: Bool, cookie: UInt32) -> Bool {
        guard _numFree > 0 else { return false }
        let position = availPosition
        let id = takeId(headPosition: position)
        let s = state + Int(id)
        s.pointee.cookie = cookie
        s.pointee.writableLength = deviceWritable ? length : 0
        s.pointee.chainLength = 1
        s.pointee.serial = addSerial
        let flags = (deviceWritable ? PackedRingFlags.descWrite : 0) | PackedRingFlags.availBits(wrap: availWrap)
        writeDescriptorBody(position, address: address, length: length, id: id)
        commitHead(position, flags: flags)
        advanceAvail()
        finishAdd(slots: 1)
        return true
    }

    /// Posts a chain of buffers in consecutive slots. Returns false when fewer than
    /// `segments.count` slots are free, when `segments` is empty, or when a readable segment
    /// follows a writable one (device-writable buffers come last, as in §2.7.4.2).
    /// Nothing is posted then.
    // SAFETY: every slot written is `availPosition` advanced modulo queueSize; the id is < queueSize.
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
        let headPosition = availPosition
        let id = takeId(headPosition: headPosition)
        var headFlags: UInt16 = 0
        var i = 0
        while i < count {
            let s = segments[i]
            var flags = (s.deviceWritable ? PackedRingFlags.descWrite : 0) | PackedRingFlags.availBits(wrap: availWrap)
            if i != count &- 1 { flags |= PackedRingFlags.descNext }
            let position = availPosition
            writeDescriptorBody(position, address: s.address, length: s.length, id: id)
            if i == 0 {
                headFlags = flags
            } else {
                // Plain store: the device reads these only after it sees the head's flags,
                // which are stored after them with release.
                (desc + Int(position) &* PackedRingLayout.descriptorSize)
                    .storeBytes(of: flags.littleEndian, toByteOffset: PackedRingLayout.descFlagsOffset, as: UInt16.self)
            }
            advanceAvail()
            i &+= 1
        }
        let st = state + Int(id)
        st.pointee.cookie = cookie
        st.pointee.writableLength = writable > UInt64(UInt32.max) ? UInt32.max : UInt32(truncatingIfNeeded: writable)
        st.pointee.chainLength = UInt16(truncatingIfNeeded: count)
        st.pointee.serial = addSerial
        commitHead(headPosition, flags: headFlags)
        finishAdd(slots: count)
        return true
    }

    /// A free id: the head slot itself with IN_ORDER, else the top of the free list. Only called
    /// with a free slot, hence (chains in flight < slots in use + 1 <= queueSize) a free id.
    // SAFETY: `freeId` is always < queueSize while an id is free.
    @inlinable
    mutating func takeId(headPosition: UInt16) -> UInt16 {
        if inOrder { return headPosition }
        let id = freeId
        freeId = state[Int(id)].nextFree
        return id
    }

    /// Writes addr, len and id of the descriptor at `position`; the flags are written apart.
    // SAFETY: `position` < queueSize, so the 16 bytes lie inside the descriptor ring.
    @inlinable
    func writeDescriptorBody(_ position: UInt16, address: UInt64, length: UInt32, id: UInt16) {
        let d = desc + Int(position) &* PackedRingLayout.descriptorSize
        d.storeBytes(of: address.littleEndian, toByteOffset: PackedRingLayout.descAddrOffset, as: UInt64.self)
        d.storeBytes(of: length.littleEndian, toByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)
        d.storeBytes(of: id.littleEndian, toByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self)
    }

    /// Makes a chain's head available: held back when it opens the unpublished batch (then
    /// `publish()` stores it), otherwise release-stored now, after the rest of its chain.
    // SAFETY: `position` < queueSize.
    @inlinable
    mutating func commitHead(_ position: UInt16, flags: UInt16) {
        if unpublishedSlots == 0 {
            pendingHeadPosition = position
            pendingHeadFlags = flags
        } else {
            ferry_store_release_u16(desc + (Int(position) &* PackedRingLayout.descriptorSize
                                                &+ PackedRingLayout.descFlagsOffset), flags.littleEndian)
        }
    }

    /// Moves the avail position one slot, flipping the avail wrap counter at the ring's end.
    @inlinable
    mutating func advanceAvail() {
        availPosition &+= 1
        if availPosition == queueSize {
            availPosition = 0
            availWrap.toggle()
        }
    }

    @inlinable
    mutating func finishAdd(slots: Int) {
        _numFree &-= slots
        _inFlight &+= 1
        unpublishedSlots &+= slots
        unpublishedChains &+= 1
        addSerial &+= 1
    }

    // ---- publishing and kicking ---------------------------------------------------------------

    /// Makes everything added since the last call visible: a release store of the flags of the
    /// batch's first descriptor, so the device that sees it available also sees every
    /// descriptor after it (§2.8, "Updating flags").
    // SAFETY: `pendingHeadPosition` < queueSize.
    @inlinable
    public mutating func publish() {
        guard unpublishedSlots > 0 else { return }
        ferry_store_release_u16(desc + (Int(pendingHeadPosition) &* PackedRingLayout.descriptorSize
                                            &+ PackedRingLayout.descFlagsOffset), pendingHeadFlags.littleEndian)
        slotsSinceKick &+= unpublishedSlots
        publishedPosition = availPosition
        publishedWrap = availWrap
        unpublishedSlots = 0
        unpublishedChains = 0
    }

    /// Whether the device must be notified of what was published since the previous call
    /// (§2.8, "Driver notifications", with §2.8.10). The full fence orders the descriptor flag
    /// stores before the read of the device's event suppression area; without it both sides can
    /// miss each other and the ring stalls. The area is read as one 32-bit snapshot so
    /// `off_wrap` and `flags` agree.
    /// - flags DISABLE: no kick.
    /// - flags DESC with EVENT_IDX: kick when the device's event offset/wrap lies among the
    ///   slots published since the previous call (always after a whole lap or more).
    /// - anything else (ENABLE, DESC without EVENT_IDX, the reserved value 3): kick. A device
    ///   must not use DESC without EVENT_IDX; kicking is the safe reading of a broken area.
    /// False when nothing was published since the previous call.
    // SAFETY: reads the 4-byte device event area inside the ring memory.
    @inlinable
    public mutating func kickNeeded() -> Bool {
        let added = slotsSinceKick
        guard added > 0 else { return false }
        slotsSinceKick = 0
        ferry_fence_seq_cst()
        let snapshot = UInt32(littleEndian: ferry_load_acquire_u32(deviceEvent))
        let flags = UInt16(truncatingIfNeeded: snapshot >> 16) & PackedRingFlags.eventFlagsMask
        if flags == PackedRingFlags.eventFlagsDisable { return false }
        guard flags == PackedRingFlags.eventFlagsDesc, eventIdx else { return true }
        if added >= Int(queueSize) { return true }
        return PackedRingFlags.needEvent(offWrap: UInt16(truncatingIfNeeded: snapshot), new: publishedPosition,
                                         wrap: publishedWrap, added: UInt16(truncatingIfNeeded: added),
                                         queueSize: queueSize)
    }

    // ---- interrupts ---------------------------------------------------------------------------

    /// Asks the device not to interrupt: driver area flags = DISABLE (§2.8.10; allowed with or
    /// without EVENT_IDX). Advisory: a device may still interrupt.
    // SAFETY: the driver event area lies inside the ring memory.
    public mutating func disableInterrupts() {
        ferry_store_release_u16(driverEvent + PackedRingLayout.eventFlagsOffset,
                                PackedRingFlags.eventFlagsDisable.littleEndian)
    }

    /// Asks the device to interrupt on the next used descriptor (with EVENT_IDX: `off_wrap` =
    /// the used position and wrap, flags = DESC; otherwise flags = ENABLE), then re-checks the
    /// ring after a full fence. Returns true when used descriptors are already waiting: the
    /// device may have written them before it saw the request, so the caller must poll again
    /// rather than sleep.
    // SAFETY: the driver event area lies inside the ring memory.
    public mutating func enableInterrupts() -> Bool {
        if eventIdx {
            ferry_store_relaxed_u16(driverEvent + PackedRingLayout.eventOffWrapOffset, lastUsedIndex.littleEndian)
            ferry_store_release_u16(driverEvent + PackedRingLayout.eventFlagsOffset,
                                    PackedRingFlags.eventFlagsDesc.littleEndian)
        } else {
            ferry_store_release_u16(driverEvent + PackedRingLayout.eventFlagsOffset,
                                    PackedRingFlags.eventFlagsEnable.littleEndian)
        }
        ferry_fence_seq_cst()
        return pendingUsed() > 0
    }

    /// Calls `body` with the cookie of every chain not yet completed, published or not: the
    /// buffers to release when the ring is stopped. Ring order with IN_ORDER, otherwise id order.
    // SAFETY: positions and ids index the table below queueSize.
    public func forEachInFlight(_ body: (UInt32) -> Void) {
        if inOrder {
            var position = oldestPosition
            var left = _inFlight
            while left > 0 {
                let s = state[Int(position)]
                guard s.chainLength != 0 else { return } // unreachable: in-flight chains are contiguous
                body(s.cookie)
                position = Self.advance(position, by: s.chainLength, queueSize: queueSize).position
                left &-= 1
            }
        } else {
            for i in 0..<Int(queueSize) where state[i].chainLength != 0 {
                body(state[i].cookie)
            }
        }
    }

    /// `position + count` modulo the ring size (count <= queueSize), and whether the wrap
    /// counter flips on the way.
    @inlinable
    static func advance(_ position: UInt16, by count: UInt16, queueSize: UInt16) -> (position: UInt16, flipped: Bool) {
        let sum = UInt32(position) &+ UInt32(count)
        if sum >= UInt32(queueSize) { return (UInt16(truncatingIfNeeded: sum &- UInt32(queueSize)), true) }
        return (UInt16(truncatingIfNeeded: sum), false)
    }
}

// A ring is handed to the worker thread that owns it; it is not shared between threads.
extension PackedRing: @unchecked Sendable {}
