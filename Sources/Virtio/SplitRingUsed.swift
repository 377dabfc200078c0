import CFerry

/// Reclaiming completed chains from the used ring, with the used ring treated as hostile input.
///
/// Rules (each keeps the driver inside its own tables whatever the device writes):
/// - used->idx is read with acquire, so the entries before it are read after it (§2.7.13.3
///   from the device's side).
/// - At most min(used->idx - lastUsedIndex, published chains in flight, max) chains are
///   completed per call: a device that jumps used->idx costs bounded work and cannot make the
///   driver read more entries than it could legitimately have written. The rest wait for the
///   next call.
/// - Without IN_ORDER, an entry whose id is >= queueSize, is not the head of an in-flight chain
///   (a double completion, or a descriptor in the middle of a chain), or names a chain not yet
///   published is counted in `invalidUsedIds` and skipped; lastUsedIndex still advances past it.
/// - A used length larger than the chain's posted writable length is counted in
///   `invalidUsedLengths` and reported as 0, so the caller drops the buffer instead of reading
///   past what it posted. Chains with nothing writable always report 0.
/// - With IN_ORDER (§2.7.9) the device uses chains in avail order and may write one used entry
///   for a batch: at the slot of the batch's first chain, with the id of its last, and it then
///   advances used->idx by the batch size. So used->idx still counts chains, and the driver
///   knows which chains are done from the index alone; it reads an entry only where a batch
///   starts, to learn the batch's size and its last chain's length. The chains skipped over
///   were used completely (§2.7.9), so they report their posted writable length. An id that is
///   not among the chains the index says are done is counted invalid and stands for a batch of
///   one, reported with length 0: the index is what the driver trusts, so nothing leaks.
/// - `reclaimUsed` (TX, where lengths mean nothing) with IN_ORDER reads no used entry at all:
///   the IN_ORDER fast path. Use one of `dequeueUsed` and `reclaimUsed` per ring: after the
///   fast path the driver no longer knows where the device's batches start, so a later
///   `dequeueUsed` may take a stale entry for a batch start (then counted invalid, one chain
///   reported with length 0; never a wrong buffer or an access outside the ring).
extension SplitRing {
    /// Reads completed chains: for each valid one, writes its cookie and used length into
    /// `cookies[i]` / `lengths[i]` and frees its descriptors. Returns how many were written
    /// (at most `max`).
    // SAFETY: `cookies` and `lengths` must have room for `max` elements (caller's contract).
    @inlinable
    public mutating func dequeueUsed(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                                     max: Int) -> Int {
        if inOrder { return dequeueUsedInOrder(cookies: cookies, lengths: lengths, max: max) }
        return dequeueUsedAnyOrder(cookies: cookies, lengths: lengths, max: max)
    }

    /// Takes back completed chains whose used lengths do not matter (TX): writes each one's
    /// cookie into `cookies[i]` and frees its descriptors. Returns how many (at most `max`).
    /// With IN_ORDER this reads used->idx and nothing else (the fast path; see above).
    // SAFETY: `cookies` must have room for `max` elements (caller's contract).
    @inlinable
    public mutating func reclaimUsed(cookies: UnsafeMutablePointer<UInt32>, max: Int) -> Int {
        if inOrder { return reclaimUsedInOrder(cookies: cookies, max: max) }
        return dequeueUsedAnyOrder(cookies: cookies, lengths: nil, max: max)
    }

