import CFerry
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

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
