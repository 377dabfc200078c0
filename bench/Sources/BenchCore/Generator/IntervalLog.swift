/// Intervals longer than a threshold, from the generator's datapath: `[from, to]` in
/// CLOCK_MONOTONIC ns. Two uses, both for the `--latency-trace` diagnostic:
/// - the slowest frames: when each was due and when it came back;
/// - the generator's own gaps: an iteration that moved nothing followed by the next one more
///   than the threshold later, which is whatever took its core, the hypervisor included (no
///   guest trace sees steal).
///
/// Why: a p99 is one number; lining the slow frames up with the gaps and with a kernel trace of
/// both cores (`KernelTrace`) tells whether they waited out a preemption of the DUT, of the
/// generator, or neither. Allocated before the run, so noting is a compare and two stores and
/// the datapath still allocates nothing; a full log counts what it could not keep.
public struct IntervalLog {
    public let thresholdNs: UInt64
    public let capacity: Int
    let entries: UnsafeMutablePointer<UInt64>
    public private(set) var count = 0
    /// Intervals over the threshold that found the log full.
    public private(set) var overflow: UInt64 = 0

    public init(thresholdNs: UInt64, capacity: Int) {
        self.thresholdNs = thresholdNs
        self.capacity = max(0, capacity)
        entries = .allocate(capacity: max(1, 2 * self.capacity))
    }

    /// Keeps `[from, to]` when it is longer than the threshold.
    @inline(__always)
    public mutating func note(from: UInt64, to: UInt64) {
        guard to > from, to &- from > thresholdNs else { return }
        guard count < capacity else {
            overflow &+= 1
            return
        }
        entries[2 &* count] = from
        entries[2 &* count &+ 1] = to
        count &+= 1
    }

    /// Entry `i` (< count).
    public func entry(_ i: Int) -> (from: UInt64, to: UInt64) {
        precondition(i >= 0 && i < count, "interval log entry \(i) of \(count)")
        return (entries[2 * i], entries[2 * i + 1])
    }

    /// One line per entry, "from to\n": the diagnostic's file format.
    public func text() -> String {
        var out = ""
        out.reserveCapacity(count * 34)
        for i in 0..<count {
            let e = entry(i)
            out += "\(e.from) \(e.to)\n"
        }
        return out
    }

    public func deallocate() { entries.deallocate() }
}
