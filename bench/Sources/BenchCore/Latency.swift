import CFerry
import FerryTestSupport
import Foundation
import Histogram
#if canImport(Glibc)
import Glibc
#endif

/// Latency percentiles, ns.
public struct Percentiles: Codable, Sendable {
    public var p50: UInt64
    public var p90: UInt64
    public var p99: UInt64
    public var p999: UInt64
    public var max: UInt64
    public var mean: Double

    public init(_ h: Histogram<UInt64>) {
        p50 = h.valueAtPercentile(50)
        p90 = h.valueAtPercentile(90)
        p99 = h.valueAtPercentile(99)
        p999 = h.valueAtPercentile(99.9)
        max = h.max
        mean = h.totalCount > 0 ? h.mean : 0
    }
}

/// One load point of one DUT.
public struct LatencyPoint: Codable, Sendable {
    public var dut: DUTKind
    /// Fraction of the DUT's measured maximum (0.1, 0.5, 0.9).
    public var load: Double
    public var targetPps: Double
    public var offeredPps: Double
    public var receivedPps: Double
    public var sent: UInt64
    public var received: UInt64
    /// Accepted by the DUT and never returned.
    public var lost: UInt64
    /// Due while the DUT's RX ring had no buffer: never accepted.
    public var rxRingFull: UInt64
    public var reordered: UInt64
    public var foreign: UInt64
    /// Coordinated-omission corrected: from each frame's intended send time.
    public var corrected: Percentiles
    /// From the actual send time.
    public var uncorrected: Percentiles
    /// The corrected distribution: [latency ns, percentile] pairs for the CDF plot.
    public var cdf: [[Double]]
    /// Preemptions per second of the generator's datapath thread and of the DUT's forwarding
    /// thread during the run: how often other work took their core.
    public var generatorPreemptionsPerSecond: Double?
    public var dutPreemptionsPerSecond: Double?
    /// Steal time of the generator's and the DUT's cores during the run, ms per second: the
    /// hypervisor running another guest on them.
    public var generatorStealMsPerSecond: Double?
    public var dutStealMsPerSecond: Double?
    /// At least `LatencySettings.keptUpFraction` of the frames due were not accepted or not
    /// returned, the search's own test: the DUT did not keep up at this moment (its maximum was
    /// found in a faster spell of the machine), so the tail is queueing, not forwarding.
    public var overloaded: Bool?
    /// 1 for the first run at this load; higher for a retry after an overloaded one, against
    /// a maximum searched again. The summary takes each load's last attempt.
    public var attempt: Int?
    public var error: String?
}

public struct LatencyResult: Codable, Sendable {
    public var dut: DUTKind
    /// Which repetition (1-based): each is a fresh DUT process with its own maximum.
    public var rep: Int?
    /// The maximum the load points were last computed from (see `MaximumSearch`).
    public var maxPps: Double?
    /// Every search of the maximum in this run: the first, and one more before each retry of
    /// an overloaded point.
    public var searches: [MaximumSearch] = []
    /// Every load point run, retries included, in order (see `LatencyPoint.attempt`).
    public var points: [LatencyPoint]
    public var error: String?
}

/// One DUT at one load over every repetition: the number the target is judged on.
public struct LatencySummary: Codable, Sendable {
    public var dut: DUTKind
    public var load: Double
    /// Each repetition's corrected p99 and p50, ns, in run order.
    public var p99s: [UInt64]
    public var p50s: [UInt64]
    public var medianP99: Double?
    public var medianP50: Double?
    /// Repetitions whose point was overloaded (see `LatencyPoint.overloaded`).
    public var overloadedReps: Int

    public static func summarize(_ results: [LatencyResult], loads: [Double]) -> [LatencySummary] {
        DUTKind.allCases.flatMap { kind in
            loads.compactMap { load -> LatencySummary? in
                let points = results.filter { $0.dut == kind }
                    .compactMap { r in r.points.last { $0.load == load } }
                    .filter { $0.error == nil && $0.received > 0 }
                guard !points.isEmpty else { return nil }
                let p99s = points.map(\.corrected.p99), p50s = points.map(\.corrected.p50)
                return LatencySummary(dut: kind, load: load, p99s: p99s, p50s: p50s,
                                      medianP99: Stats.median(p99s.map { Double($0) }),
                                      medianP50: Stats.median(p50s.map { Double($0) }),
                                      overloadedReps: points.filter { $0.overloaded == true }.count)
            }
        }
    }
}

