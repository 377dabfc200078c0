import CFerry
import FerryTestSupport
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
    public var error: String?
}

public struct LatencyResult: Codable, Sendable {
    public var dut: DUTKind
    /// The rate this DUT sustained for the generator, frames per second: frames back per
    /// second over a steady window while the generator offered more than that, open loop and
    /// paced as at the load points. The loads are fractions of it.
    public var maxPps: Double?
    /// The first estimate: frames back while every RX buffer the DUT offered was filled at
    /// once (bursts of up to 64). Not a rate the DUT sustains under paced traffic; it only
    /// sets the open-loop rate offered for `maxPps`.
    public var burstPps: Double?
    /// What the generator offered, and what the DUT's RX ring had no room for, during the
    /// steady window of the `maxPps` run.
    public var maxOfferedPps: Double?
    public var maxRxRingFull: UInt64?
    /// Every open-loop attempt at the maximum, [offered pps, frames back per second]: the rate
    /// offered goes up until the DUT is overloaded (see `LatencySettings.overload`).
    public var maxAttempts: [[Double]]?
    /// False when even the last attempt did not overload the DUT: then `maxPps` is a lower
    /// bound (the generator's own limit, or a noisy estimate).
    public var maxOverloaded: Bool?
    public var points: [LatencyPoint]
    public var error: String?
}

