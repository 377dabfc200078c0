import CFerry

/// Reclaiming completed chains from a packed ring, with every used descriptor treated as
/// hostile input.
///
/// Rules (each keeps the driver inside the ring and its own table whatever the device writes):
/// - The descriptor at the used position is used when its AVAIL and USED bits both equal the
///   used wrap counter (§2.8.1); any other pattern means "not yet" and stops the scan. Its
///   flags are read with acquire, so its id and length are read after them.
/// - At most as many used descriptors as there are published chains in flight are read per
///   call, valid or not: a device cannot make the driver do more work than it could
///   legitimately cause, and never makes it loop.
/// - A valid id is < queueSize, names a chain in flight, and that chain was published (the
///   device could not have seen it otherwise). The used position then advances by the chain
///   length the DRIVER recorded for that id (not anything the device wrote), so it stays inside
///   the ring and the wrap counter flips exactly when the position passes the end.
/// - An invalid id (out of range, not in flight, a duplicate, not yet published) is counted in
///   `invalidUsedIds` and skipped, advancing the used position by ONE slot. The id says nothing
///   trustworthy about how many slots the device meant to cover, and one is the least that
///   guarantees progress. An honest device never writes one; after a hostile one the driver's
///   used position may disagree with the device's, which at worst stalls the queue (the driver
///   waits at a slot the device never fills) or completes a wrong buffer. With IN_ORDER the
///   next valid used descriptor re-synchronises the position (see below).
/// - A used length larger than the chain's posted writable length is counted in
///   `invalidUsedLengths` and reported as 0, so the caller drops the buffer instead of reading
///   past what it posted. Chains with nothing writable (TX) always report 0, uncounted, as the
///   split ring does.
/// - With IN_ORDER (§2.8, "In-order use of descriptors") the device may write one used
///   descriptor for a batch: its id (the id of the batch's last buffer) completes every
///   in-flight chain in ring order up to and including it. The earlier ones were used
///   completely (the spec's words), so they report their posted writable length. The used
///   position moves to the end of that id's chain, wherever the descriptor was found: the
///   driver reads one descriptor per batch, which is the IN_ORDER fast path of this ring. If the caller's room runs out mid-batch, the rest of the batch is reported by the
///   next call; the descriptor itself is consumed at once, because its slot is free for the
///   driver to reuse as soon as the first chain of the batch is.
extension PackedRing {
    /// Reads completed chains: for each valid one, writes its cookie and used length into
    /// `cookies[i]` / `lengths[i]` and frees its slots and id. Returns how many were written
    /// (at most `max`).
    // SAFETY: `cookies` and `lengths` must have room for `max` elements (caller's contract).
    // Descriptors are read at `usedPosition` (< queueSize); every id from the device is checked
    // against queueSize before it indexes the private table.
    @inlinable
    public mutating func dequeueUsed(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                                     max: Int) -> Int {
        if inOrder { return dequeueUsedInOrder(cookies: cookies, lengths: lengths, max: max) }
        return dequeueUsedAnyOrder(cookies: cookies, lengths: lengths, max: max)
    }

    /// Takes back completed chains whose used lengths do not matter (TX): as `dequeueUsed`
    /// without reading or reporting lengths.
    // SAFETY: `cookies` must have room for `max` elements (caller's contract).
    @inlinable
    public mutating func reclaimUsed(cookies: UnsafeMutablePointer<UInt32>, max: Int) -> Int {
        if inOrder { return dequeueUsedInOrder(cookies: cookies, lengths: nil, max: max) }
        return dequeueUsedAnyOrder(cookies: cookies, lengths: nil, max: max)
    }

    /// Without IN_ORDER: one used descriptor per chain, each id checked. `lengths` nil: not
    /// wanted.
    // SAFETY: as dequeueUsed.
    @inlinable
    mutating func dequeueUsedAnyOrder(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>?,
                                      max: Int) -> Int {
        var budget = publishedInFlight
        var produced = 0
        while budget > 0 && produced < max {
            let d = desc + Int(usedPosition) &* PackedRingLayout.descriptorSize
            let flags = UInt16(littleEndian: ferry_load_acquire_u16(d + PackedRingLayout.descFlagsOffset))
            guard PackedRingFlags.isUsed(flags: flags, wrap: usedWrap) else { break }
            let id = UInt16(littleEndian: d.load(fromByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self))
            budget &-= 1
            guard isCompletable(id) else {
                _invalidUsedIds &+= 1
                advanceUsed(by: 1)
                continue
            }
            let s = state + Int(id)
            let chainLength = s.pointee.chainLength
            cookies[produced] = s.pointee.cookie
            if let lengths {
                let length = UInt32(littleEndian: d.load(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self))
                lengths[produced] = validatedLength(s.pointee.writableLength, usedLength: length)
            }
            produced &+= 1
            advanceUsed(by: chainLength)
            s.pointee.chainLength = 0
            s.pointee.nextFree = freeId
            freeId = id
            _numFree &+= Int(chainLength)
            _inFlight &-= 1
        }
        return produced
    }

