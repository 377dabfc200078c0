#if canImport(Glibc)
import Glibc
#endif

/// Fixed-size packet buffers in shared memory, named by a 32-bit index.
///
/// Each buffer is `headroom` bytes (where the virtio-net header goes, right before the frame)
/// followed by `dataRoom` bytes of frame. A buffer's descriptor address is its Ferry virtual
/// address, so the same buffer can be received on one port and sent on another with no copy:
/// every backend maps the whole of Ferry's memory.
///
/// The pool itself is a mutex-guarded stack used only in bulk. Workers go through their own
/// `PoolCache`, so the datapath takes no lock per packet and, in a steady state, none at all.
public final class PacketPool: @unchecked Sendable {
    public static let defaultHeadroom = 128
    public static let defaultDataRoom = 2048

    public let base: UnsafeMutableRawPointer
    /// Buffers in the pool so far; grows with `grow`.
    public private(set) var count: Int
    public let headroom: Int
    public let dataRoom: Int
    public var stride: Int { headroom + dataRoom }
    /// The most buffers the pool can ever hold: what the memory's reservation allows.
    public let capacity: Int

    /// "No next buffer" in the segment chain table.
    public static let noBuffer: UInt32 = .max
    /// The longest chain `freeChain`/`give` will walk: far beyond any real frame (a 9216-byte
    /// frame needs at most a handful of buffers), so a bookkeeping bug cannot loop forever.
    public static let maxChainLength = 256

    private let memory: SharedMemory
    private let freeStack: UnsafeMutablePointer<UInt32>
    /// Per-buffer segment metadata, in Ferry's private heap (never shared with a backend, so
    /// a hostile device cannot corrupt it): the next buffer of the frame (`noBuffer` at the
    /// end; always `noBuffer` for a free buffer), and, for multi-buffer frames only, where the
    /// segment's data starts in its buffer and how long it is. A single-buffer frame uses none
    /// of the last two: its data starts after the headroom and its length is the frame's.
    let nextTable: UnsafeMutablePointer<UInt32>
    let segmentOffsets: UnsafeMutablePointer<UInt16>
    let segmentLengths: UnsafeMutablePointer<UInt16>
    private var top: Int
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    /// Low-water notification (under `lock`): the first `take` that leaves fewer than
    /// `lowWater` buffers signals `lowWaterEvent` once, until `armLowWater` is called again.
    private var lowWater = 0
    private var lowWaterEvent: EventFD?
    private var lowWaterSignalled = false

    /// Carves at least `count` buffers out of `memory`: everything it has left, so the pool
    /// sits at the end of the memory and can grow in place when the memory grows.
    public init(memory: SharedMemory, count: Int, headroom: Int = defaultHeadroom,
                dataRoom: Int = defaultDataRoom) throws {
        precondition(count > 0 && count < Int(UInt32.max))
        self.memory = memory
        self.headroom = headroom
        self.dataRoom = dataRoom
        let stride = headroom + dataRoom
        let (start, bytes) = try memory.allocateRest(alignment: 64)
        guard bytes / stride >= count else {
            throw SharedMemoryError.exhausted(requested: count * stride, remaining: bytes)
        }
        base = start
        self.count = bytes / stride
        capacity = min(Int(UInt32.max) - 1, self.count + (memory.reservedSize - memory.size) / stride)
        freeStack = .allocate(capacity: capacity)
        nextTable = .allocate(capacity: capacity)
        nextTable.initialize(repeating: Self.noBuffer, count: capacity)
        segmentOffsets = .allocate(capacity: capacity)
        segmentOffsets.initialize(repeating: UInt16(headroom), count: capacity)
        segmentLengths = .allocate(capacity: capacity)
        segmentLengths.initialize(repeating: 0, count: capacity)
        // Hand out low indices first: they are the first pages touched.
        for i in 0..<self.count { freeStack[i] = UInt32(self.count - 1 - i) }
        top = self.count
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
        freeStack.deallocate()
        nextTable.deallocate()
        segmentOffsets.deallocate()
        segmentLengths.deallocate()
    }

