/// What the driver remembers about one descriptor, in memory the device cannot see.
///
/// Why private: the descriptor table is shared with an untrusted backend, which may rewrite
/// `next` or `len` at any time. Freeing a chain by following the shared `next` fields would let
/// it corrupt the free list; reporting a length without knowing what was posted would let it
/// claim bytes past the buffer. So the chain links, the posted writable length and the caller's
/// cookie live here, and the shared table is only ever written.
@frozen
@usableFromInline
struct SplitRingDescriptorState {
    /// The caller's token for the chain (valid on a chain head).
    @usableFromInline var cookie: UInt32
    /// Sum of the chain's device-writable lengths, saturated at UInt32.max (valid on a head).
    @usableFromInline var writableLength: UInt32
    /// The next descriptor: in the chain while in flight, in the free list while free.
    @usableFromInline var next: UInt16
    /// Descriptors in the chain when this is the head of an in-flight chain, otherwise 0.
    /// Zero is how a second completion of the same head is recognised.
    @usableFromInline var chainLength: UInt16

    @inlinable
    init(next: UInt16) {
        cookie = 0
        writableLength = 0
        self.next = next
        chainLength = 0
    }
}