public struct LatencySettings: Sendable {
    public var loads: [Double] = [0.1, 0.5, 0.9]
    public var seconds = 5
    /// The burst-fill estimate's window (after 0.5 s of warm-up).
    public var saturationSeconds = 1
    /// The sustained maximum: open loop at `overload` × the burst-fill estimate, `maxWarmupMs`
    /// for the rings and queues to fill, then frames back counted over `maxSeconds`.
    public var maxSeconds = 2
    public var maxWarmupMs = 1000
    public var overload = 1.2
    /// An attempt overloaded the DUT when at least this fraction of the frames offered in the
    /// window found its RX ring full; otherwise the offered rate is raised by `raise` and the
    /// attempt repeated, at most `maxAttempts` times in all. (The burst-fill estimate is one
    /// noisy second: it can be below what the DUT sustains.)
    public var overloadedFraction = 0.05
    public var raise = 1.5
    public var maxAttempts = 4
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
        for (n, kind) in DUTKind.allCases.enumerated() {
            results.append(measure(kind: kind, generator: generator, socket: socket, index: n))
        }
        return results
    }

    func measure(kind: DUTKind, generator: Generator, socket: String, index: Int) -> LatencyResult {
        var result = LatencyResult(dut: kind, maxPps: nil, points: [], error: nil)
        let dir = settings.workDir + "/lat-\(kind.rawValue)"
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

        // A first estimate: fill every RX buffer the DUT offers. The DUT then always finds full
        // bursts, which paced traffic never gives it, so this is an upper bound, not the max.
        let saturation = TrafficJob(mode: .saturate, frameLength: settings.frameSize, warmupNs: 500_000_000,
                                    durationNs: UInt64(settings.saturationSeconds) * 1_000_000_000, drainNs: 50_000_000)
        generator.post(saturation)
        guard saturation.wait(timeoutMs: (settings.saturationSeconds + 30) * 1000), saturation.abortReason == nil,
              saturation.receivedRate > 0 else {
            result.error = "saturation: \(saturation.abortReason ?? "no frames came back")"
            return result
        }
        result.burstPps = saturation.receivedRate

        // The maximum: open loop, paced as the load points are, above the estimate, so the DUT
        // is overloaded; what it returns per second over a steady window is what it sustains.
        var offered = saturation.receivedRate * settings.overload
        var attempts: [[Double]] = []
        var maxPps = 0.0
        for attempt in 1...max(1, settings.maxAttempts) {
            let full = TrafficJob(mode: .fixedRate(offered), frameLength: settings.frameSize,
                                  warmupNs: UInt64(settings.maxWarmupMs) * 1_000_000,
                                  durationNs: UInt64(settings.maxSeconds) * 1_000_000_000, drainNs: 50_000_000)
            generator.post(full)
            guard full.wait(timeoutMs: (settings.maxSeconds + 30) * 1000), full.abortReason == nil, full.arrivalRate > 0 else {
                result.error = "maximum: \(full.abortReason ?? "no frames came back")"
                return result
            }
            attempts.append([full.offeredRate, full.arrivalRate])
            let due = Double(full.sentMeasured + full.rxRingFull)
            let overloaded = due > 0 && Double(full.rxRingFull) >= settings.overloadedFraction * due
            maxPps = full.arrivalRate
            result.maxPps = maxPps
            result.maxOfferedPps = full.offeredRate
            result.maxRxRingFull = full.rxRingFull
            result.maxOverloaded = overloaded
            say("[latency] \(kind.rawValue): \(fmt(full.arrivalRate / 1e6, 3)) Mpps back while offered \(fmt(full.offeredRate / 1e6, 3)) Mpps open loop (attempt \(attempt); \(overloaded ? "overloaded" : "not overloaded"))")
            if overloaded { break }
            offered *= settings.raise
        }
        result.maxAttempts = attempts
        say("[latency] \(kind.rawValue): sustained maximum \(fmt(maxPps / 1e6, 3)) Mpps\(result.maxOverloaded == true ? "" : " (a lower bound: never overloaded)") (burst-fill estimate \(fmt(saturation.receivedRate / 1e6, 3)) Mpps)")

        for load in settings.loads {
            let rate = maxPps * load
            let job = TrafficJob(mode: .fixedRate(rate), frameLength: settings.frameSize, warmupNs: 500_000_000,
                                 durationNs: UInt64(settings.seconds) * 1_000_000_000, drainNs: 100_000_000)
            func sample(_ pid: Int32, _ cpu: Int) -> (UInt64, UInt64)? {
                Preemption.count(pid: pid, cpu: cpu).map { ($0, ferry_monotonic_ns()) }
            }
            let g0 = sample(getpid(), settings.generatorCPU), d0 = sample(process.pid, settings.dutCPU)
            generator.post(job)
            var point = LatencyPoint(dut: kind, load: load, targetPps: rate, offeredPps: 0, receivedPps: 0, sent: 0,
                                     received: 0, lost: 0, rxRingFull: 0, reordered: 0, foreign: 0,
                                     corrected: Percentiles(job.corrected), uncorrected: Percentiles(job.uncorrected),
                                     cdf: [], generatorPreemptionsPerSecond: nil, dutPreemptionsPerSecond: nil, error: nil)
            guard job.wait(timeoutMs: (settings.seconds + 30) * 1000) else {
                point.error = "the generator did not finish the run"
                result.points.append(point)
                break
            }
            point.generatorPreemptionsPerSecond = Preemption.rate(g0, sample(getpid(), settings.generatorCPU))
            point.dutPreemptionsPerSecond = Preemption.rate(d0, sample(process.pid, settings.dutCPU))
            point.offeredPps = job.offeredRate
            point.receivedPps = job.receivedRate
            point.sent = job.sentMeasured
            point.received = job.receivedMeasured
            point.lost = job.lost
            point.rxRingFull = job.rxRingFull
            point.reordered = job.reordered
            point.foreign = job.foreign
            point.corrected = Percentiles(job.corrected)
            point.uncorrected = Percentiles(job.uncorrected)
            point.cdf = Self.cdf(job.corrected)
            point.error = job.abortReason
            say("[latency] \(kind.rawValue) \(Int(load * 100))% (\(fmt(rate / 1e6, 3)) Mpps): p50 \(us(point.corrected.p50)) p99 \(us(point.corrected.p99)) p99.9 \(us(point.corrected.p999)) max \(us(point.corrected.max)) µs, lost \(point.lost), ring full \(point.rxRingFull), reordered \(point.reordered), preempted/s generator \(fmt(point.generatorPreemptionsPerSecond ?? -1, 0)) DUT \(fmt(point.dutPreemptionsPerSecond ?? -1, 0))")
            result.points.append(point)
            if job.abortReason != nil { break }
        }
        return result
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

/// Start-up: process start to the first frame forwarded, measured by the generator.
public struct StartupRun: Codable, Sendable {
    public var dut: DUTKind
    public var rep: Int
    /// Spawn to the first generator frame back from the DUT's TX ring, ms.
    public var firstForwardedMs: Double?
    /// Spawn to the vhost-user connection, and to the rings being ready, ms.
    public var connectMs: Double?
    public var readyMs: Double?
    public var error: String?
}

public struct StartupResult: Codable, Sendable {
    public var dut: DUTKind
    public var runs: [StartupRun]
    public var medianMs: Double?
    public var medianConnectMs: Double?
    public var medianReadyMs: Double?
}

public final class StartupBench {
    let reps: Int
    let ferryBinary: String
    let workDir: String
    let dutCPU: Int
    let mainCPU: Int
    let say: (String) -> Void

    public init(reps: Int, ferryBinary: String, workDir: String, dutCPU: Int, mainCPU: Int, say: @escaping (String) -> Void) {
        self.reps = reps
        self.ferryBinary = ferryBinary
        self.workDir = workDir
        self.dutCPU = dutCPU
        self.mainCPU = mainCPU
        self.say = say
    }

    /// Alternates the DUTs, `reps` times each. The generator sends 100 kpps from the moment the
    /// rings are up; the clock starts just before posix_spawn.
    public func run(generator: Generator, socket: String) -> [StartupResult] {
        var runs: [StartupRun] = []
        for rep in 1...reps {
            for kind in DUTKind.allCases {
                let r = once(kind: kind, rep: rep, generator: generator, socket: socket)
                say("[startup] \(kind.rawValue) \(rep)/\(reps): " + (r.firstForwardedMs.map { "\(fmt($0, 1)) ms (connect \(fmt(r.connectMs ?? 0, 1)), rings \(fmt(r.readyMs ?? 0, 1)))" } ?? "failed: \(r.error ?? "?")"))
                runs.append(r)
            }
        }
        return DUTKind.allCases.map { kind in
            let mine = runs.filter { $0.dut == kind }
            return StartupResult(dut: kind, runs: mine, medianMs: Stats.median(mine.compactMap(\.firstForwardedMs)),
                                 medianConnectMs: Stats.median(mine.compactMap(\.connectMs)),
                                 medianReadyMs: Stats.median(mine.compactMap(\.readyMs)))
        }
    }

    func once(kind: DUTKind, rep: Int, generator: Generator, socket: String) -> StartupRun {
        var run = StartupRun(dut: kind, rep: rep)
        let dir = workDir + "/startup-\(kind.rawValue)-\(rep)"
        BenchFiles.makeDirectory(dir)
        let launch = DUTLaunch(kind: kind, socket: socket, config: BenchConfig(packed: false, frameSize: 64, queues: 1),
                               txFirst: false, statsPeriod: 0, cpu: dutCPU, mainCPU: mainCPU,
                               ferryBinary: ferryBinary, workDir: dir)
        _ = generator.waitNotReady(timeoutMs: 5000)
        generator.resetEvents()
        let job = TrafficJob(mode: .startupProbe(100_000), frameLength: 64, warmupNs: 0, durationNs: 0, drainNs: 0,
                             timeoutNs: 20_000_000_000)
        // The probe is handed over now; the datapath starts it once the rings are up.
        generator.post(job)
        let t0 = ferry_monotonic_ns()
        let process: SpawnedProcess
        do { process = try launch.spawn(log: dir + "/dut.log") } catch {
            run.error = "spawn: \(error)"
            return run
        }
        defer {
            launch.stop(process)
            _ = generator.waitNotReady(timeoutMs: 5000)
        }
        guard job.wait(timeoutMs: 40_000) else {
            run.error = "no frame back within 40 s"
            return run
        }
        if let reason = job.abortReason {
            run.error = reason
            return run
        }
        guard job.firstReceiveNs > t0 else {
            run.error = "no frame back"
            return run
        }
        run.firstForwardedMs = Double(job.firstReceiveNs - t0) / 1e6
        if generator.connectNs > t0 { run.connectMs = Double(generator.connectNs - t0) / 1e6 }
        if generator.readyNs > t0 { run.readyMs = Double(generator.readyNs - t0) / 1e6 }
        return run
    }
}
