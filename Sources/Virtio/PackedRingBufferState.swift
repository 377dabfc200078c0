/// What the driver remembers about one buffer id of a packed ring, in memory the device cannot
/// see.
///
/// Why private: in a packed ring the device overwrites descriptors with used descriptors, so
/// nothing the driver wrote survives in shared memory. Chain lengths (how far a used descriptor
/// moves the ring), posted writable lengths and cookies live here, indexed by buffer id, and a
/// used descriptor is only trusted once its id has been checked against this table.
@frozen
@usableFromInline
struct PackedRingBufferState {
    /// The caller's token for the buffer.
    @usableFromInline var cookie: UInt32
    /// Sum of the chain's device-writable lengths, saturated at UInt32.max.
    @usableFromInline var writableLength: UInt32
    /// Ring slots the chain occupies while in flight, otherwise 0. Zero is how a second
    /// completion of the same id is recognised.
    @usableFromInline var chainLength: UInt16
    /// The next free id while this id is free (not IN_ORDER).
    @usableFromInline var nextFree: UInt16
    /// The ring's count of chains added when this one was added (wrapping). Tells a chain
    /// made available from one merely added: a device cannot legitimately complete the latter.
    /// Positions cannot tell them apart without IN_ORDER, as the ring may lap an old buffer.
    @usableFromInline var serial: UInt32

    @inlinable
    init(nextFree: UInt16) {
        cookie = 0
        writableLength = 0
        chainLength = 0
        self.nextFree = nextFree
        serial = 0
    }
}