    /// Buffers currently in the pool (not in any cache or ring).
    public var available: Int {
        pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }
        return top
    }

    /// Maps a new memory segment of at least `buffers` buffers right after the pool. The new
    /// buffers are not handed out yet: the backends must first learn the new memory table;
    /// then `release(_:)` puts them in the pool. Control thread only.
    public func grow(buffers: Int) throws -> Range<UInt32> {
        // Buffers never straddle two segments: the first new one starts inside the new
        // segment, and indices in the gap are simply never handed out.
        let poolOffset = base - memory.base
        let (segment, bytes) = try memory.grow(bytes: (buffers + 1) * stride)
        let segmentStart = segment - memory.base
        let first = (segmentStart - poolOffset + stride - 1) / stride
        let end = min((segmentStart + bytes - poolOffset) / stride, capacity)
        count = end
        // Claim the carve so nothing else is allocated there.
        _ = try memory.allocateRest(alignment: 1)
        return UInt32(first)..<UInt32(max(first, end))
    }

    /// Puts new buffers (from `grow`) into the pool.
    public func release(_ range: Range<UInt32>) {
        pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }
        for i in range where top < capacity {
            freeStack[top] = i
            top += 1
        }
    }

    /// Moves up to `n` buffer indices into `out`; returns how many.
    public func take(into out: UnsafeMutablePointer<UInt32>, count n: Int) -> Int {
        pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }
        let k = min(n, top)
        // SAFETY: k <= top <= capacity, so both ranges are inside their allocations.
        (out).update(from: freeStack + (top - k), count: k)
        top -= k
        if top < lowWater { signalLowWater() }
        return k
    }

    /// Signals `event` once when the pool falls below `threshold` free buffers (at once if it
    /// already has), so the control thread can grow the pool without watching it on a timer.
    /// Taking buffers is a worker's bulk refill, so the check costs one comparison per half
    /// cache; the signal is one eventfd write per crossing. Call again to re-arm.
    public func armLowWater(below threshold: Int, event: EventFD) {
        pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }
        lowWater = threshold
        lowWaterEvent = event
        lowWaterSignalled = false
        if top < lowWater { signalLowWater() }
    }

    /// Called with `lock` held.
    private func signalLowWater() {
        guard !lowWaterSignalled, let lowWaterEvent else { return }
        lowWaterSignalled = true
        lowWaterEvent.signal()
    }

    /// Returns `n` buffer indices. An index outside the pool is ignored rather than trusted.
    /// Each index is a frame head: the rest of its chain comes back too, and every buffer
    /// returned has its `next` reset (free buffers never have a next).
    public func give(_ indices: UnsafePointer<UInt32>, count n: Int) {
        pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }
        for i in 0..<n {
            var b = indices[i]
            var hops = 0
            while Int(b) < count && top < capacity && hops < Self.maxChainLength {
                freeStack[top] = b
                top += 1
                hops += 1
                let nx = nextTable[Int(b)]
                nextTable[Int(b)] = Self.noBuffer
                b = nx
            }
        }
    }

    /// The buffer after `index` in its frame, or `noBuffer` (for tests and diagnostics).
    public func next(of index: UInt32) -> UInt32 {
        Int(index) < capacity ? nextTable[Int(index)] : Self.noBuffer
    }

    /// A cache for one worker.
    public func makeCache(capacity: Int = 512) -> PoolCache {
        PoolCache(pool: self, capacity: capacity)
    }
}

/// A worker's private stock of buffers: a plain array stack, refilled from and spilled to the
/// shared pool half a cache at a time.
///
/// `@frozen` and `@inlinable` so the forwarding loop in another module specializes and inlines
/// it (swift-hot-path.md: non-inlinable cross-module calls cost 2–3×).
@frozen
public struct PoolCache {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let stride: Int
    @usableFromInline let headroom: Int
    @usableFromInline let stack: UnsafeMutablePointer<UInt32>
    @usableFromInline var depth: Int
    @usableFromInline let capacity: Int
    @usableFromInline unowned(unsafe) let pool: PacketPool
    /// The pool's segment tables (see `PacketPool.nextTable`).
    @usableFromInline let nextTable: UnsafeMutablePointer<UInt32>
    @usableFromInline let segmentOffsets: UnsafeMutablePointer<UInt16>
    @usableFromInline let segmentLengths: UnsafeMutablePointer<UInt16>

    init(pool: PacketPool, capacity: Int) {
        self.pool = pool
        nextTable = pool.nextTable
        segmentOffsets = pool.segmentOffsets
        segmentLengths = pool.segmentLengths
        base = pool.base
        stride = pool.stride
        headroom = pool.headroom
        self.capacity = max(capacity, 64)
        stack = .allocate(capacity: self.capacity)
        depth = 0
    }

