import CFerry
import Virtio

/// Why the device refused what the driver made available on a packed ring.
public enum DevicePackedRingError: Error, Equatable {
    /// A chain longer than the ring: its NEXT flags never end.
    case loop(position: UInt16)
    /// A NEXT flag continued into a slot the driver had not made available (wrong AVAIL/USED
    /// bits for the wrap counter at that slot).
    case chainNotAvailable(position: UInt16)
    /// A buffer address the translate function rejected.
    case badAddress(UInt64, length: Int)
    /// An INDIRECT descriptor that also has NEXT (§2.8.7: the driver must not set both).
    case indirectWithNext(position: UInt16)
    /// An indirect table whose length is 0 (§2.8.7: a table must not be empty), not a multiple
    /// of 16, or longer than the queue.
    case badIndirectLength(position: UInt16, length: Int)
    /// An INDIRECT descriptor inside an indirect table (§2.8.7: one table per descriptor).
    case nestedIndirect(position: UInt16)
}

/// A chain the device took and has not yet returned: its buffer id and the slots it spans
/// (how far the used position moves when it is returned).
public struct DevicePackedOutstanding: Equatable, Sendable {
    public var id: UInt16
    public var descriptors: Int
}

/// The DEVICE side of a packed ring (virtio 1.2 §2.8), for tests and the in-process vhost-user
/// device double. Mirrors what a backend (DPDK's vhost) does: takes available descriptors in
/// ring order with its avail wrap counter, validates them, and writes used descriptors in order
/// at its used position with its used wrap counter. Test support: clarity over speed.
///
/// Positions are slot numbers (0..<queueSize); `vringBase` packs one with its wrap counter in
/// bit 15 as SET_VRING_BASE / GET_VRING_BASE do.
public struct DevicePackedRing {
    public let queueSize: UInt16
    public let desc: UnsafeMutableRawPointer
    /// The driver event suppression area (the driver's wishes about interrupts).
    public let driverEvent: UnsafeMutableRawPointer
    /// The device event suppression area (this device's wishes about kicks).
    public let deviceEvent: UnsafeMutableRawPointer
    let translate: (UInt64, Int) -> UnsafeMutableRawPointer?

    /// The next slot the device reads and its avail wrap counter.
    public var lastAvailIndex: UInt16 = 0
    public var availWrapCounter = true
    /// The next slot the device writes a used descriptor to and its used wrap counter.
    public private(set) var usedIndex: UInt16 = 0
    public private(set) var usedWrapCounter = true
    /// VIRTIO_F_EVENT_IDX negotiated: `driverWantsInterrupt` then honours DESC in the driver area.
    public var eventIdx = false
    /// Chains taken and not yet returned, in the order taken.
    public private(set) var outstanding: [DevicePackedOutstanding] = []
    /// Used slots written since the last interrupt decision (`shouldInterrupt()`).
    public private(set) var usedSlotsSinceSignal = 0

    /// `translate` maps a driver address and length to a local pointer, or nil when out of
    /// bounds.
    public init(queueSize: UInt16, desc: UnsafeMutableRawPointer, driverEvent: UnsafeMutableRawPointer,
                deviceEvent: UnsafeMutableRawPointer, translate: @escaping (UInt64, Int) -> UnsafeMutableRawPointer?) {
        self.queueSize = queueSize
        self.desc = desc
        self.driverEvent = driverEvent
        self.deviceEvent = deviceEvent
        self.translate = translate
    }

    // MARK: Vring base

    /// GET_VRING_BASE's answer: the next avail slot with the avail wrap counter in bit 15.
    public var vringBase: UInt32 { UInt32(PackedRingFlags.encode(position: lastAvailIndex, wrap: availWrapCounter)) }

