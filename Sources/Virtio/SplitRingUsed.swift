import CFerry

/// Reclaiming completed chains from the used ring, with the used ring treated as hostile input.
///
/// Rules (each keeps the driver inside its own tables whatever the device writes):
/// - used->idx is read with acquire, so the entries before it are read after it (§2.7.13.3
///   from the device's side).
/// - At most min(used->idx - lastUsedIndex, published chains in flight, max) entries are read
///   per call, valid or not: a device that jumps used->idx costs bounded work and cannot make
///   the driver read more entries than it could legitimately have written. Entries beyond that
///   wait for the next call.
/// - An entry whose id is >= queueSize, is not the head of an in-flight chain (a double
///   completion, or a descriptor in the middle of a chain), or names a chain not yet published
///   is counted in `invalidUsedIds` and skipped; lastUsedIndex still advances past it.
/// - A used length larger than the chain's posted writable length is counted in
///   `invalidUsedLengths` and reported as 0, so the caller drops the buffer instead of reading
///   past what it posted. Chains with nothing writable always report 0.
/// - With IN_ORDER (§2.7.9) one entry may stand for a batch: its id completes every in-flight
///   chain in avail order up to and including it; the earlier ones report length 0. An id not
///   found among the published in-flight chains is invalid.
extension SplitRing {
    /// Reads completed chains: for each valid one, writes its cookie and used length into
    /// `cookies[i]` / `lengths[i]` and frees its descriptors. Returns how many were written
    /// (at most `max`).
    // SAFETY: `cookies` and `lengths` must have room for `max` elements (caller's contract).
    // Used entries are read at `lastUsedIndex & mask`, inside the used ring; every table index
    // derived from device data is checked against queueSize or taken from the private copy of
    // the avail ring before use.
    @inlinable
    public mutating func dequeueUsed(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                                     max: Int) -> Int {
        let deviceIndex = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitRingLayout.usedIdxOffset))
        var budget = Int(deviceIndex &- _lastUsedIndex)
        let visible = publishedInFlight
        if budget > visible { budget = visible }
        if budget > max { budget = max }
        guard budget > 0 else { return 0 }
        if inOrder {
            return dequeueUsedInOrder(cookies: cookies, lengths: lengths, max: max, budget: budget)
        }
        var produced = 0
        while budget > 0 && produced < max {
            let entry = usedEntry(_lastUsedIndex)
            let id = UInt32(littleEndian: entry.load(as: UInt32.self))
            let length = UInt32(littleEndian: entry.load(fromByteOffset: 4, as: UInt32.self))
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
            lengths[produced] = validatedLength(head: head, usedLength: length)
            produced &+= 1
            freeChain(head)
        }
        return produced
    }

    /// The IN_ORDER variant: completes chains from `oldestSlot` up to the entry's id. A batch
    /// larger than the room left is finished on the next call (the entry is re-read then, and
    /// lastUsedIndex only moves past it once its whole batch is done).
    // SAFETY: as dequeueUsed; heads come from `availHeads` within the in-flight window.
    @inlinable
    mutating func dequeueUsedInOrder(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                                     max: Int, budget: Int) -> Int {
        var produced = 0
        var budget = budget
        while budget > 0 && produced < max {
            let entry = usedEntry(_lastUsedIndex)
            let id = UInt32(littleEndian: entry.load(as: UInt32.self))
            let length = UInt32(littleEndian: entry.load(fromByteOffset: 4, as: UInt32.self))
            // Position of the id among the published in-flight chains, oldest first.
            var remaining = -1
            if id < UInt32(queueSize) {
                let head = UInt16(truncatingIfNeeded: id)
                let window = Int(publishedIndex &- oldestSlot)
                var k = 0
                var slot = oldestSlot
                while k < window {
                    if availHeads[Int(slot & mask)] == head {
                        remaining = k
                        break
                    }
                    k &+= 1
                    slot &+= 1
                }
            }
            if remaining < 0 {
                _invalidUsedIds &+= 1
                _lastUsedIndex &+= 1
                budget &-= 1
                continue
            }
            while true {
                let head = availHeads[Int(oldestSlot & mask)]
                cookies[produced] = state[Int(head)].cookie
                lengths[produced] = remaining == 0 ? validatedLength(head: head, usedLength: length) : 0
                produced &+= 1
                freeChain(head)
                oldestSlot &+= 1
                if remaining == 0 || produced == max { break }
                remaining &-= 1
            }
            guard remaining == 0 else { break }
            _lastUsedIndex &+= 1
            budget &-= 1
        }
        return produced
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

    /// Returns the chain at `head` (an in-flight head) to the free list, following the private
    /// links. With IN_ORDER the chain goes to the tail, so descriptors keep being handed out in
    /// ring order; otherwise to the head, where its descriptors are still warm in cache.
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
        if inOrder {
            if _numFree == 0 {
                freeHead = head
            } else {
                state[Int(freeTail)].next = head
            }
            freeTail = tail
        } else {
            state[Int(tail)].next = freeHead
            freeHead = head
        }
        _numFree &+= Int(count)
        _inFlight &-= 1
    }
}
