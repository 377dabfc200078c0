import CFerry
import Virtio

/// One buffer of a chain the device popped, already translated to a local pointer.
public struct DeviceSegment {
    public var pointer: UnsafeMutableRawPointer
    public var length: Int
    public var deviceWritable: Bool

    public init(pointer: UnsafeMutableRawPointer, length: Int, deviceWritable: Bool) {
        self.pointer = pointer
        self.length = length
        self.deviceWritable = deviceWritable
    }
}

/// A descriptor chain as the device sees it.
public struct DeviceChain {
    /// The head descriptor index: the id to hand back in `pushUsed`.
    public var head: UInt16
    public var segments: [DeviceSegment]
    /// Ring descriptors (split) or slots (packed) the chain occupied: an indirect table's
    /// entries do not count.
    public var ringDescriptors: Int
    /// Some of the segments came from an INDIRECT table.
    public var viaIndirect: Bool

    public init(head: UInt16, segments: [DeviceSegment], ringDescriptors: Int? = nil, viaIndirect: Bool = false) {
        self.head = head
        self.segments = segments
        self.ringDescriptors = ringDescriptors ?? segments.count
        self.viaIndirect = viaIndirect
    }

    /// Total bytes the device may write.
    public var writableLength: Int { segments.reduce(0) { $0 + ($1.deviceWritable ? $1.length : 0) } }

    /// The concatenated device-readable bytes (a TX packet, header included).
    public func readableBytes() -> [UInt8] {
        var out: [UInt8] = []
        for s in segments where !s.deviceWritable {
            out.append(contentsOf: UnsafeRawBufferPointer(start: s.pointer, count: s.length))
        }
        return out
    }

    /// Copies `bytes` into the writable segments in order (an RX packet). Returns how many
    /// bytes fitted: the used length to report.
    @discardableResult
    public func writeWritable(_ bytes: [UInt8]) -> Int {
        var offset = 0
        for s in segments where s.deviceWritable && offset < bytes.count {
            let n = min(s.length, bytes.count - offset)
            bytes.withUnsafeBytes { src in
                s.pointer.copyMemory(from: src.baseAddress! + offset, byteCount: n)
            }
            offset += n
        }
        return offset
    }
}

/// Why the device refused a chain.
public enum DeviceRingError: Error, Equatable {
    /// A head or `next` index at or beyond the queue size.
    case badIndex(UInt16)
    /// The chain is longer than the queue: it loops.
    case loop(head: UInt16)
    /// A buffer address the translate function rejected.
    case badAddress(UInt64, length: Int)
    /// An INDIRECT descriptor that also has NEXT (§2.7.5.3.1: the driver must not set both).
    case indirectWithNext(head: UInt16)
    /// An indirect table whose length is 0 or not a multiple of 16, or whose chain (table
    /// entries included) is longer than the queue.
    case badIndirectLength(head: UInt16, length: Int)
    /// An INDIRECT descriptor inside an indirect table (§2.7.5.3.1: one table per descriptor).
    case nestedIndirect(head: UInt16)
}

/// The DEVICE side of a split ring (virtio 1.2 §2.7), for tests and the in-process vhost-user
/// device double. Mirrors what a backend (DPDK's vhost, vhost-net) does: pops chains from the
/// avail ring, validates them, pushes used entries. Test support: clarity over speed.
public struct DeviceSplitRing {
    public let queueSize: UInt16
    public let desc: UnsafeMutableRawPointer
    public let avail: UnsafeMutableRawPointer
    public let used: UnsafeMutableRawPointer
    let translate: (UInt64, Int) -> UnsafeMutableRawPointer?

    /// The next avail slot the device will read (SET_VRING_BASE sets it, GET_VRING_BASE
    /// reports it).
    public var lastAvailIndex: UInt16 = 0
    /// The next used slot the device will write; `pushUsed` publishes it as used->idx.
    public private(set) var usedIndex: UInt16 = 0
    /// VIRTIO_F_EVENT_IDX negotiated: `driverWantsInterrupt` then reads used_event.
    public var eventIdx = false
    /// used->idx at the last interrupt sent (the `old` of vring_need_event); see
    /// `shouldInterrupt()`.
    public var signalledUsedIndex: UInt16 = 0

    /// `translate` maps a driver address and length to a local pointer, or nil when out of
    /// bounds.
    public init(queueSize: UInt16, desc: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer,
                used: UnsafeMutableRawPointer, translate: @escaping (UInt64, Int) -> UnsafeMutableRawPointer?) {
        self.queueSize = queueSize
        self.desc = desc
        self.avail = avail
        self.used = used
        self.translate = translate
    }