    /// SET_VRING_BASE as DPDK's vhost applies it: bits 0–14 and 15 set both the avail and the
    /// used position and wrap counter (bits 16–31 ignored). Forgets outstanding chains.
    public mutating func setVringBase(_ base: UInt32) {
        let (position, wrap) = PackedRing.decodeBase(base)
        lastAvailIndex = position
        availWrapCounter = wrap
        usedIndex = position
        usedWrapCounter = wrap
        outstanding = []
        usedSlotsSinceSignal = 0
    }

    /// The used position with the used wrap counter in bit 15.
    public var usedBase: UInt32 { UInt32(PackedRingFlags.encode(position: usedIndex, wrap: usedWrapCounter)) }

    /// Restores positions saved from an earlier instance (`vringBase`, `usedBase`). False, with
    /// nothing changed, when either position lies beyond the ring.
    public mutating func restore(availBase: UInt32, usedBase: UInt32) -> Bool {
        let avail = PackedRing.decodeBase(availBase)
        let used = PackedRing.decodeBase(usedBase)
        guard avail.position < queueSize, used.position < queueSize else { return false }
        lastAvailIndex = avail.position
        availWrapCounter = avail.wrap
        usedIndex = used.position
        usedWrapCounter = used.wrap
        return true
    }

    // MARK: Taking available chains

    func descriptor(_ position: UInt16) -> UnsafeMutableRawPointer {
        desc + Int(position) * PackedRingLayout.descriptorSize
    }