public struct LatencySettings: Sendable {
    public var loads: [Double] = [0.1, 0.5, 0.9]
    public var seconds = 5
    /// Repetitions, the DUTs alternating (the first DUT alternating too). One run's p99 swings
    /// several-fold with the machine's spells of steal and speed, so the target is judged on
    /// the median over repetitions.
    public var reps = 5
    /// When set, both DUTs' loads are fractions of this rate, with no search and no retries:
    /// the same absolute rates for both, to tell a DUT's tail from the traffic its own maximum
    /// puts on it (a diagnostic; the target is judged on each DUT's own maximum).
    public var fixedMaxPps: Double?
    /// When set, each load point also writes to this directory the frames slower than
    /// `tailThresholdNs`, the generator's gaps longer than `gapThresholdNs` (`IntervalLog`) and
    /// a kernel trace of both cores (`KernelTrace`), for `bench/scripts/tail-attribution.py`
    /// (a diagnostic).
    public var traceDirectory: String?
    public var tailThresholdNs: UInt64 = 20_000
    public var gapThresholdNs: UInt64 = 10_000
    /// The burst-fill estimate's window (after 0.5 s of warm-up).
    public var saturationSeconds = 1
    /// The overload runs that bound the search: open loop at `overload` × the burst-fill
    /// estimate, `maxWarmupMs` for the rings and queues to fill, frames back counted over
    /// `maxSeconds`. A run overloaded the DUT when at least `overloadedFraction` of the frames
    /// due were not accepted; otherwise the rate is raised by `raise`, at most `maxAttempts`
    /// runs in all.
    public var maxSeconds = 2
    public var maxWarmupMs = 1000
    public var overload = 1.2
    public var overloadedFraction = 0.05
    public var raise = 1.5
    public var maxAttempts = 4
    /// The bisection: `searchSteps` paced trials of `searchTrialMs` after `searchWarmupMs`. The
    /// DUT kept up when less than `keptUpFraction` of the frames due were missed: not zero,
    /// because the host takes a core away for a few hundred µs now and then and a 256-slot
    /// RX ring fills meanwhile (0.2–0.9 % of frames at 10 % load in every run measured).
    public var searchSteps = 7
    public var searchTrialMs = 1000
    public var searchWarmupMs = 300
    public var keptUpFraction = 0.02
    /// Runs of one load point after the first when it was overloaded, each after a new search.
    public var pointRetries = 2
    public var frameSize = 64
    public var ferryBinary = ""
    public var workDir = "/tmp/ferry-bench"
    public var generatorCPU = 0
    public var dutCPU = 1
    public init() {}
}

/// Latency: the generator (a vhost-user device on the generator core) against each DUT.
public final class LatencyBench {
    public let settings: LatencySettings
    let say: (String) -> Void

    public init(settings: LatencySettings, say: @escaping (String) -> Void) {
        self.settings = settings
        self.say = say
    }

    public func run(generator: Generator, socket: String) -> [LatencyResult] {
        var results: [LatencyResult] = []
        for rep in 1...max(1, settings.reps) {
            let order = rep % 2 == 1 ? DUTKind.allCases : DUTKind.allCases.reversed()
            for kind in order {
                results.append(measure(kind: kind, generator: generator, socket: socket, rep: rep))
            }
        }
        return results
    }

