import CFerry
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The generator's datapath: one loop that sends into vring 0 (the DUT's RX) and receives from
/// vring 1 (the DUT's TX). Runs on the generator's pinned thread; allocation-free per frame.
struct DatapathEngine {
    let rings: UnsafeMutablePointer<GenRing>
    let flags: UnsafeMutablePointer<UInt32>
    var memory: MemoryMap
    var callFds: (Int32, Int32) = (-1, -1)
    var headerSize = 12
    /// Most frames sent or received per loop iteration.
    static let batch = 64
    /// Room to gather a chained TX frame's first bytes.
    let scratch: UnsafeMutableRawPointer

    init(rings: UnsafeMutablePointer<GenRing>, flags: UnsafeMutablePointer<UInt32>, memory: MemoryMap) {
        self.rings = rings
        self.flags = flags
        self.memory = memory
        scratch = .allocate(byteCount: 256, alignment: 64)
    }

    @inline(__always)
    var ready: Bool { ferry_load_acquire_u32(flags) != 0 }

    /// No job: return whatever the DUT transmits, so it never stalls on a full TX ring.
    mutating func idle() {
        let tx = rings + 1
        let n = min(tx.pointee.available(), Self.batch)
        guard n > 0 else { return }
        for _ in 0..<n {
            guard let head = tx.pointee.popHead() else { return }
            tx.pointee.pushUsed(id: head, length: 0)
        }
        tx.pointee.publishUsed()
        if callFds.1 >= 0 && tx.pointee.driverWantsInterrupt() { signal(callFds.1) }
    }

