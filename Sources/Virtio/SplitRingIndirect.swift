/// INDIRECT_DESC on a split ring (virtio 1.2 §2.7.5.3): a whole chain behind ONE ring
/// descriptor, which points at a table of descriptors in memory the device can reach.
///
/// Why: a frame of k segments then takes one descriptor instead of k, so a ring of n
/// descriptors holds n frames whatever their shape (DPDK's virtio TX `use_indirect`).
///
/// Tables: one per ring descriptor, indexed by the head descriptor's index. An indirect chain
/// occupies exactly its head descriptor, so no two chains in flight share a table, and a table
/// is only rewritten after its head came back from the used ring. The driver writes the tables
/// and never reads them back (the device may scribble on them): the chain's writable length
/// and cookie live in the private side table, as for direct chains.
///
/// Reclaim needs nothing new: the chain is recorded with `chainLength` 1, so `freeChain`
/// returns exactly the one ring descriptor.
extension SplitRing {
    /// Bytes of shared memory for the indirect tables of a ring of `queueSize` descriptors,
    /// each holding `maxSegments` descriptors.
    @inlinable
    public static func indirectTableSize(queueSize: Int, maxSegments: Int) -> Int {
        queueSize * maxSegments * SplitRingLayout.descriptorSize
    }

    /// Gives the ring its indirect tables: `indirectTableSize(queueSize:maxSegments:)` bytes,
    /// 16-aligned, in memory shared with the device (the device translates table addresses
    /// through the memory table), not owned. Call once, before the first `addIndirect`, and
    /// only when VIRTIO_RING_F_INDIRECT_DESC was negotiated (§2.7.5.3.1: the driver must not
    /// set the flag otherwise).
    ///
    /// A table holds at most `min(maxSegments, queueSize)` descriptors: a chain, its table
    /// entries counted, must not be longer than the queue (§2.7.5.3.1).
    public mutating func attachIndirect(tables: UnsafeMutableRawPointer, maxSegments: Int) {
        precondition(maxSegments > 0, "an indirect table holds at least one descriptor")
        precondition(UInt(bitPattern: tables) % UInt(SplitRingLayout.descriptorSize) == 0,
                     "indirect tables must be 16-aligned")
        indirectTables = tables
        indirectStride = maxSegments &* SplitRingLayout.descriptorSize
        _indirectCapacity = min(maxSegments, Int(queueSize))
    }

    /// The most segments `addIndirect` takes; 0 when no tables are attached.
    @inlinable public var indirectCapacity: Int { _indirectCapacity }

    /// Posts a chain through one ring descriptor flagged INDIRECT, pointing at this head's
    /// table of `segments.count` descriptors (`len` = 16·count). Table entries link with NEXT
    /// and `next = i + 1` and carry WRITE as the segments ask; none carries INDIRECT
    /// (§2.7.5.3.1), and the ring descriptor carries neither NEXT nor WRITE (the device
    /// ignores WRITE there).
    ///
    /// Returns false, posting nothing, when no tables are attached, `segments` is empty or
    /// longer than `indirectCapacity`, a readable segment follows a writable one (§2.7.4.2),
    /// or no ring descriptor is free. Visible to the device only after `publish()`.
    // SAFETY: the head comes from the private free list (< queueSize); its table lies at
    // head·stride inside the attached area of queueSize·stride bytes, and count <= capacity
    // <= stride/16 entries are written into it.
    @inlinable
    public mutating func addIndirect(_ segments: UnsafeBufferPointer<RingSegment>, cookie: UInt32) -> Bool {
        let count = segments.count
        guard count > 0, count <= _indirectCapacity, _numFree > 0, let tables = indirectTables else { return false }
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
        let h = Int(head)
        let table = tables + h &* indirectStride
        var i = 0
        while i < count {
            let s = segments[i]
            let last = i == count &- 1
            var flags: UInt16 = s.deviceWritable ? VringFlags.descWrite : 0
            if !last { flags |= VringFlags.descNext }
            let d = table + i &* SplitRingLayout.descriptorSize
            d.storeBytes(of: s.address.littleEndian, toByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self)
            d.storeBytes(of: s.length.littleEndian, toByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self)
            let next: UInt16 = last ? 0 : UInt16(truncatingIfNeeded: i &+ 1)
            let flagsAndNext = UInt32(flags) | UInt32(next) << 16
            d.storeBytes(of: flagsAndNext.littleEndian, toByteOffset: SplitRingLayout.descFlagsOffset, as: UInt32.self)
            i &+= 1
        }
        freeHead = state[h].next
        _numFree &-= 1
        writeDescriptor(h, address: UInt64(UInt(bitPattern: table)),
                        length: UInt32(truncatingIfNeeded: count &* SplitRingLayout.descriptorSize),
                        flags: VringFlags.descIndirect, next: 0)
        state[h].cookie = cookie
        state[h].writableLength = writable > UInt64(UInt32.max) ? UInt32.max : UInt32(truncatingIfNeeded: writable)
        state[h].chainLength = 1
        makeAvailable(head)
        return true
    }
}