    func flags(at position: UInt16) -> UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(descriptor(position) + PackedRingLayout.descFlagsOffset))
    }

    /// Whether the slot at the avail position holds an available descriptor.
    public var hasAvailable: Bool {
        PackedRingFlags.isAvailable(flags: flags(at: lastAvailIndex), wrap: availWrapCounter)
    }

    /// Takes the next available chain, or nil when the slot at the avail position is not
    /// available. Every descriptor of the chain must be available for the wrap counter at its
    /// own slot (a chain may cross the end of the ring). The buffer id is read from the last
    /// descriptor, where the spec puts it (a driver may repeat it in every one). An INDIRECT
    /// descriptor ends the chain: its table of packed descriptors, translated like any buffer,
    /// supplies the segments in order (only WRITE is read from an entry; NEXT and the id are
    /// reserved there), and the descriptor itself takes one slot. Throws on a malformed chain
    /// (loop, slot not available, bad address, INDIRECT with NEXT, a table of bad length,
    /// nested INDIRECT); the avail position is then left unchanged, as the ring is broken.
    public mutating func popAvail() throws -> DeviceChain? {
        guard hasAvailable else { return nil }
        var position = lastAvailIndex
        var wrap = availWrapCounter
        var segments: [DeviceSegment] = []
        var id: UInt16 = 0
        var slots = 0
        var viaIndirect = false
        while true {
            guard slots < Int(queueSize) else { throw DevicePackedRingError.loop(position: lastAvailIndex) }
            let f = flags(at: position)
            guard PackedRingFlags.isAvailable(flags: f, wrap: wrap) else {
                throw DevicePackedRingError.chainNotAvailable(position: position)
            }
            let d = descriptor(position)
            let address = UInt64(littleEndian: d.load(fromByteOffset: PackedRingLayout.descAddrOffset, as: UInt64.self))
            let length = Int(UInt32(littleEndian: d.load(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)))
            id = UInt16(littleEndian: d.load(fromByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self))
            if f & PackedRingFlags.descIndirect != 0 {
                guard f & PackedRingFlags.descNext == 0 else {
                    throw DevicePackedRingError.indirectWithNext(position: position)
                }
                try readIndirectTable(position: position, address: address, length: length,
                                      chainSoFar: segments.count, into: &segments)
                viaIndirect = true
            } else {
                guard let pointer = translate(address, length) else {
                    throw DevicePackedRingError.badAddress(address, length: length)
                }
                segments.append(DeviceSegment(pointer: pointer, length: length,
                                              deviceWritable: f & PackedRingFlags.descWrite != 0))
            }
            slots += 1
            position += 1
            if position == queueSize {
                position = 0
                wrap.toggle()
            }
            // An indirect descriptor has no NEXT (checked above): it ends the chain.
            if f & PackedRingFlags.descNext == 0 { break }
        }
        lastAvailIndex = position
        availWrapCounter = wrap
        outstanding.append(DevicePackedOutstanding(id: id, descriptors: slots))
        return DeviceChain(head: id, segments: segments, ringDescriptors: slots, viaIndirect: viaIndirect)
    }

    /// Appends the segments of the packed-format indirect table at `address` (`length` bytes).
    /// Checks: the length is a non-zero multiple of 16 and the list, table entries included, is
    /// not longer than the queue; the table translates; no entry is INDIRECT.
    func readIndirectTable(position: UInt16, address: UInt64, length: Int, chainSoFar: Int,
                           into segments: inout [DeviceSegment]) throws {
        let entrySize = PackedRingLayout.descriptorSize
        let count = length / entrySize
        guard length > 0, length % entrySize == 0, chainSoFar + count <= Int(queueSize) else {
            throw DevicePackedRingError.badIndirectLength(position: position, length: length)
        }
        guard let table = translate(address, length) else {
            throw DevicePackedRingError.badAddress(address, length: length)
        }
        for k in 0..<count {
            let e = table + k * entrySize
            // Unaligned loads: the table address is the driver's, and may be anything.
            let entryAddress = UInt64(littleEndian: e.loadUnaligned(fromByteOffset: PackedRingLayout.descAddrOffset, as: UInt64.self))
            let entryLength = Int(UInt32(littleEndian: e.loadUnaligned(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)))
            let flags = UInt16(littleEndian: e.loadUnaligned(fromByteOffset: PackedRingLayout.descFlagsOffset, as: UInt16.self))
            guard flags & PackedRingFlags.descIndirect == 0 else {
                throw DevicePackedRingError.nestedIndirect(position: position)
            }
            guard let pointer = translate(entryAddress, entryLength) else {
                throw DevicePackedRingError.badAddress(entryAddress, length: entryLength)
            }
            segments.append(DeviceSegment(pointer: pointer, length: entryLength,
                                          deviceWritable: flags & PackedRingFlags.descWrite != 0))
        }
    }

    /// Puts the most recently taken chain back (the device found no use for it yet): the avail
    /// position moves back over it. Returns false when nothing is outstanding.
    @discardableResult
    public mutating func unpop() -> Bool {
        guard let last = outstanding.popLast() else { return false }
        var position = Int(lastAvailIndex) - last.descriptors
        if position < 0 {
            position += Int(queueSize)
            availWrapCounter.toggle()
        }
        lastAvailIndex = UInt16(position)
        return true
    }

    // MARK: Returning used chains

    /// Returns the outstanding chain `id`: writes a used descriptor `{id, length}` at the used
    /// position and moves it by the chain's slot count. Any outstanding chain may be returned
    /// (out of order), as a device without IN_ORDER may. An id that is not outstanding is
    /// still written (tests play a hostile device with it) and moves the position by one.
    public mutating func pushUsed(id: UInt16, length: UInt32) {
        var slots = 1
        if let k = outstanding.firstIndex(where: { $0.id == id }) {
            slots = outstanding[k].descriptors
            outstanding.remove(at: k)
        }
        writeUsed(id: id, length: length, advance: slots)
    }

    /// IN_ORDER batching (§2.8, "In-order use of descriptors"): returns every outstanding chain
    /// up to and including `id`, in the order taken, with ONE used descriptor naming `id`, and
    /// skips the used position over all their slots. Returns how many chains the batch covered
    /// (0, writing nothing, when `id` is not outstanding).
    @discardableResult
    public mutating func pushUsedBatch(lastID id: UInt16, length: UInt32) -> Int {
        guard let k = outstanding.firstIndex(where: { $0.id == id }) else { return 0 }
        let slots = outstanding[0...k].reduce(0) { $0 + $1.descriptors }
        outstanding.removeFirst(k + 1)
        writeUsed(id: id, length: length, advance: slots)
        return k + 1
    }

    /// Writes a used descriptor at the used position (flags last, with release) and moves the
    /// position `advance` slots. Hostile tests use it directly with any id and any advance.
    public mutating func writeUsed(id: UInt16, length: UInt32, advance: Int) {
        writeDescriptor(at: usedIndex, id: id, length: length,
                        flags: PackedRingFlags.usedBits(wrap: usedWrapCounter)
                            | (length > 0 ? PackedRingFlags.descWrite : 0))
        var position = Int(usedIndex) + advance
        while position >= Int(queueSize) {
            position -= Int(queueSize)
            usedWrapCounter.toggle()
        }
        usedIndex = UInt16(position)
        usedSlotsSinceSignal += advance
    }

    /// Writes any descriptor content at `position` (id, length, then flags with release),
    /// moving nothing: for hostile patterns.
    public func writeDescriptor(at position: UInt16, id: UInt16, length: UInt32, flags: UInt16) {
        let d = descriptor(position % queueSize)
        d.storeBytes(of: length.littleEndian, toByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)
        d.storeBytes(of: id.littleEndian, toByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self)
        ferry_store_release_u16(d + PackedRingLayout.descFlagsOffset, flags.littleEndian)
    }

    // MARK: Event suppression

    /// The device area `flags`: DISABLE when `on` (no kicks wanted), ENABLE otherwise.
    public func setNoNotify(_ on: Bool) {
        setDeviceEventFlags(on ? PackedRingFlags.eventFlagsDisable : PackedRingFlags.eventFlagsEnable)
    }

    /// Writes the device area `flags` (any value, reserved ones included, for hostile tests).
    public func setDeviceEventFlags(_ flags: UInt16) {
        ferry_store_release_u16(deviceEvent + PackedRingLayout.eventFlagsOffset, flags.littleEndian)
    }

    /// EVENT_IDX: asks for a kick once the driver makes the slot at `position` (on lap `wrap`)
    /// available: writes `off_wrap`, then flags = DESC.
    public func setKickEvent(position: UInt16, wrap: Bool) {
        ferry_store_release_u16(deviceEvent + PackedRingLayout.eventOffWrapOffset,
                                PackedRingFlags.encode(position: position, wrap: wrap).littleEndian)
        setDeviceEventFlags(PackedRingFlags.eventFlagsDesc)
    }

    /// The driver area as the driver wrote it.
    public var driverEventFlags: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(driverEvent + PackedRingLayout.eventFlagsOffset))
    }
    public var driverEventOffWrap: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(driverEvent + PackedRingLayout.eventOffWrapOffset))
    }

    /// Whether the driver wants an interrupt for the used slots written since the last
    /// decision: DISABLE no; DESC with EVENT_IDX when its `off_wrap` lies among those slots;
    /// anything else yes.
    public func driverWantsInterrupt() -> Bool {
        ferry_fence_seq_cst()
        let flags = driverEventFlags & PackedRingFlags.eventFlagsMask
        if flags == PackedRingFlags.eventFlagsDisable { return false }
        guard flags == PackedRingFlags.eventFlagsDesc, eventIdx else { return true }
        if usedSlotsSinceSignal >= Int(queueSize) { return true }
        return PackedRingFlags.needEvent(offWrap: driverEventOffWrap, new: usedIndex, wrap: usedWrapCounter,
                                         added: UInt16(usedSlotsSinceSignal), queueSize: queueSize)
    }

    /// `driverWantsInterrupt()`, then starts a new window of used slots.
    public mutating func shouldInterrupt() -> Bool {
        let wants = driverWantsInterrupt()
        usedSlotsSinceSignal = 0
        return wants
    }
}