    /// Runs `job` to its end (or until the rings stop). Fills the job's results and returns
    /// true when the job is over; false when a start-up probe saw the rings stop (a DUT may
    /// renegotiate while it starts): it is run again once they are back.
    mutating func run(_ job: TrafficJob) -> Bool {
        let rx = rings  // the DUT's RX ring: the generator fills it
        let tx = rings + 1  // the DUT's TX ring: the generator drains it
        let frameLength = job.frameLength
        let header = headerSize
        let wanted = header + frameLength

        var interval = 0.0
        var saturate = false
        var startup = false
        switch job.mode {
        case .saturate: saturate = true
        case let .fixedRate(pps): interval = 1e9 / max(pps, 1)
        case let .startupProbe(pps):
            interval = 1e9 / max(pps, 1)
            startup = true
        }

        let start = ferry_monotonic_ns()
        job.startNs = start
        job.readyNs = start
        let windowStart = start + job.warmupNs
        let windowEnd = windowStart + job.durationNs
        let sendEnd = startup ? start + job.timeoutNs : windowEnd
        let end = startup ? sendEnd : windowEnd + job.drainNs
        job.windowStartNs = startup ? start : windowStart
        job.windowEndNs = startup ? sendEnd : windowEnd
        let measureFrom = startup ? start : windowStart

        var seq: UInt64 = 0
        var highestSeq: UInt64 = 0
        var anyReceived = false
        var sentTotal: UInt64 = 0, sentMeasured: UInt64 = 0, ringFull: UInt64 = 0
        var receivedTotal: UInt64 = 0, receivedMeasured: UInt64 = 0, arrived: UInt64 = 0
        var reordered: UInt64 = 0, foreign: UInt64 = 0, bad: UInt64 = 0, interrupts: UInt64 = 0
        let jobID = job.id
        var firstReceive: UInt64 = 0
        // The histograms move into locals for the run (class properties would cost an
        // exclusivity check per record); the job holds placeholders meanwhile.
        var corrected = job.corrected
        var uncorrected = job.uncorrected
        job.corrected = job.placeholder
        job.uncorrected = job.placeholder
        var tail = job.tail
        var gaps = job.gaps
        let logTail = tail != nil, logGaps = gaps != nil
        // A gap counts only after an iteration that moved nothing: a busy one (a backlog coming
        // back, the skip loop of an overload) is the generator working, not being stalled.
        var previous = start
        var previousIdle = false

        while true {
            guard ready else {
                if startup {
                    job.corrected = corrected
                    job.uncorrected = uncorrected
                    job.tail = tail
                    job.gaps = gaps
                    return false
                }
                job.abortReason = "the DUT's rings stopped during the run (disconnected?)"
                break
            }
            if rx.pointee.broken || tx.pointee.broken {
                job.abortReason = "the DUT published an invalid avail index or head"
                break
            }
            let now = ferry_monotonic_ns()
            if logGaps {
                if previousIdle { gaps!.note(from: previous, to: now) }
                previous = now
                previousIdle = true
            }
            if now >= end { break }

            // ---- send ------------------------------------------------------------------
            // The avail index is read once per iteration: it sits on a cache line the DUT keeps
            // writing, so reading it per frame would make a full ring cost more than the rate.
            if now < sendEnd {
                var sentNow = 0
                var room = rx.pointee.available()
                while sentNow < Self.batch && room > 0 {
                    let intended: UInt64
                    if saturate {
                        intended = now
                    } else {
                        intended = start &+ UInt64(Double(seq) * interval)
                        if intended > now { break }
                    }
                    guard let head = rx.pointee.popHead() else { break }
                    room &-= 1
                    let d = rx.pointee.descriptor(head)
                    guard d.flags & VringFlags.descWrite != 0, Int(d.length) >= wanted,
                          let p = memory.translate(guest: d.address, length: wanted) else {
                        bad &+= 1
                        rx.pointee.pushUsed(id: head, length: 0)
                        continue
                    }
                    // virtio-net header: no offloads, num_buffers = 1 (§5.1.6).
                    p.storeBytes(of: UInt64(0), as: UInt64.self)
                    p.storeBytes(of: UInt32(0x0001_0000).littleEndian, toByteOffset: 8, as: UInt32.self)
                    GenFrame.write(at: p + header, job: jobID, seq: seq, intended: intended, sent: now)
                    rx.pointee.pushUsed(id: head, length: UInt32(wanted))
                    if intended >= measureFrom && intended < windowEnd { sentMeasured &+= 1 }
                    sentTotal &+= 1
                    seq &+= 1
                    sentNow &+= 1
                }
                if !saturate && room == 0 && rx.pointee.available() == 0 {
                    // Open loop with the DUT's RX ring full: every frame due by now had no
                    // buffer. They are dropped (a NIC counts them as missed), not queued.
                    while true {
                        let intended = start &+ UInt64(Double(seq) * interval)
                        if intended > now { break }
                        if intended >= measureFrom && intended < windowEnd { ringFull &+= 1 }
                        seq &+= 1
                    }
                }
                if sentNow > 0 {
                    previousIdle = false
                    rx.pointee.publishUsed()
                    if callFds.0 >= 0 && rx.pointee.driverWantsInterrupt() {
                        signal(callFds.0)
                        interrupts &+= 1
                    }
                }
            }

            // ---- receive ---------------------------------------------------------------
            let n = min(tx.pointee.available(), Self.batch)
            if n > 0 {
                previousIdle = false
                let rxNow = ferry_monotonic_ns()
                let arrivedNow: UInt64 = rxNow >= windowStart && rxNow < windowEnd ? 1 : 0
                var i = 0
                while i < n {
                    i &+= 1
                    guard let head = tx.pointee.popHead() else { break }
                    if let frame = frameStart(ring: tx, head: head, header: header) {
                        if let f = GenFrame.read(at: frame), f.job == jobID {
                            receivedTotal &+= 1
                            arrived &+= arrivedNow
                            if anyReceived && f.seq <= highestSeq {
                                reordered &+= 1
                            } else {
                                highestSeq = f.seq
                                anyReceived = true
                            }
                            if f.intended >= measureFrom && f.intended < windowEnd {
                                receivedMeasured &+= 1
                                corrected.record(rxNow > f.intended ? rxNow &- f.intended : 0)
                                if logTail { tail!.note(from: f.intended, to: rxNow) }
                                uncorrected.record(rxNow > f.sent ? rxNow &- f.sent : 0)
                            }
                            if firstReceive == 0 { firstReceive = rxNow }
                        } else {
                            foreign &+= 1
                        }
                    } else {
                        bad &+= 1
                    }
                    tx.pointee.pushUsed(id: head, length: 0)
                }
                tx.pointee.publishUsed()
                if callFds.1 >= 0 && tx.pointee.driverWantsInterrupt() {
                    signal(callFds.1)
                    interrupts &+= 1
                }
                if startup && firstReceive != 0 { break }
            }
        }
        job.corrected = corrected
        job.uncorrected = uncorrected
        job.tail = tail
        job.gaps = gaps
        job.firstReceiveNs = firstReceive
        job.sentTotal = sentTotal
        job.sentMeasured = sentMeasured
        job.rxRingFull = ringFull
        job.receivedTotal = receivedTotal
        job.receivedMeasured = receivedMeasured
        job.arrivedInWindow = arrived
        job.reordered = reordered
        job.foreign = foreign
        job.badFrames = bad
        job.interrupts = interrupts
        return true
    }

    /// Where the Ethernet frame of TX chain `head` starts, with at least the generator's
    /// fields readable: in place for a one-descriptor chain, else gathered into `scratch`.
    @inline(__always)
    func frameStart(ring: UnsafeMutablePointer<GenRing>, head: UInt16, header: Int) -> UnsafeRawPointer? {
        let need = header + GenFrame.fieldsLength
        let d = ring.pointee.descriptor(head)
        if d.flags & VringFlags.descNext == 0 {
            guard Int(d.length) >= need, let p = memory.translate(guest: d.address, length: need) else { return nil }
            return UnsafeRawPointer(p + header)
        }
        // A chain (a separate header descriptor, say): copy its first bytes.
        var index = head
        var have = 0
        var steps = 0
        while have < need && steps < Int(ring.pointee.size) {
            let s = ring.pointee.descriptor(index)
            let take = min(Int(s.length), need - have)
            if take > 0 {
                guard let p = memory.translate(guest: s.address, length: take) else { return nil }
                (scratch + have).copyMemory(from: p, byteCount: take)
                have += take
            }
            guard s.flags & VringFlags.descNext != 0, s.next < ring.pointee.size else { break }
            index = s.next
            steps += 1
        }
        return have >= need ? UnsafeRawPointer(scratch + header) : nil
    }

    @inline(__always)
    func signal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }
}