    /// Chains the device says are done and the driver has not taken back: used->idx minus
    /// lastUsedIndex, clamped to the published chains in flight and to `max`.
    // SAFETY: used->idx lies inside the ring memory.
    @inlinable
    func usedBudget(max: Int) -> Int {
        let deviceIndex = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitRingLayout.usedIdxOffset))
        var budget = Int(deviceIndex &- _lastUsedIndex)
        let visible = publishedInFlight
        if budget > visible { budget = visible }
        if budget > max { budget = max }
        return budget
    }

    /// Without IN_ORDER: one used entry per chain, each id checked.
    // SAFETY: entries are read at `lastUsedIndex & mask`, inside the used ring; an id indexes
    // the private table only after `id < queueSize`; `lengths`, when given, has room for `max`.
    @inlinable
    mutating func dequeueUsedAnyOrder(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>?,
                                      max: Int) -> Int {
        var budget = usedBudget(max: max)
        var produced = 0
        while budget > 0 {
            let entry = usedEntry(_lastUsedIndex)
            let id = UInt32(littleEndian: entry.load(as: UInt32.self))
            _lastUsedIndex &+= 1
            budget &-= 1
            guard id < UInt32(queueSize) else {
                _invalidUsedIds &+= 1
                continue
            }
            let head = UInt16(truncatingIfNeeded: id)
            guard state[Int(head)].chainLength != 0, !isUnpublished(head) else {
                _invalidUsedIds &+= 1
                continue
            }
            cookies[produced] = state[Int(head)].cookie
            if let lengths {
                let length = UInt32(littleEndian: entry.load(fromByteOffset: 4, as: UInt32.self))
                lengths[produced] = validatedLength(head: head, usedLength: length)
            }
            produced &+= 1
            freeChain(head)
        }
        return produced
    }

    /// The IN_ORDER variant: completes the oldest chains, as many as used->idx says, reading a
    /// used entry only where a batch starts. A batch cut short by `max` goes on next call.
    // SAFETY: as dequeueUsed; heads come from `availHeads` within the in-flight window.
    @inlinable
    mutating func dequeueUsedInOrder(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                                     max: Int) -> Int {
        // Search batches among every chain used->idx says is done, not only the `max` taken.
        let done = usedBudget(max: Int.max)
        let budget = done < max ? done : max
        var produced = 0
        while produced < budget {
            if batchLeft == 0 { startBatch(done: done &- produced) }
            let head = availHeads[Int(oldestSlot & mask)]
            cookies[produced] = state[Int(head)].cookie
            batchLeft &-= 1
            lengths[produced] = batchLeft == 0 ? validatedLength(head: head, usedLength: batchLength)
                                               : state[Int(head)].writableLength
            produced &+= 1
            freeOldestInOrder(head)
        }
        return produced
    }

    /// Reads the used entry at lastUsedIndex as the start of a batch: its id must be one of the
    /// next `done` chains from the oldest (the ones used->idx says are complete). Sets
    /// `batchLeft` to the batch size and `batchLength` to the entry's length; an id outside
    /// that window is counted invalid and makes a batch of one with length 0.
    // SAFETY: the entry lies inside the used ring; availHeads is indexed with masked slots.
    @inlinable
    mutating func startBatch(done: Int) {
        let entry = usedEntry(_lastUsedIndex)
        let id = UInt32(littleEndian: entry.load(as: UInt32.self))
        // The usual case, one entry per chain (DPDK's vhost, the kernel's vhost-net).
        if id == UInt32(availHeads[Int(oldestSlot & mask)]) {
            batchLeft = 1
            batchLength = UInt32(littleEndian: entry.load(fromByteOffset: 4, as: UInt32.self))
            return
        }
        var k = 1
        while k < done {
            if id == UInt32(availHeads[Int((oldestSlot &+ UInt16(truncatingIfNeeded: k)) & mask)]) {
                batchLeft = k &+ 1
                batchLength = UInt32(littleEndian: entry.load(fromByteOffset: 4, as: UInt32.self))
                return
            }
            k &+= 1
        }
        _invalidUsedIds &+= 1
        batchLeft = 1
        batchLength = 0
    }

    /// The IN_ORDER fast path for TX: completes the oldest chains, as many as used->idx says,
    /// without reading any used entry.
    // SAFETY: `cookies` has room for `max`; heads come from `availHeads` within the window.
    @inlinable
    mutating func reclaimUsedInOrder(cookies: UnsafeMutablePointer<UInt32>, max: Int) -> Int {
        let budget = usedBudget(max: max)
        // Locals for the loop: the side-table stores could alias the ring's fields as far as
        // the compiler knows, and would make it reload and re-store them per chain.
        var slot = oldestSlot
        var freed = 0
        var produced = 0
        while produced < budget {
            let head = Int(availHeads[Int(slot & mask)])
            cookies[produced] = state[head].cookie
            freed &+= Int(state[head].chainLength)
            state[head].chainLength = 0
            slot &+= 1
            produced &+= 1
        }
        oldestSlot = slot
        _numFree &+= freed
        _inFlight &-= produced
        _lastUsedIndex &+= UInt16(truncatingIfNeeded: produced)
        batchLeft = batchLeft > budget ? batchLeft &- budget : 0
        return produced
    }

    /// IN_ORDER: returns the oldest in-flight chain (headed at `head`) to the free list and
    /// moves past its avail slot and used entry. Descriptors are handed out and returned in
    /// ring order, so the free descriptors are always the run that follows the in-flight ones
    /// and their links (x -> x+1, set at init) never change: freeing is a count.
    // SAFETY: `head` is the in-flight head at `oldestSlot`, < queueSize.
    @inlinable
    mutating func freeOldestInOrder(_ head: UInt16) {
        let count = state[Int(head)].chainLength
        state[Int(head)].chainLength = 0
        _numFree &+= Int(count)
        _inFlight &-= 1
        oldestSlot &+= 1
        _lastUsedIndex &+= 1
    }

    /// The used ring element `{le32 id; le32 len}` at `index` (masked).
    // SAFETY: the masked slot lies inside the used ring.
    @inlinable
    func usedEntry(_ index: UInt16) -> UnsafeMutableRawPointer {
        used + (SplitRingLayout.usedRingOffset &+ Int(index & mask) &* SplitRingLayout.usedElemSize)
    }

    /// True when `head` was added but not yet published. Only scans when something is pending
    /// publication, which the usual order (reclaim, add, publish) never leaves.
    @inlinable
    func isUnpublished(_ head: UInt16) -> Bool {
        var slot = publishedIndex
        while slot != _availIndex {
            if availHeads[Int(slot & mask)] == head { return true }
            slot &+= 1
        }
        return false
    }

    /// The used length if the chain could hold it, else 0 (counted when the chain had
    /// writable room, since only then is a length meaningful).
    @inlinable
    mutating func validatedLength(head: UInt16, usedLength: UInt32) -> UInt32 {
        let writable = state[Int(head)].writableLength
        if usedLength <= writable { return usedLength }
        if writable != 0 { _invalidUsedLengths &+= 1 }
        return 0
    }

    /// Returns the chain at `head` (an in-flight head) to the head of the free list, following
    /// the private links, where its descriptors are still warm in cache. Without IN_ORDER only
    /// (IN_ORDER frees with `freeOldestInOrder`).
    // SAFETY: `head` is an in-flight head (chainLength > 0), so its links are private and valid.
    @inlinable
    mutating func freeChain(_ head: UInt16) {
        let count = state[Int(head)].chainLength
        state[Int(head)].chainLength = 0
        var tail = head
        var left = count &- 1
        while left > 0 {
            tail = state[Int(tail)].next
            left &-= 1
        }
        state[Int(tail)].next = freeHead
        freeHead = head
        _numFree &+= Int(count)
        _inFlight &-= 1
    }
}
