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

    private let memory: SharedMemory
    private let freeStack: UnsafeMutablePointer<UInt32>
    private var top: Int
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

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
        return k
    }

    /// Returns `n` buffer indices. An index outside the pool is ignored rather than trusted.
    public func give(_ indices: UnsafePointer<UInt32>, count n: Int) {
        pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }
        for i in 0..<n where Int(indices[i]) < count && top < capacity {
            freeStack[top] = indices[i]
            top += 1
        }
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

    init(pool: PacketPool, capacity: Int) {
        self.pool = pool
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
