/// The driver side of a virtqueue, split (§2.7) or packed (§2.8): what the datapath and the
/// device lifecycle need from a ring, so they can be generic over the ring kind.
///
/// Use it as a generic constraint (`struct RxQueue<R: DriverRing>`), never as an existential:
/// the conformers' per-packet methods are `@inlinable` and the types `@frozen`, so code generic
/// over `R` specialises and inlines them across modules; an `any DriverRing` would dispatch
/// every call.
///
/// Where split and packed differ in meaning, the requirement says so:
/// - `availIndex` / `lastUsedIndex`: split — free-running 16-bit indices; packed — a ring
///   position with its wrap counter in bit 15 (`position | wrap << 15`).
/// - `descTable` / `availRing` / `usedRing`: the three SET_VRING_ADDR addresses; packed — the
///   descriptor ring, the driver event suppression area, the device event suppression area.
/// - `numFree` counts descriptors in both; a packed ring's chains take consecutive slots.
public protocol DriverRing {
    /// Builds the driver side over `memory` (zeroed, `memoryAlignment`-aligned, at least
    /// `memorySize(queueSize:)` bytes, shared with the device, not owned).
    init(memory: UnsafeMutableRawPointer, queueSize: UInt16, eventIdx: Bool, inOrder: Bool)
    /// Bytes of shared memory a ring of `queueSize` needs.
    static func memorySize(queueSize: Int) -> Int
    /// Alignment of that memory.
    static var memoryAlignment: Int { get }
    /// Whether this ring kind supports `queueSize` (split: a power of two; packed: any size;
    /// both 1...32768).
    static func supportsQueueSize(_ queueSize: Int) -> Bool

    var queueSize: UInt16 { get }
    /// Free descriptors.
    var numFree: Int { get }
    /// Chains added and not yet completed.
    var inFlight: Int { get }
    /// The driver's next avail index (split) or avail position and wrap (packed).
    var availIndex: UInt16 { get }
    /// The driver's next used index (split) or used position and wrap (packed).
    var lastUsedIndex: UInt16 { get }
    /// Used entries skipped for a bad id.
    var invalidUsedIds: UInt64 { get }
    /// Used entries whose length exceeded what was posted (reported as 0).
    var invalidUsedLengths: UInt64 { get }

    /// SET_VRING_ADDR: desc / avail (packed: driver area) / used (packed: device area).
    var descTable: UnsafeMutableRawPointer { get }
    var availRing: UnsafeMutableRawPointer { get }
    var usedRing: UnsafeMutableRawPointer { get }

    /// SET_VRING_BASE when the device (re)starts this ring: split 0 for a fresh ring (the used
    /// index otherwise); packed the used position with the wrap counter in bit 15, 0x8000 fresh.
    var initialBase: UInt32 { get }
    /// Descriptors (packed) or avail entries (split) made available and not yet taken by the
    /// device, given GET_VRING_BASE's answer: what was still queued when the device stopped.
    func pendingAvail(deviceBase: UInt32) -> Int

    mutating func addBuffer(address: UInt64, length: UInt32, deviceWritable: Bool, cookie: UInt32) -> Bool
    mutating func addChain(_ segments: UnsafeBufferPointer<RingSegment>, cookie: UInt32) -> Bool
    /// INDIRECT_DESC: bytes of shared memory for the tables of a ring of `queueSize`, each
    /// table holding `maxSegments` descriptors.
    static func indirectTableSize(queueSize: Int, maxSegments: Int) -> Int
    /// INDIRECT_DESC: gives the ring its tables (shared with the device, not owned).
    mutating func attachIndirect(tables: UnsafeMutableRawPointer, maxSegments: Int)
    /// The most segments `addIndirect` takes: 0 without tables.
    var indirectCapacity: Int { get }
    /// Posts a chain through ONE ring descriptor (split) or slot (packed) flagged INDIRECT;
    /// `numFree` drops by one. False, nothing posted, as `addChain` refuses, or when the
    /// chain is longer than `indirectCapacity`.
    mutating func addIndirect(_ segments: UnsafeBufferPointer<RingSegment>, cookie: UInt32) -> Bool
    mutating func publish()
    mutating func kickNeeded() -> Bool
    mutating func dequeueUsed(cookies: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                              max: Int) -> Int
    /// As `dequeueUsed` for chains whose used lengths mean nothing (TX): with IN_ORDER a split
    /// ring reads only used->idx, a packed ring one used descriptor per batch.
    mutating func reclaimUsed(cookies: UnsafeMutablePointer<UInt32>, max: Int) -> Int
    mutating func disableInterrupts()
    mutating func enableInterrupts() -> Bool
    func pendingUsed() -> Int
    func forEachInFlight(_ body: (UInt32) -> Void)
    func deallocate()
}

extension SplitRing: DriverRing {
    public static func memorySize(queueSize: Int) -> Int { SplitRingLayout.totalSize(queueSize: queueSize) }
    public static var memoryAlignment: Int { SplitRingLayout.alignment }
    public static func supportsQueueSize(_ queueSize: Int) -> Bool {
        queueSize > 0 && queueSize <= 32768 && queueSize & (queueSize - 1) == 0
    }

    /// The used index: 0 for a fresh ring, as the seed sends. Back-ends such as DPDK's vhost
    /// take the base as both their next avail and next used index, so after a restart with
    /// nothing in flight this is where both sides agree.
    public var initialBase: UInt32 { UInt32(lastUsedIndex) }

    /// avail idx minus the device's next avail index, modulo 2^16.
    public func pendingAvail(deviceBase: UInt32) -> Int {
        Int(availIndex &- UInt16(truncatingIfNeeded: deviceBase))
    }
}

extension PackedRing: DriverRing {
    public static func memorySize(queueSize: Int) -> Int { PackedRingLayout.totalSize(queueSize: queueSize) }
    public static var memoryAlignment: Int { PackedRingLayout.alignment }
    public static func supportsQueueSize(_ queueSize: Int) -> Bool {
        queueSize > 0 && queueSize <= PackedRingLayout.maxQueueSize
    }
}