    func measure(kind: DUTKind, generator: Generator, socket: String, rep: Int) -> LatencyResult {
        var result = LatencyResult(dut: kind, rep: rep, maxPps: nil, points: [], error: nil)
        let say = { (line: String) in self.say(line.replacingOccurrences(of: "[latency] ", with: "[latency \(rep)/\(self.settings.reps)] ")) }
        let dir = settings.workDir + "/lat-\(kind.rawValue)-\(rep)"
        BenchFiles.makeDirectory(dir)
        let config = BenchConfig(packed: false, frameSize: settings.frameSize, queues: 1)
        let launch = DUTLaunch(kind: kind, socket: socket, config: config, txFirst: false, statsPeriod: 0,
                               cpu: settings.dutCPU, mainCPU: settings.generatorCPU,
                               ferryBinary: settings.ferryBinary, workDir: dir)
        let logPath = dir + "/dut.log"
        let process: SpawnedProcess
        do { process = try launch.spawn(log: logPath) } catch {
            result.error = "spawn: \(error)"
            return result
        }
        defer {
            launch.stop(process)
            _ = generator.waitNotReady(timeoutMs: 5000)
        }
        guard generator.waitReady(timeoutMs: 30_000) else {
            result.error = "the DUT did not bring its rings up: " + ThroughputBench.tail(BenchFiles.read(logPath) ?? "")
                + " " + generator.errors.joined(separator: "; ")
            return result
        }
        usleep(300_000)
        launch.pinControlThread(process)

        if let fixed = settings.fixedMaxPps {
            result.maxPps = fixed
            for load in settings.loads {
                let point = runPoint(kind: kind, rep: rep, load: load, rate: fixed * load, attempt: 1, dut: process.pid,
                                     generator: generator, say: say)
                result.points.append(point)
                if point.error != nil { break }
            }
            return result
        }

        var error: String?
        guard let first = searchMaximum(kind: kind, generator: generator, say: say, error: &error) else {
            result.error = error
            return result
        }
        result.searches.append(first)
        guard first.maxPps > 0 else {
            result.error = "the DUT kept up with no paced rate tried"
            return result
        }
        var maxPps = first.maxPps
        result.maxPps = maxPps

        for load in settings.loads {
            for attempt in 1...(1 + settings.pointRetries) {
                let point = runPoint(kind: kind, rep: rep, load: load, rate: maxPps * load, attempt: attempt, dut: process.pid,
                                     generator: generator, say: say)
                result.points.append(point)
                if point.error != nil { return result }
                guard point.overloaded == true, attempt <= settings.pointRetries else { break }
                // The DUT fell behind: the machine is slower now than when the maximum was found.
                say("[latency] \(kind.rawValue) \(Int(load * 100))% overloaded: searching the maximum again")
                guard let again = searchMaximum(kind: kind, generator: generator, say: say, error: &error) else {
                    result.error = error
                    return result
                }
                result.searches.append(again)
                if again.maxPps > 0 { maxPps = again.maxPps }
                result.maxPps = maxPps
            }
        }
        return result
    }

    /// One load point: `rate` paced for `seconds`, with the preemption and steal counts of both cores.
    func runPoint(kind: DUTKind, rep: Int, load: Double, rate: Double, attempt: Int, dut: Int32,
                  generator: Generator, say: (String) -> Void) -> LatencyPoint {
        let job = TrafficJob(mode: .fixedRate(rate), frameLength: settings.frameSize, warmupNs: 500_000_000,
                             durationNs: UInt64(settings.seconds) * 1_000_000_000, drainNs: 100_000_000)
        let traceName = settings.traceDirectory.map { "\($0)/\(kind.rawValue)-rep\(rep)-load\(Int(load * 100))-attempt\(attempt)" }
        var traceBufferKb: String?
        if traceName != nil {
            // Room for every frame of a point that keeps up (a few % are over the threshold), up
            // to 4 M; an overloaded point overflows it, and the script leaves such points out.
            job.tail = IntervalLog(thresholdNs: settings.tailThresholdNs,
                                   capacity: min(Int(rate) * (settings.seconds + 1), 4 << 20))
            job.gaps = IntervalLog(thresholdNs: settings.gapThresholdNs, capacity: 1 << 20)
            do { traceBufferKb = try KernelTrace.start(cpus: [settings.generatorCPU, settings.dutCPU]) } catch {
                say("[latency] no kernel trace: \(error)")
            }
        }
        func sample(_ pid: Int32, _ cpu: Int) -> (UInt64, UInt64)? {
            Preemption.count(pid: pid, cpu: cpu).map { ($0, ferry_monotonic_ns()) }
        }
        let g0 = sample(getpid(), settings.generatorCPU), d0 = sample(dut, settings.dutCPU)
        let steal0 = (Steal.ms(cpu: settings.generatorCPU), Steal.ms(cpu: settings.dutCPU), ferry_monotonic_ns())
        generator.post(job)
        var point = LatencyPoint(dut: kind, load: load, targetPps: rate, offeredPps: 0, receivedPps: 0, sent: 0,
                                 received: 0, lost: 0, rxRingFull: 0, reordered: 0, foreign: 0,
                                 corrected: Percentiles(job.corrected), uncorrected: Percentiles(job.uncorrected),
                                 cdf: [], attempt: attempt)
        guard job.wait(timeoutMs: (settings.seconds + 30) * 1000) else {
            point.error = "the generator did not finish the run"
            return point
        }
        point.generatorPreemptionsPerSecond = Preemption.rate(g0, sample(getpid(), settings.generatorCPU))
        point.dutPreemptionsPerSecond = Preemption.rate(d0, sample(dut, settings.dutCPU))
        let seconds = Double(ferry_monotonic_ns() - steal0.2) / 1e9
        func stealRate(_ before: UInt64?, _ cpu: Int) -> Double? {
            guard let before, let after = Steal.ms(cpu: cpu), after >= before, seconds > 0 else { return nil }
            return Double(after - before) / seconds
        }
        point.generatorStealMsPerSecond = stealRate(steal0.0, settings.generatorCPU)
        point.dutStealMsPerSecond = stealRate(steal0.1, settings.dutCPU)
        point.offeredPps = job.offeredRate
        point.receivedPps = job.receivedRate
        point.sent = job.sentMeasured
        point.received = job.receivedMeasured
        point.lost = job.lost
        point.rxRingFull = job.rxRingFull
        point.overloaded = Self.notAccepted(job) >= settings.keptUpFraction
        point.reordered = job.reordered
        point.foreign = job.foreign
        point.corrected = Percentiles(job.corrected)
        point.uncorrected = Percentiles(job.uncorrected)
        point.cdf = Self.cdf(job.corrected)
        point.error = job.abortReason
        if let traceName { writeTrace(traceName, job: job, point: point, dut: dut, bufferKb: traceBufferKb, say: say) }
        say("[latency] \(kind.rawValue) \(Int(load * 100))% (\(fmt(rate / 1e6, 3)) Mpps\(attempt > 1 ? ", attempt \(attempt)" : "")): p50 \(us(point.corrected.p50)) p99 \(us(point.corrected.p99)) p99.9 \(us(point.corrected.p999)) max \(us(point.corrected.max)) µs, lost \(point.lost), ring full \(point.rxRingFull), reordered \(point.reordered), preempted/s generator \(fmt(point.generatorPreemptionsPerSecond ?? -1, 0)) DUT \(fmt(point.dutPreemptionsPerSecond ?? -1, 0)), steal ms/s generator \(fmt(point.generatorStealMsPerSecond ?? -1, 0)) DUT \(fmt(point.dutStealMsPerSecond ?? -1, 0))\(point.overloaded == true ? " (overloaded)" : "")")
        return point
    }

