/// Where the three parts of a split virtqueue live in one block of memory (virtio 1.2 §2.7),
/// laid out like the legacy `vring_init`: descriptor table at 0, the available ring right after
/// it, the used ring on the next 4096-byte boundary. The used ring gets its own page because the
/// device writes it while the driver writes the other two: separate cache lines, and a layout
/// every backend (legacy ones included) accepts.
public enum SplitRingLayout {
    public static let alignment = 4096

    /// `struct virtq_desc` is 16 bytes: `{le64 addr; le32 len; le16 flags; le16 next}`.
    public static let descriptorSize = 16
    public static let descAddrOffset = 0
    public static let descLenOffset = 8
    public static let descFlagsOffset = 12
    public static let descNextOffset = 14

    /// `struct virtq_avail`: `{le16 flags; le16 idx; le16 ring[n]; le16 used_event}`.
    public static let availFlagsOffset = 0
    public static let availIdxOffset = 2
    public static let availRingOffset = 4

    /// `struct virtq_used`: `{le16 flags; le16 idx; {le32 id; le32 len} ring[n]; le16 avail_event}`.
    public static let usedFlagsOffset = 0
    public static let usedIdxOffset = 2
    public static let usedRingOffset = 4
    public static let usedElemSize = 8

    /// Offset of the available ring from the start of the block: right after 16·n descriptors.
    @inlinable
    public static func availOffset(queueSize: Int) -> Int { descriptorSize * queueSize }

    /// Offset of the used ring: the end of the available ring (6 + 2n bytes, `used_event`
    /// included) rounded up to 4096.
    @inlinable
    public static func usedOffset(queueSize: Int) -> Int {
        roundUp(availOffset(queueSize: queueSize) + 6 + 2 * queueSize)
    }

    /// Bytes the whole ring needs: the end of the used ring (6 + 8n bytes, `avail_event`
    /// included) rounded up to 4096.
    @inlinable
    public static func totalSize(queueSize: Int) -> Int {
        roundUp(usedOffset(queueSize: queueSize) + 6 + usedElemSize * queueSize)
    }

    /// `used_event` sits after the avail ring's n entries (EVENT_IDX, §2.7.10); offset within
    /// the avail ring.
    @inlinable
    public static func usedEventOffset(queueSize: Int) -> Int { availRingOffset + 2 * queueSize }

    /// `avail_event` sits after the used ring's n entries; offset within the used ring.
    @inlinable
    public static func availEventOffset(queueSize: Int) -> Int { usedRingOffset + usedElemSize * queueSize }

    @inlinable
    static func roundUp(_ value: Int) -> Int { (value + alignment - 1) & ~(alignment - 1) }
}

/// Flag values in the split ring (virtio 1.2 §2.7.5, §2.7.6, §2.7.8).
public enum VringFlags {
    /// Descriptor: the chain continues at `next`.
    public static let descNext: UInt16 = 1
    /// Descriptor: the device writes this buffer (otherwise it reads it).
    public static let descWrite: UInt16 = 2
    /// Descriptor: the buffer holds a table of descriptors (INDIRECT_DESC, §2.7.5.3).
    public static let descIndirect: UInt16 = 4
    /// avail->flags: the driver does not want interrupts (without EVENT_IDX).
    public static let availNoInterrupt: UInt16 = 1
    /// used->flags: the device does not want kicks (without EVENT_IDX).
    public static let usedNoNotify: UInt16 = 1

    /// `vring_need_event` (§2.7.10): true when `eventIndex` lies in the window of indices
    /// `[old, new)` that the other side just moved past, all modulo 2^16.
    @inlinable
    public static func needEvent(eventIndex: UInt16, new: UInt16, old: UInt16) -> Bool {
        new &- eventIndex &- 1 < new &- old
    }
}
