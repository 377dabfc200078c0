import CFerry
import Histogram
#if canImport(Glibc)
import Glibc
#endif

/// One measurement the generator's datapath runs: a load, a duration, and what came back.
///
/// Created and read on the orchestrating thread; filled by the datapath thread between
/// `post` and `isDone` (the done flag is a release/acquire pair, so every result field written
/// before it is visible after it). The histograms are allocated here, before the datapath
/// touches them, so the datapath allocates nothing.
public final class TrafficJob: @unchecked Sendable {
    public enum Mode: Equatable, Sendable {
        /// Fill every RX buffer the DUT offers: the most it forwards with this generator.
        case saturate
        /// Open loop at a fixed rate (frames per second): frame i is due at start + i/rate.
        case fixedRate(Double)
        /// Start-up: wait for the DUT's rings, send at a low fixed rate, stop at the first
        /// frame back.
        case startupProbe(Double)
    }

    private static var nextID: UInt32 = 1

    public let id: UInt32
    public let mode: Mode
    public let frameLength: Int
    /// Sent and received but not measured, to let the DUT settle.
    public let warmupNs: UInt64
    /// The measured window: frames whose intended send time falls in it are counted.
    public let durationNs: UInt64
    /// After sending stops, keep receiving this long for frames still in flight.
    public let drainNs: UInt64
    /// Start-up probes give up after this long without a frame back.
    public let timeoutNs: UInt64

    // Results (valid once isDone).
    public internal(set) var startNs: UInt64 = 0
    public internal(set) var windowStartNs: UInt64 = 0
    public internal(set) var windowEndNs: UInt64 = 0
    /// Frames written into the DUT's RX ring, in total and within the window.
    public internal(set) var sentTotal: UInt64 = 0
    public internal(set) var sentMeasured: UInt64 = 0
    /// Frames due within the window that found no RX buffer: the DUT did not accept them
    /// (a NIC would count them as missed).
    public internal(set) var rxRingFull: UInt64 = 0
    /// Frames of this job back from the DUT's TX ring, in total and within the window.
    public internal(set) var receivedTotal: UInt64 = 0
    public internal(set) var receivedMeasured: UInt64 = 0
    /// Frames of this job back from the DUT's TX ring *during* the window, whenever they were
    /// sent: what the DUT returned per unit of time, the sustained rate under overload.
    public internal(set) var arrivedInWindow: UInt64 = 0
    /// Frames back with a lower sequence number than one already seen (late or duplicate).
    public internal(set) var reordered: UInt64 = 0
    /// Frames back that were not this job's (other jobs' stragglers, the DUT's own frames).
    public internal(set) var foreign: UInt64 = 0
    /// TX chains too short or outside the memory table.
    public internal(set) var badFrames: UInt64 = 0
    /// Calls signalled because the DUT asked for interrupts.
    public internal(set) var interrupts: UInt64 = 0
    /// When the first frame of this job came back (0: none).
    public internal(set) var firstReceiveNs: UInt64 = 0
    /// When the DUT's rings were first seen ready by this job.
    public internal(set) var readyNs: UInt64 = 0
    /// Latency from the intended send time (coordinated-omission corrected), ns.
    public internal(set) var corrected: Histogram<UInt64>
    /// Latency from the actual send time, ns.
    public internal(set) var uncorrected: Histogram<UInt64>
    public internal(set) var abortReason: String?
    /// The slowest frames of the window and the datapath's own gaps, when a diagnostic asked
    /// for them (set before `post`; the datapath fills them). Deallocated with the job.
    public var tail: IntervalLog?
    public var gaps: IntervalLog?
    /// What the job holds while the datapath has its histograms.
    let placeholder = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 2,
                                        numberOfSignificantValueDigits: .one)

    let doneFlag: UnsafeMutablePointer<UInt8>

    public init(mode: Mode, frameLength: Int, warmupNs: UInt64, durationNs: UInt64, drainNs: UInt64,
                timeoutNs: UInt64 = 30_000_000_000) {
        id = Self.nextID
        Self.nextID &+= 1
        self.mode = mode
        self.frameLength = max(frameLength, GenFrame.minimumLength)
        self.warmupNs = warmupNs
        self.durationNs = durationNs
        self.drainNs = drainNs
        self.timeoutNs = timeoutNs
        corrected = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000,
                                      numberOfSignificantValueDigits: .three)
        // Two separate buffers, so recording never triggers a copy-on-write on the datapath.
        uncorrected = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000,
                                        numberOfSignificantValueDigits: .three)
        doneFlag = .allocate(capacity: 1)
        doneFlag.initialize(to: 0)
    }

    deinit {
        doneFlag.deallocate()
        tail?.deallocate()
        gaps?.deallocate()
    }

    public var isDone: Bool { ferry_load_acquire_u8(doneFlag) != 0 }

    func finish() { ferry_store_release_u8(doneFlag, 1) }

    /// Waits until the job is done or `timeoutMs` passes. True when done.
    ///
    /// Sleeps through the run's expected length in one go, then polls every 5 ms. This thread
    /// is not pinned, so each wake-up preempts the generator or the DUT: polling every
    /// millisecond through a run was a thousand preemptions a second, shared between the
    /// two, which the latency tail measured as if the DUT had caused them.
    public func wait(timeoutMs: Int) -> Bool {
        let start = ferry_monotonic_ns()
        let end = start + UInt64(timeoutMs) * 1_000_000
        Self.sleep(ns: min(warmupNs + durationNs + drainNs, end - start))
        while !isDone {
            if ferry_monotonic_ns() >= end { return false }
            Self.sleep(ns: 5_000_000)
        }
        return true
    }

    static func sleep(ns: UInt64) {
        guard ns > 0 else { return }
        var request = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    /// Frames due within the window and accepted by the DUT that never came back.
    public var lost: UInt64 { sentMeasured > receivedMeasured ? sentMeasured - receivedMeasured : 0 }

    /// The rate the DUT returned frames within the window, frames per second.
    public var receivedRate: Double {
        durationNs == 0 ? 0 : Double(receivedMeasured) / (Double(durationNs) / 1e9)
    }

    /// Frames back per second during the window (by arrival time): the rate the DUT sustained.
    public var arrivalRate: Double {
        durationNs == 0 ? 0 : Double(arrivedInWindow) / (Double(durationNs) / 1e9)
    }

    /// The rate the generator offered within the window (accepted or not).
    public var offeredRate: Double {
        durationNs == 0 ? 0 : Double(sentMeasured + rxRingFull) / (Double(durationNs) / 1e9)
    }
}
