import CFerry

/// A stream's counters as its worker keeps them: plain integers in the worker's own memory,
/// touched by nobody else.
struct StreamCounters {
    var rxPackets: UInt64 = 0
    var rxBytes: UInt64 = 0
    var txPackets: UInt64 = 0
    var txBytes: UInt64 = 0
    var txDropped: UInt64 = 0
    var rxErrors: UInt64 = 0
    /// Frames made by tx_first (not received): with them, tx + dropped = rx + generated.
    var generated: UInt64 = 0
}

/// Where a worker publishes a stream's counters for the control thread to read: one cache
/// line, written with relaxed atomic stores every few hundred loop iterations and at exit.
/// Relaxed is enough: each value is monotonic and read on its own.
struct PublishedCounters {
    let slot: UnsafeMutableRawPointer

    static let fields = 7
    static let stride = 64

    static func allocate(count: Int) -> UnsafeMutableRawPointer {
        let p = UnsafeMutableRawPointer.allocate(byteCount: count * stride, alignment: 64)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: count * stride)
        return p
    }

    @inline(__always)
    func publish(_ c: StreamCounters) {
        ferry_store_relaxed_u64(slot, c.rxPackets)
        ferry_store_relaxed_u64(slot + 8, c.rxBytes)
        ferry_store_relaxed_u64(slot + 16, c.txPackets)
        ferry_store_relaxed_u64(slot + 24, c.txBytes)
        ferry_store_relaxed_u64(slot + 32, c.txDropped)
        ferry_store_relaxed_u64(slot + 40, c.rxErrors)
        ferry_store_relaxed_u64(slot + 48, c.generated)
    }

    func read() -> StreamCounters {
        StreamCounters(rxPackets: ferry_load_relaxed_u64(slot),
                       rxBytes: ferry_load_relaxed_u64(slot + 8),
                       txPackets: ferry_load_relaxed_u64(slot + 16),
                       txBytes: ferry_load_relaxed_u64(slot + 24),
                       txDropped: ferry_load_relaxed_u64(slot + 32),
                       rxErrors: ferry_load_relaxed_u64(slot + 40),
                       generated: ferry_load_relaxed_u64(slot + 48))
    }
}