    /// The diagnostic's files for one point: `.trace` (tracefs text), `.tail` (one slow frame per
    /// line: due and received, ns), `.gaps` (the generator loop's gaps: from and to, ns) and
    /// `.json` (the point, the window and which threads are whose).
    func writeTrace(_ base: String, job: TrafficJob, point: LatencyPoint, dut: Int32, bufferKb: String?,
                    say: (String) -> Void) {
        do { try KernelTrace.stop(into: base + ".trace", restoringBufferKb: bufferKb) } catch { say("[latency] kernel trace: \(error)") }
        guard let tail = job.tail, let gaps = job.gaps else { return }
        let meta = TraceMeta(point: point, windowStartNs: job.windowStartNs, windowEndNs: job.windowEndNs,
                             thresholdNs: tail.thresholdNs, overflow: tail.overflow, gapThresholdNs: gaps.thresholdNs,
                             gapOverflow: gaps.overflow, received: job.receivedMeasured,
                             generatorPid: getpid(), dutPid: dut, generatorCPU: settings.generatorCPU,
                             dutCPU: settings.dutCPU)
        do {
            try tail.text().write(toFile: base + ".tail", atomically: false, encoding: .utf8)
            try gaps.text().write(toFile: base + ".gaps", atomically: false, encoding: .utf8)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(meta).write(to: URL(fileURLWithPath: base + ".json"))
        } catch {
            say("[latency] writing \(base): \(error)")
        }
    }

    struct TraceMeta: Codable {
        var point: LatencyPoint
        var windowStartNs: UInt64
        var windowEndNs: UInt64
        var thresholdNs: UInt64
        var overflow: UInt64
        var gapThresholdNs: UInt64
        var gapOverflow: UInt64
        var received: UInt64
        var generatorPid: Int32
        var dutPid: Int32
        var generatorCPU: Int
        var dutCPU: Int
    }

    /// About 100 points of the cumulative distribution, denser in the tail.
    static func cdf(_ h: Histogram<UInt64>) -> [[Double]] {
        guard h.totalCount > 0 else { return [] }
        var out: [[Double]] = []
        var percentiles: [Double] = []
        var p = 0.0
        while p < 90 { percentiles.append(p); p += 2 }
        for q in [90.0, 92, 94, 95, 96, 97, 98, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100] { percentiles.append(q) }
        for q in percentiles {
            out.append([Double(h.valueAtPercentile(q)), q])
        }
        return out
    }
}

func us(_ ns: UInt64) -> String { fmt(Double(ns) / 1000, 1) }