    /// avail->idx as the driver published it.
    public var availIndex: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(avail + SplitRingLayout.availIdxOffset))
    }

    /// Pops the next available chain, or nil when the avail ring is empty. Follows an INDIRECT
    /// descriptor at the end of the chain (zero or more direct descriptors, then one indirect,
    /// as §2.7.5.3.2 says a device must accept): its table, translated like any buffer, is
    /// walked by `next` within the table. Throws on a malformed chain (bad index, loop, bad
    /// address, INDIRECT with NEXT, a table of bad length, nested INDIRECT);
    /// `lastAvailIndex` is then left unchanged, as the ring is broken.
    public mutating func popAvail() throws -> DeviceChain? {
        guard lastAvailIndex != availIndex else { return nil }
        let n = Int(queueSize)
        let slot = Int(lastAvailIndex) & (n - 1)
        let head = UInt16(littleEndian: avail.load(fromByteOffset: SplitRingLayout.availRingOffset + 2 * slot,
                                                    as: UInt16.self))
        guard head < queueSize else { throw DeviceRingError.badIndex(head) }
        var segments: [DeviceSegment] = []
        var index = head
        while true {
            guard segments.count < n else { throw DeviceRingError.loop(head: head) }
            let d = desc + Int(index) * SplitRingLayout.descriptorSize
            let address = UInt64(littleEndian: d.load(fromByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self))
            let length = Int(UInt32(littleEndian: d.load(fromByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self)))
            let flags = UInt16(littleEndian: d.load(fromByteOffset: SplitRingLayout.descFlagsOffset, as: UInt16.self))
            let next = UInt16(littleEndian: d.load(fromByteOffset: SplitRingLayout.descNextOffset, as: UInt16.self))
            if flags & VringFlags.descIndirect != 0 {
                guard flags & VringFlags.descNext == 0 else { throw DeviceRingError.indirectWithNext(head: head) }
                let direct = segments.count + 1
                try readIndirectTable(head: head, address: address, length: length, chainSoFar: segments.count,
                                      into: &segments)
                lastAvailIndex &+= 1
                return DeviceChain(head: head, segments: segments, ringDescriptors: direct, viaIndirect: true)
            }
            guard let pointer = translate(address, length) else {
                throw DeviceRingError.badAddress(address, length: length)
            }
            segments.append(DeviceSegment(pointer: pointer, length: length,
                                          deviceWritable: flags & VringFlags.descWrite != 0))
            guard flags & VringFlags.descNext != 0 else { break }
            guard next < queueSize else { throw DeviceRingError.badIndex(next) }
            index = next
        }
        lastAvailIndex &+= 1
        return DeviceChain(head: head, segments: segments)
    }

    /// Appends the segments of the indirect table at `address` (`length` bytes). Checks: the
    /// length is a non-zero multiple of 16 and the chain, table entries included, is not longer
    /// than the queue (§2.7.5.3.1); the table translates; no entry is INDIRECT; `next` stays
    /// inside the table and the walk ends within its entry count (no loop).
    func readIndirectTable(head: UInt16, address: UInt64, length: Int, chainSoFar: Int,
                           into segments: inout [DeviceSegment]) throws {
        let entrySize = SplitRingLayout.descriptorSize
        let count = length / entrySize
        guard length > 0, length % entrySize == 0, chainSoFar + count <= Int(queueSize) else {
            throw DeviceRingError.badIndirectLength(head: head, length: length)
        }
        guard let table = translate(address, length) else { throw DeviceRingError.badAddress(address, length: length) }
        var index = 0
        var walked = 0
        while true {
            guard walked < count else { throw DeviceRingError.loop(head: head) }
            let d = table + index * entrySize
            // Unaligned loads: the table address is the driver's, and may be anything.
            let entryAddress = UInt64(littleEndian: d.loadUnaligned(fromByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self))
            let entryLength = Int(UInt32(littleEndian: d.loadUnaligned(fromByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self)))
            let flags = UInt16(littleEndian: d.loadUnaligned(fromByteOffset: SplitRingLayout.descFlagsOffset, as: UInt16.self))
            let next = UInt16(littleEndian: d.loadUnaligned(fromByteOffset: SplitRingLayout.descNextOffset, as: UInt16.self))
            guard flags & VringFlags.descIndirect == 0 else { throw DeviceRingError.nestedIndirect(head: head) }
            guard let pointer = translate(entryAddress, entryLength) else {
                throw DeviceRingError.badAddress(entryAddress, length: entryLength)
            }
            segments.append(DeviceSegment(pointer: pointer, length: entryLength,
                                          deviceWritable: flags & VringFlags.descWrite != 0))
            walked += 1
            guard flags & VringFlags.descNext != 0 else { return }
            guard Int(next) < count else { throw DeviceRingError.badIndex(next) }
            index = Int(next)
        }
    }

    /// Writes a used entry `{id, length}` and release-stores the new used->idx. The id is not
    /// checked: tests use this to play a hostile device too.
    public mutating func pushUsed(id: UInt16, length: UInt32) {
        pushUsed(rawID: UInt32(id), length: length)
    }

    /// As `pushUsed(id:length:)` with a 32-bit id, so tests can write ids >= 65536.
    public mutating func pushUsed(rawID: UInt32, length: UInt32) {
        writeUsedEntry(slot: usedIndex, id: rawID, length: length)
        usedIndex &+= 1
        ferry_store_release_u16(used + SplitRingLayout.usedIdxOffset, usedIndex.littleEndian)
    }

    /// IN_ORDER batching (§2.7.9): ONE used entry, at the slot of the batch's first chain,
    /// with the id of its last chain (`lastID`) and `length`; then used->idx advances by
    /// `count`, the batch size. The skipped slots are filled with a poison id (0xDEADBEEF) so a
    /// driver that reads them instead of skipping them is caught.
    public mutating func pushUsedBatch(lastID: UInt16, count: Int, length: UInt32) {
        precondition(count >= 1)
        writeUsedEntry(slot: usedIndex, id: UInt32(lastID), length: length)
        for k in 1..<max(count, 1) {
            writeUsedEntry(slot: usedIndex &+ UInt16(truncatingIfNeeded: k), id: 0xDEAD_BEEF, length: 0xFFFF_FFFF)
        }
        usedIndex &+= UInt16(truncatingIfNeeded: count)
        ferry_store_release_u16(used + SplitRingLayout.usedIdxOffset, usedIndex.littleEndian)
    }

    /// Writes a used entry at `slot` (masked) without publishing it.
    public func writeUsedEntry(slot: UInt16, id: UInt32, length: UInt32) {
        let entry = used + SplitRingLayout.usedRingOffset
            + Int(slot & (queueSize - 1)) * SplitRingLayout.usedElemSize
        entry.storeBytes(of: id.littleEndian, as: UInt32.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// Stores used->idx directly (hostile-device tests: jumps, rewinds).
    public mutating func forceUsedIndex(_ index: UInt16) {
        usedIndex = index
        ferry_store_release_u16(used + SplitRingLayout.usedIdxOffset, index.littleEndian)
    }

    /// Sets or clears VRING_USED_F_NO_NOTIFY in used->flags.
    public mutating func setNoNotify(_ on: Bool) {
        ferry_store_release_u16(used + SplitRingLayout.usedFlagsOffset,
                                (on ? VringFlags.usedNoNotify : 0).littleEndian)
    }

    /// Where `avail_event` lives (EVENT_IDX): the avail idx at which the device wants a kick.
    public var availEventPointer: UnsafeMutableRawPointer {
        used + SplitRingLayout.availEventOffset(queueSize: Int(queueSize))
    }

    /// Writes `avail_event` (EVENT_IDX).
    public func setAvailEvent(_ index: UInt16) {
        ferry_store_release_u16(availEventPointer, index.littleEndian)
    }

    /// `used_event` as the driver wrote it (EVENT_IDX).
    public var usedEvent: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(avail + SplitRingLayout.usedEventOffset(queueSize: Int(queueSize))))
    }

    /// avail->flags as the driver wrote it.
    public var availFlags: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(avail + SplitRingLayout.availFlagsOffset))
    }

    /// Whether the driver wants an interrupt for the entries pushed since
    /// `signalledUsedIndex`: with EVENT_IDX, vring_need_event(used_event, usedIndex,
    /// signalledUsedIndex); otherwise avail->flags lacks NO_INTERRUPT.
    public func driverWantsInterrupt() -> Bool {
        ferry_fence_seq_cst()
        if eventIdx {
            return VringFlags.needEvent(eventIndex: usedEvent, new: usedIndex, old: signalledUsedIndex)
        }
        return availFlags & VringFlags.availNoInterrupt == 0
    }

    /// `driverWantsInterrupt()`, then remembers usedIndex as signalled.
    public mutating func shouldInterrupt() -> Bool {
        let wants = driverWantsInterrupt()
        signalledUsedIndex = usedIndex
        return wants
    }
}
