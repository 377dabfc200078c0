import Virtio

/// The driver side of one vring, split or packed, as the device built it at FEATURES_OK.
///
/// The datapath switches on it once per burst, then runs code specialised for that ring kind
/// (`DriverRing` is used as a generic constraint, never as an existential), so ports of both
/// kinds can share a worker and nothing is dispatched per packet.
public enum VirtqueueRing {
    case split(UnsafeMutablePointer<SplitRing>)
    case packed(UnsafeMutablePointer<PackedRing>)

    public var isPacked: Bool {
        if case .packed = self { return true }
        return false
    }

    /// Runs `body` with the concrete ring.
    @inlinable @inline(__always)
    public func with<T>(_ body: (UnsafeMutablePointer<SplitRing>) -> T,
                        packed: (UnsafeMutablePointer<PackedRing>) -> T) -> T {
        switch self {
        case let .split(r): return body(r)
        case let .packed(r): return packed(r)
        }
    }

    public var queueSize: UInt16 { with({ $0.pointee.queueSize }, packed: { $0.pointee.queueSize }) }
    public var inFlight: Int { with({ $0.pointee.inFlight }, packed: { $0.pointee.inFlight }) }
    public var numFree: Int { with({ $0.pointee.numFree }, packed: { $0.pointee.numFree }) }
    public var descTable: UnsafeMutableRawPointer { with({ $0.pointee.descTable }, packed: { $0.pointee.descTable }) }
    public var availRing: UnsafeMutableRawPointer { with({ $0.pointee.availRing }, packed: { $0.pointee.availRing }) }
    public var usedRing: UnsafeMutableRawPointer { with({ $0.pointee.usedRing }, packed: { $0.pointee.usedRing }) }
    public func pendingUsed() -> Int { with({ $0.pointee.pendingUsed() }, packed: { $0.pointee.pendingUsed() }) }
    public func pendingAvail(deviceBase: UInt32) -> Int {
        with({ $0.pointee.pendingAvail(deviceBase: deviceBase) }, packed: { $0.pointee.pendingAvail(deviceBase: deviceBase) })
    }
    public func disableInterrupts() { with({ $0.pointee.disableInterrupts() }, packed: { $0.pointee.disableInterrupts() }) }
    public func enableInterrupts() -> Bool { with({ $0.pointee.enableInterrupts() }, packed: { $0.pointee.enableInterrupts() }) }
    public var invalidUsedIds: UInt64 { with({ $0.pointee.invalidUsedIds }, packed: { $0.pointee.invalidUsedIds }) }
    /// The most segments one INDIRECT_DESC chain may have on this ring: 0 without tables.
    public var indirectCapacity: Int { with({ $0.pointee.indirectCapacity }, packed: { $0.pointee.indirectCapacity }) }

    /// Gives the ring its INDIRECT_DESC tables (see `SplitRing.attachIndirect`).
    func attachIndirect(tables: UnsafeMutableRawPointer, maxSegments: Int) {
        with({ $0.pointee.attachIndirect(tables: tables, maxSegments: maxSegments) },
             packed: { $0.pointee.attachIndirect(tables: tables, maxSegments: maxSegments) })
    }

    /// Where the device must resume on this ring (SET_VRING_BASE): right after the last
    /// buffer it returned, so every buffer Ferry still owns is eventually returned.
    ///
    /// Split: the used index in shared memory (0 on a fresh ring). Packed: the driver's next
    /// used position, moved past descriptors the device has already marked used that Ferry
    /// has not read yet; resuming any earlier would leave the device waiting on a slot it
    /// already returned. The wrap counter rides in bit 15 (0x8000 on a fresh ring, as the
    /// seed sends).
    public var resumeBase: UInt32 {
        switch self {
        case let .split(r):
            return UInt32(r.pointee.lastUsedIndex &+ UInt16(truncatingIfNeeded: r.pointee.pendingUsed()))
        case let .packed(r):
            let size = Int(r.pointee.queueSize)
            var (position, wrap) = PackedRing.decodeBase(r.pointee.usedBase)
            var skipped = 0
            // Bounded by the ring size; reads only descriptor flags inside the ring.
            while skipped < size {
                let flags = (r.pointee.descTable + Int(position) * PackedRingLayout.descriptorSize)
                    .loadUnaligned(fromByteOffset: PackedRingLayout.descFlagsOffset, as: UInt16.self)
                guard PackedRingFlags.isUsed(flags: UInt16(littleEndian: flags), wrap: wrap) else { break }
                position += 1
                if Int(position) == size { position = 0; wrap.toggle() }
                skipped += 1
            }
            return UInt32(position) | (wrap ? 1 << 15 : 0)
        }
    }

    /// Takes back every buffer the device has returned and gives it to `pool`; returns how
    /// many. Only while no worker uses the ring (its port is down and workers quiesced): the
    /// control thread does this before a reconnect, so that Ferry's next used position and
    /// the device's resume position agree exactly (with IN_ORDER, one used descriptor can
    /// stand for a whole batch). Frames received but unread are dropped; buffers are kept.
    public func drainUsed(into pool: PacketPool) -> Int {
        let capacity = 256
        let cookies = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        defer { cookies.deallocate(); lengths.deallocate() }
        var total = 0
        while true {
            let n = with({ $0.pointee.dequeueUsed(cookies: cookies, lengths: lengths, max: capacity) },
                         packed: { $0.pointee.dequeueUsed(cookies: cookies, lengths: lengths, max: capacity) })
            guard n > 0 else { return total }
            pool.give(cookies, count: n)
            total += n
        }
    }

    func deallocate() {
        switch self {
        case let .split(r):
            r.pointee.deallocate()
            r.deinitialize(count: 1)
            r.deallocate()
        case let .packed(r):
            r.pointee.deallocate()
            r.deinitialize(count: 1)
            r.deallocate()
        }
    }
}
