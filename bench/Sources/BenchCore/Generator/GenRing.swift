import CFerry
import Virtio

/// The DEVICE side of one split virtqueue (virtio 1.2 §2.7), as the traffic generator drives
/// it: pop heads from the avail ring, read or fill their buffers, write used entries and
/// publish used->idx once per batch, as DPDK's vhost does.
///
/// A struct over raw pointers into the driver's shared memory, with no allocation: the
/// generator's loop must be cheaper than the DUT it measures. Test support, not product.
/// The DUT is the driver, so the avail index it publishes is checked against the ring size
/// before use, and every head and `next` against the queue size.
public struct GenRing {
    public let size: UInt16
    let mask: UInt16
    let desc: UnsafeMutableRawPointer
    let avail: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer
    /// The next avail slot to read (SET_VRING_BASE / GET_VRING_BASE).
    public var lastAvail: UInt16
    /// The next used slot to write; published as used->idx by `publishUsed()`.
    public var usedIndex: UInt16
    /// used->idx as last published, so a batch with no entries stores nothing.
    var publishedUsed: UInt16
    /// Set once the driver published something impossible (an avail idx more than `size`
    /// ahead, a head out of range); the ring is then left alone.
    public var broken = false

    public init(size: UInt16, desc: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer,
                used: UnsafeMutableRawPointer, base: UInt16) {
        self.size = size
        mask = size &- 1
        self.desc = desc
        self.avail = avail
        self.used = used
        lastAvail = base
        // SAFETY: used->idx lies inside the used ring the driver gave.
        usedIndex = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitRingLayout.usedIdxOffset))
        publishedUsed = usedIndex
    }

    /// Chains the driver has made available and the generator has not taken.
    // SAFETY: avail->idx lies inside the avail ring.
    @inline(__always)
    public mutating func available() -> Int {
        let index = UInt16(littleEndian: ferry_load_acquire_u16(avail + SplitRingLayout.availIdxOffset))
        let n = Int(index &- lastAvail)
        if n > Int(size) {
            broken = true
            return 0
        }
        return n
    }

    /// Takes the next available head (call only after `available()` said there is one).
    /// Returns nil, and marks the ring broken, for a head outside the table.
    // SAFETY: the slot is masked, inside the avail ring.
    @inline(__always)
    public mutating func popHead() -> UInt16? {
        let slot = Int(lastAvail & mask)
        let head = UInt16(littleEndian: avail.load(fromByteOffset: SplitRingLayout.availRingOffset &+ slot &* 2,
                                                   as: UInt16.self))
        lastAvail &+= 1
        guard head < size else {
            broken = true
            return nil
        }
        return head
    }

    /// Descriptor `index` (< size): address, length, flags and next.
    // SAFETY: index < size, so the 16 bytes lie inside the descriptor table.
    @inline(__always)
    public func descriptor(_ index: UInt16) -> (address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let d = desc + Int(index) &* SplitRingLayout.descriptorSize
        let address = UInt64(littleEndian: d.load(fromByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self))
        let length = UInt32(littleEndian: d.load(fromByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self))
        let flagsNext = UInt32(littleEndian: d.load(fromByteOffset: SplitRingLayout.descFlagsOffset, as: UInt32.self))
        return (address, length, UInt16(truncatingIfNeeded: flagsNext), UInt16(truncatingIfNeeded: flagsNext >> 16))
    }

    /// Writes the used entry `{id, length}`; visible to the driver at `publishUsed()`.
    // SAFETY: the slot is masked, inside the used ring.
    @inline(__always)
    public mutating func pushUsed(id: UInt16, length: UInt32) {
        let entry = used + (SplitRingLayout.usedRingOffset &+ Int(usedIndex & mask) &* SplitRingLayout.usedElemSize)
        // id and len are adjacent: one 64-bit store.
        let both = UInt64(id) | UInt64(length) << 32
        entry.storeBytes(of: both.littleEndian, as: UInt64.self)
        usedIndex &+= 1
    }

    /// Release-stores used->idx, so the driver that sees it also sees the entries and the
    /// bytes written into its buffers (§2.7.13.3, from the device's side).
    // SAFETY: used->idx lies inside the used ring.
    @inline(__always)
    public mutating func publishUsed() {
        guard usedIndex != publishedUsed else { return }
        ferry_store_release_u16(used + SplitRingLayout.usedIdxOffset, usedIndex.littleEndian)
        publishedUsed = usedIndex
    }

    /// Whether the driver asked for interrupts (avail->flags without NO_INTERRUPT; EVENT_IDX is
    /// not offered). The full fence orders the used->idx store before the flags read.
    // SAFETY: avail->flags lies inside the avail ring.
    @inline(__always)
    public func driverWantsInterrupt() -> Bool {
        ferry_fence_seq_cst()
        let flags = UInt16(littleEndian: ferry_load_relaxed_u16(avail + SplitRingLayout.availFlagsOffset))
        return flags & VringFlags.availNoInterrupt == 0
    }

    /// used->flags = NO_NOTIFY: the generator polls, so the driver need not kick (what DPDK's
    /// net_vhost does when guest notifications are off).
    // SAFETY: used->flags lies inside the used ring.
    public func setNoNotify() {
        ferry_store_release_u16(used + SplitRingLayout.usedFlagsOffset, VringFlags.usedNoNotify.littleEndian)
    }
}

extension GenRing: @unchecked Sendable {}