    /// The IN_ORDER variant: first finishes a batch left over by the previous call, then reads
    /// used descriptors, each completing the chains from the oldest up to its id. `lengths`
    /// nil: not wanted (the descriptor's length is then not read).
    // SAFETY: as dequeueUsed; ids equal head positions (< queueSize once checked).
    @inlinable
    mutating func dequeueUsedInOrder(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>?,
                                     max: Int) -> Int {
        var produced = 0
        if batchPending {
            drainBatch(cookies: cookies, lengths: lengths, max: max, produced: &produced)
            if batchPending { return produced }
        }
        var budget = publishedInFlight
        while budget > 0 && produced < max {
            let d = desc + Int(usedPosition) &* PackedRingLayout.descriptorSize
            let flags = UInt16(littleEndian: ferry_load_acquire_u16(d + PackedRingLayout.descFlagsOffset))
            guard PackedRingFlags.isUsed(flags: flags, wrap: usedWrap) else { break }
            let id = UInt16(littleEndian: d.load(fromByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self))
            budget &-= 1
            // The usual case (DPDK's vhost on RX): a batch of one, naming the oldest chain,
            // found where that chain starts. That chain is in flight and published (budget
            // > 0 means a published chain is in flight, and the oldest is published first).
            if id == oldestPosition && usedPosition == oldestPosition {
                let s = state + Int(id)
                let chainLength = s.pointee.chainLength
                cookies[produced] = s.pointee.cookie
                if let lengths {
                    let length = UInt32(littleEndian: d.load(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self))
                    lengths[produced] = validatedLength(s.pointee.writableLength, usedLength: length)
                }
                produced &+= 1
                s.pointee.chainLength = 0
                _numFree &+= Int(chainLength)
                _inFlight &-= 1
                let next = Self.advance(id, by: chainLength, queueSize: queueSize)
                oldestPosition = next.position
                if next.flipped { oldestWrap.toggle() }
                usedPosition = oldestPosition
                usedWrap = oldestWrap
                continue
            }
            guard isCompletable(id) else {
                _invalidUsedIds &+= 1
                advanceUsed(by: 1)
                continue
            }
            // Consume the descriptor now: continue after the id's chain, on the wrap counter of
            // that position (in-flight chains lie in one lap starting at the oldest).
            let headWrap = id >= oldestPosition ? oldestWrap : !oldestWrap
            let next = Self.advance(id, by: state[Int(id)].chainLength, queueSize: queueSize)
            usedPosition = next.position
            usedWrap = next.flipped ? !headWrap : headWrap
            batchPending = true
            batchId = id
            batchLength = UInt32(littleEndian: d.load(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self))
            drainBatch(cookies: cookies, lengths: lengths, max: max, produced: &produced)
            if batchPending { break }
        }
        return produced
    }

    /// Completes chains from the oldest until the pending batch's id is done or `max` is reached.
    /// Ends because the batch id is an in-flight published head, and in-flight chains are the
    /// contiguous run from the oldest; the `_inFlight` guard only makes that explicit.
    // SAFETY: `oldestPosition` is an in-flight head (< queueSize) while `_inFlight > 0`.
    @inlinable
    mutating func drainBatch(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>?,
                             max: Int, produced: inout Int) {
        // The ring's fields are copied to locals for the loop: the stores into the side table
        // below could alias them as far as the compiler knows, and would make it reload and
        // re-store every field per chain.
        var oldest = oldestPosition
        var wrap = oldestWrap
        var free = _numFree
        var inFlight = _inFlight
        var p = produced
        let target = batchId
        let size = queueSize
        var finished = false
        while p < max && inFlight > 0 {
            let s = state + Int(oldest)
            let chainLength = s.pointee.chainLength
            let last = oldest == target
            cookies[p] = s.pointee.cookie
            if let lengths {
                lengths[p] = last ? validatedLength(s.pointee.writableLength, usedLength: batchLength)
                                  : s.pointee.writableLength
            }
            p &+= 1
            s.pointee.chainLength = 0
            free &+= Int(chainLength)
            inFlight &-= 1
            let next = Self.advance(oldest, by: chainLength, queueSize: size)
            oldest = next.position
            if next.flipped { wrap.toggle() }
            if last {
                finished = true
                break
            }
        }
        oldestPosition = oldest
        oldestWrap = wrap
        _numFree = free
        _inFlight = inFlight
        produced = p
        if finished || inFlight == 0 { batchPending = false }
    }

