/// Where the three parts of a packed virtqueue live in one block of memory (virtio 1.2 §2.8):
/// the descriptor ring at 0, the driver event suppression area right after it, and the device
/// event suppression area on the next 4096-byte boundary. The device area is written by the
/// device while the driver writes the other one, so it gets its own page (and cache line); the
/// same shape DPDK's `vring_init_packed` produces with a 4096 alignment.
///
/// Unlike a split ring, the size need not be a power of two (§2.8: 1...32768).
public enum PackedRingLayout {
    public static let alignment = 4096

    /// `struct pvirtq_desc` is 16 bytes: `{le64 addr; le32 len; le16 id; le16 flags}`.
    public static let descriptorSize = 16
    public static let descAddrOffset = 0
    public static let descLenOffset = 8
    public static let descIdOffset = 12
    public static let descFlagsOffset = 14

    /// `struct pvirtq_event_suppress` is 4 bytes: `{le16 off_wrap; le16 flags}` (§2.8.10).
    public static let eventSuppressSize = 4
    public static let eventOffWrapOffset = 0
    public static let eventFlagsOffset = 2

    /// The largest packed ring: offsets in `off_wrap` and the vring base have 15 bits.
    public static let maxQueueSize = 32768

    /// Offset of the driver event suppression area: right after n descriptors (4-aligned, as
    /// §2.8.10 requires, since 16·n is).
    @inlinable
    public static func driverEventOffset(queueSize: Int) -> Int { descriptorSize * queueSize }

    /// Offset of the device event suppression area: the end of the driver area rounded up to
    /// 4096.
    @inlinable
    public static func deviceEventOffset(queueSize: Int) -> Int {
        roundUp(driverEventOffset(queueSize: queueSize) + eventSuppressSize)
    }

    /// Bytes the whole ring needs, rounded up to 4096.
    @inlinable
    public static func totalSize(queueSize: Int) -> Int {
        roundUp(deviceEventOffset(queueSize: queueSize) + eventSuppressSize)
    }

    @inlinable
    static func roundUp(_ value: Int) -> Int { (value + alignment - 1) & ~(alignment - 1) }
}

/// Flag and field values of the packed ring (virtio 1.2 §2.8.1, §2.8.10).
public enum PackedRingFlags {
    /// Descriptor: the buffer continues in the next ring slot.
    public static let descNext: UInt16 = 1
    /// Descriptor: the device writes this buffer (otherwise it reads it).
    public static let descWrite: UInt16 = 2
    /// Descriptor: the buffer holds a table of descriptors (INDIRECT_DESC, §2.8.7).
    public static let descIndirect: UInt16 = 4
    /// VIRTQ_DESC_F_AVAIL (bit 7).
    public static let descAvail: UInt16 = 1 << 7
    /// VIRTQ_DESC_F_USED (bit 15).
    public static let descUsed: UInt16 = 1 << 15
    /// Both ownership bits.
    public static let descAvailUsed: UInt16 = descAvail | descUsed

    /// Event suppression `flags`: notify on every event.
    public static let eventFlagsEnable: UInt16 = 0
    /// Event suppression `flags`: do not notify.
    public static let eventFlagsDisable: UInt16 = 1
    /// Event suppression `flags`: notify when the ring passes `off_wrap` (EVENT_IDX only).
    public static let eventFlagsDesc: UInt16 = 2
    /// The two bits of `flags` in use; the rest are reserved.
    public static let eventFlagsMask: UInt16 = 3

    /// `off_wrap` and the vring base keep the wrap counter in bit 15, the ring offset below it.
    public static let wrapShift: UInt16 = 15
    public static let offsetMask: UInt16 = 0x7FFF

    /// The AVAIL/USED bits a driver writes into a descriptor it makes available with avail wrap
    /// counter `wrap` (§2.8.1): AVAIL = wrap, USED = !wrap.
    @inlinable
    public static func availBits(wrap: Bool) -> UInt16 { wrap ? descAvail : descUsed }

    /// The AVAIL/USED bits a device writes into a used descriptor with used wrap counter `wrap`
    /// (§2.8.1): AVAIL = USED = wrap.
    @inlinable
    public static func usedBits(wrap: Bool) -> UInt16 { wrap ? descAvailUsed : 0 }

    /// A descriptor is used, for a reader whose used wrap counter is `wrap`, when both bits
    /// equal it (§2.8.1).
    @inlinable
    public static func isUsed(flags: UInt16, wrap: Bool) -> Bool {
        flags & descAvailUsed == usedBits(wrap: wrap)
    }

    /// A descriptor is available, for a reader whose avail wrap counter is `wrap`, when AVAIL
    /// equals it and USED does not (§2.8.1).
    @inlinable
    public static func isAvailable(flags: UInt16, wrap: Bool) -> Bool {
        flags & descAvailUsed == availBits(wrap: wrap)
    }

    /// A ring position and wrap counter packed as in `off_wrap` and the vring base:
    /// `position | wrap << 15`.
    @inlinable
    public static func encode(position: UInt16, wrap: Bool) -> UInt16 {
        position | (wrap ? 1 << wrapShift : 0)
    }

    /// The packed-ring descriptor-event test (§2.8.10 with vring_need_event of §2.7.10): true
    /// when the event position `offWrap` lies among the slots `[new - added, new)` just made
    /// available (or used). `new` is the position after them, `wrap` the wrap counter at `new`,
    /// `queueSize` the ring size; `added` must be below `queueSize` (a whole lap always
    /// notifies, see the callers). An event on the previous lap (its wrap bit differs from
    /// `wrap`) is moved back by `queueSize`, so all three indices live on one line modulo 2^16.
    @inlinable
    public static func needEvent(offWrap: UInt16, new: UInt16, wrap: Bool, added: UInt16, queueSize: UInt16) -> Bool {
        var event = offWrap & offsetMask
        if (offWrap >> wrapShift != 0) != wrap { event = event &- queueSize }
        return VringFlags.needEvent(eventIndex: event, new: new, old: new &- added)
    }
}
