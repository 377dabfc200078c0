import CFerry

/// INDIRECT_DESC on a packed ring (virtio 1.2 §2.8.7, "Indirect Flag: Scatter-Gather
/// Support"): a whole chain behind ONE ring slot, whose descriptor points at a table of
/// packed-format descriptors in memory the device can reach.
///
/// Why: a frame of k segments then takes one slot and one buffer id instead of k slots, so
/// a ring of n slots holds n frames whatever their shape (DPDK's virtio TX `use_indirect`).
///
/// Tables: one per buffer id. An id names one chain in flight at a time (with IN_ORDER the id
/// is the head slot, also unique among chains in flight), so a table is only rewritten after
/// its id came back. The driver writes the tables and never reads them back; the chain's
/// writable length and cookie live in the private side table, as for direct chains.
///
/// Reclaim needs nothing new: the chain is recorded with `chainLength` 1, so a used
/// descriptor for its id moves the used position by one slot, as the device moves its own
/// (the buffer occupies one slot).
extension PackedRing {
    /// Bytes of shared memory for the indirect tables of a ring of `queueSize` slots, each
    /// holding `maxSegments` descriptors.
    @inlinable
    public static func indirectTableSize(queueSize: Int, maxSegments: Int) -> Int {
        queueSize * maxSegments * PackedRingLayout.descriptorSize
    }

    /// Gives the ring its indirect tables: `indirectTableSize(queueSize:maxSegments:)` bytes,
    /// 16-aligned, in memory shared with the device (it translates table addresses through the
    /// memory table), not owned. Call once, before the first `addIndirect`, and only when
    /// VIRTIO_RING_F_INDIRECT_DESC was negotiated.
    ///
    /// A table holds at most `min(maxSegments, queueSize)` descriptors: a descriptor list must
    /// not be longer than the queue (§2.8.7).
    public mutating func attachIndirect(tables: UnsafeMutableRawPointer, maxSegments: Int) {
        precondition(maxSegments > 0, "an indirect table holds at least one descriptor")
        precondition(UInt(bitPattern: tables) % UInt(PackedRingLayout.descriptorSize) == 0,
                     "indirect tables must be 16-aligned")
        indirectTables = tables
        indirectStride = maxSegments &* PackedRingLayout.descriptorSize
        _indirectCapacity = min(maxSegments, Int(queueSize))
    }

    /// The most segments `addIndirect` takes; 0 when no tables are attached.
    @inlinable public var indirectCapacity: Int { _indirectCapacity }

    /// Posts a chain as one ring slot flagged INDIRECT, pointing at this buffer id's table of
    /// `segments.count` packed descriptors (`len` = 16·count). Table entries carry only WRITE
    /// as the segments ask: their id is ignored and NEXT is reserved there, and none may carry
    /// INDIRECT (§2.8.7). The ring descriptor carries neither NEXT nor WRITE.
    ///
    /// Returns false, posting nothing, when no tables are attached, `segments` is empty (an
    /// indirect table must not be) or longer than `indirectCapacity`, a readable segment
    /// follows a writable one, or no slot is free. Visible to the device only after
    /// `publish()`.
    // SAFETY: the slot is `availPosition` (< queueSize); the id is < queueSize, so its table
    // lies at id·stride inside the attached area of queueSize·stride bytes, and count <=
    // capacity <= stride/16 entries are written into it.
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
        let position = availPosition
        let id = takeId(headPosition: position)
        let table = tables + Int(id) &* indirectStride
        var i = 0
        while i < count {
            let s = segments[i]
            let d = table + i &* PackedRingLayout.descriptorSize
            d.storeBytes(of: s.address.littleEndian, toByteOffset: PackedRingLayout.descAddrOffset, as: UInt64.self)
            d.storeBytes(of: s.length.littleEndian, toByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)
            let flags: UInt16 = s.deviceWritable ? PackedRingFlags.descWrite : 0
            // id (ignored in a table) and flags are adjacent: one 32-bit store.
            d.storeBytes(of: (UInt32(flags) << 16).littleEndian, toByteOffset: PackedRingLayout.descIdOffset,
                         as: UInt32.self)
            i &+= 1
        }
        let st = state + Int(id)
        st.pointee.cookie = cookie
        st.pointee.writableLength = writable > UInt64(UInt32.max) ? UInt32.max : UInt32(truncatingIfNeeded: writable)
        st.pointee.chainLength = 1
        st.pointee.serial = addSerial
        writeDescriptorBody(position, address: UInt64(UInt(bitPattern: table)),
                            length: UInt32(truncatingIfNeeded: count &* PackedRingLayout.descriptorSize), id: id)
        commitHead(position, flags: PackedRingFlags.descIndirect | PackedRingFlags.availBits(wrap: availWrap))
        advanceAvail()
        finishAdd(slots: 1)
        return true
    }
}