    /// True when `id` names a chain the device may complete: in range, in flight, published.
    // SAFETY: the table is indexed only after `id < queueSize` is checked.
    @inlinable
    func isCompletable(_ id: UInt16) -> Bool {
        guard id < queueSize else { return false }
        let s = state[Int(id)]
        guard s.chainLength != 0 else { return false }
        // Unpublished chains are the last `unpublishedChains` added: serials in
        // [addSerial - unpublishedChains, addSerial), compared modulo 2^32. (An in-flight chain
        // would have to be 2^32 chains old to alias into that window.)
        return addSerial &- s.serial > UInt32(truncatingIfNeeded: unpublishedChains)
    }

    /// Moves the used position `count` (<= queueSize) slots, flipping the used wrap counter when
    /// it passes the end of the ring.
    @inlinable
    mutating func advanceUsed(by count: UInt16) {
        let next = Self.advance(usedPosition, by: count, queueSize: queueSize)
        usedPosition = next.position
        if next.flipped { usedWrap.toggle() }
    }

    /// The used length if the chain could hold it, else 0 (counted when the chain had writable
    /// room, since only then is a length meaningful).
    @inlinable
    mutating func validatedLength(_ writable: UInt32, usedLength: UInt32) -> UInt32 {
        if usedLength <= writable { return usedLength }
        if writable != 0 { _invalidUsedLengths &+= 1 }
        return 0
    }

    /// Completed chains waiting: what `dequeueUsed` with unlimited room would report now (the
    /// rest of a pending IN_ORDER batch, then every used descriptor with a valid id, a batch
    /// counting for its chains). Reads the ring, changes nothing; reads at most as many
    /// descriptors as `dequeueUsed` would. A duplicate id among waiting descriptors may be
    /// counted twice without IN_ORDER.
    // SAFETY: reads descriptors at positions kept < queueSize; ids are checked before use.
    public func pendingUsed() -> Int {
        var count = 0
        // IN_ORDER: slots from `oldestPosition` already accounted for by the simulation.
        var consumed = 0
        if inOrder && batchPending {
            count &+= chainsThrough(batchId, consumed: &consumed)
        }
        var position = usedPosition
        var wrap = usedWrap
        var budget = publishedInFlight &- count
        while budget > 0 {
            let d = desc + Int(position) &* PackedRingLayout.descriptorSize
            let flags = UInt16(littleEndian: ferry_load_acquire_u16(d + PackedRingLayout.descFlagsOffset))
            guard PackedRingFlags.isUsed(flags: flags, wrap: wrap) else { break }
            let id = UInt16(littleEndian: d.load(fromByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self))
            budget &-= 1
            var step: UInt16 = 1
            if isCompletable(id) {
                if !inOrder {
                    count &+= 1
                    step = state[Int(id)].chainLength
                } else if relativeToOldest(id) >= consumed {
                    count &+= chainsThrough(id, consumed: &consumed)
                    let idWrap = id >= oldestPosition ? oldestWrap : !oldestWrap
                    let next = Self.advance(id, by: state[Int(id)].chainLength, queueSize: queueSize)
                    position = next.position
                    wrap = next.flipped ? !idWrap : idWrap
                    continue
                }
            }
            let next = Self.advance(position, by: step, queueSize: queueSize)
            position = next.position
            if next.flipped { wrap.toggle() }
        }
        return count
    }

    /// IN_ORDER: slots from the oldest in-flight chain forward to `position` (0..<queueSize).
    @inlinable
    func relativeToOldest(_ position: UInt16) -> Int {
        position >= oldestPosition ? Int(position &- oldestPosition)
            : Int(position) &+ Int(queueSize) &- Int(oldestPosition)
    }

    /// IN_ORDER: counts the chains from `consumed` slots past the oldest up to and including the
    /// chain headed at `id`, adding their slots to `consumed`. Never walks past the slots in use.
    // SAFETY: positions come from `advance` modulo queueSize.
    @inlinable
    func chainsThrough(_ id: UInt16, consumed: inout Int) -> Int {
        let inUse = Int(queueSize) &- _numFree
        var k = 0
        while consumed < inUse {
            let head = Self.advance(oldestPosition, by: UInt16(truncatingIfNeeded: consumed), queueSize: queueSize).position
            let length = state[Int(head)].chainLength
            guard length != 0 else { break }
            consumed &+= Int(length)
            k &+= 1
            if head == id { break }
        }
        return k
    }
}