    /// Returns every cached buffer to the pool and frees the cache's own stack.
    public mutating func release() {
        flush()
        stack.deallocate()
    }

    /// Returns every cached buffer to the pool.
    public mutating func flush() {
        pool.give(stack, count: depth)
        depth = 0
    }

    public var cachedCount: Int { depth }
    public var dataRoom: Int { stride - headroom }
    public var headroomSize: Int { headroom }

    /// A buffer, or nil when the cache and the pool are both empty.
    @inlinable @inline(__always)
    public mutating func get() -> UInt32? {
        if depth == 0 {
            refill()
            if depth == 0 { return nil }
        }
        depth &-= 1
        return stack[depth]
    }

    @inlinable @inline(__always)
    public mutating func put(_ index: UInt32) {
        if depth == capacity { spill() }
        stack[depth] = index
        depth &+= 1
    }

    /// Frees a whole frame: `head` and every buffer chained after it, resetting their links.
    /// A single-buffer frame costs one extra load over `put`.
    @inlinable @inline(__always)
    public mutating func freeChain(_ head: UInt32) {
        // SAFETY: indices come from this pool; the tables span its whole capacity.
        let nx = nextTable[Int(head)]
        put(head)
        if nx != PacketPool.noBuffer {
            nextTable[Int(head)] = PacketPool.noBuffer
            freeTail(nx)
        }
    }

    /// Frees `first` and the buffers chained after it (a frame's tail, already unlinked).
    @inlinable
    public mutating func freeTail(_ first: UInt32) {
        var b = first
        var hops = 0
        while b != PacketPool.noBuffer && hops < PacketPool.maxChainLength {
            let nx = nextTable[Int(b)]
            nextTable[Int(b)] = PacketPool.noBuffer
            put(b)
            b = nx
            hops &+= 1
        }
    }

    /// The buffer after `index` in its frame, or `PacketPool.noBuffer`.
    @inlinable @inline(__always)
    public func next(_ index: UInt32) -> UInt32 {
        // SAFETY: index comes from this pool; the table spans its whole capacity.
        nextTable[Int(index)]
    }

    /// Links `next` after `index` (`PacketPool.noBuffer` ends the frame there).
    @inlinable @inline(__always)
    public func setNext(_ index: UInt32, _ next: UInt32) {
        // SAFETY: index comes from this pool; the table spans its whole capacity.
        nextTable[Int(index)] = next
    }

    /// Records where a segment of a multi-buffer frame starts in its buffer (bytes from the
    /// buffer's start, so a merged RX buffer can start inside the headroom) and its length.
    @inlinable @inline(__always)
    public func setSegment(_ index: UInt32, offset: Int, length: Int) {
        // SAFETY: index comes from this pool; the tables span its whole capacity.
        segmentOffsets[Int(index)] = UInt16(truncatingIfNeeded: offset)
        segmentLengths[Int(index)] = UInt16(truncatingIfNeeded: length)
    }

    /// A multi-buffer frame's segment length (meaningless for a single-buffer frame).
    @inlinable @inline(__always)
    public func segmentLength(_ index: UInt32) -> Int {
        Int(segmentLengths[Int(index)])
    }

    /// Where a multi-buffer frame's segment starts. The head segment always starts at
    /// `data(_:)`; following ones where `setSegment` said.
    @inlinable @inline(__always)
    public func segmentData(_ index: UInt32) -> UnsafeMutableRawPointer {
        // SAFETY: offset < stride (set by Ferry), index from this pool.
        base + (Int(index) &* stride &+ Int(segmentOffsets[Int(index)]))
    }

    /// Where the frame starts in buffer `index` (after the headroom).
    @inlinable @inline(__always)
    public func data(_ index: UInt32) -> UnsafeMutableRawPointer {
        // SAFETY: index comes from this pool (rings return only cookies Ferry stored), so
        // base + index*stride + headroom is inside the pool's carve of shared memory.
        base + (Int(index) &* stride &+ headroom)
    }

    /// The Ferry virtual address of the frame start, as put in descriptors.
    @inlinable @inline(__always)
    public func address(_ index: UInt32) -> UInt64 {
        UInt64(UInt(bitPattern: data(index)))
    }

    @usableFromInline
    mutating func refill() {
        depth = pool.take(into: stack, count: capacity / 2)
    }

    @usableFromInline
    mutating func spill() {
        let half = capacity / 2
        pool.give(stack + (depth - half), count: half)
        depth -= half
    }
}
