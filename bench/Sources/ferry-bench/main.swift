import BenchCore
import FerryTestSupport
import Foundation

/// ferry-bench: Ferry against dpdk-testpmd's virtio-user, on the same backend and cores.
/// `bench/run` builds it and calls it; see bench/README.md for the method.

let usage = """
usage: ferry-bench --ferry PATH --out FILE [options]

  --pairs N             A/B pairs per configuration (5)
  --seconds S           measured seconds per throughput run (10)
  --warmup W            stats periods discarded before the measured ones (3)
  --configs LIST        split-64,split-1518,packed-64,packed-1518,split-64-2q (all of these)
  --latency-seconds L   seconds per latency load point (5)
  --latency-reps N      latency repetitions per DUT, alternating (5)
  --latency-fixed-max M take M Mpps as both DUTs' maximum instead of searching each one's:
                        the loads are then the same absolute rates for both (a diagnostic)
  --latency-trace DIR   write each load point's slow frames and a kernel trace of both cores
                        to DIR, for bench/scripts/tail-attribution.py (a diagnostic; root)
  --startup-reps R      start-up runs per DUT (5)
  --only LIST           throughput,combos,latency,startup (all); profile runs only when named
  --combo-pairs N       A/B pairs per feature combination (3)
  --combo-seconds S     measured seconds per combination run (5)
  --combo-warmup W      warm-up periods per combination run (2)
  --ferry-stripped PATH the ferry copy without debug info that valgrind runs (profile)
  --profile-seconds N   seconds of forwarding under callgrind (10)
  --profile-out FILE    where the profile runs are listed (JSON)
  --profile-packed      profile the packed ring instead of the split ring
  --work DIR            scratch directory (/tmp/ferry-bench-PID)
  --backend-cpu N       core of the backend and the generator (0)
  --dut-cpu N           core of the DUT's forwarding thread (1)

"""

func fail(_ message: String) -> Never {
    FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
    exit(2)
}

func say(_ line: String) {
    FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
}

var args = Array(CommandLine.arguments.dropFirst())
var ferry = ""
var out = ""
var pairs = 5
var seconds = 10
var warmup = 3
var configTokens = ["split-64", "split-1518", "packed-64", "packed-1518", "split-64-2q"]
var latencySeconds = 5
var latencyReps = 5
var latencyFixedMax: Double?
var latencyTrace: String?
var startupReps = 5
var only: Set<String> = ["throughput", "combos", "latency", "startup"]
var comboPairs = 3
var comboSeconds = 5
var comboWarmup = 2
var work = "/tmp/ferry-bench-\(getpid())"
var backendCPU = 0
var dutCPU = 1
var ferryStripped = ""
var profileSeconds = 10
var profileOut = ""
var profilePacked = false

while !args.isEmpty {
    let flag = args.removeFirst()
    func value() -> String {
        guard !args.isEmpty else { fail("\(flag) needs a value\n" + usage) }
        return args.removeFirst()
    }
    func number() -> Int {
        let v = value()
        guard let n = Int(v), n >= 0 else { fail("\(flag): not a number: \(v)") }
        return n
    }
    switch flag {
    case "--ferry": ferry = value()
    case "--out": out = value()
    case "--pairs": pairs = max(1, number())
    case "--seconds": seconds = max(1, number())
    case "--warmup": warmup = number()
    case "--configs": configTokens = value().split(separator: ",").map(String.init)
    case "--latency-seconds": latencySeconds = max(1, number())
    case "--latency-reps": latencyReps = max(1, number())
    case "--latency-fixed-max":
        let v = value()
        guard let m = Double(v), m > 0, m < 100 else { fail("--latency-fixed-max: not a rate in Mpps: \(v)") }
        latencyFixedMax = m * 1e6
    case "--latency-trace": latencyTrace = value()
    case "--startup-reps": startupReps = max(1, number())
    case "--only": only = Set(value().split(separator: ",").map(String.init))
    case "--combo-pairs": comboPairs = max(1, number())
    case "--combo-seconds": comboSeconds = max(1, number())
    case "--combo-warmup": comboWarmup = number()
    case "--work": work = value()
    case "--backend-cpu": backendCPU = number()
    case "--dut-cpu": dutCPU = number()
    case "--ferry-stripped": ferryStripped = value()
    case "--profile-seconds": profileSeconds = max(2, number())
    case "--profile-out": profileOut = value()
    case "--profile-packed": profilePacked = true
    case "-h", "--help": print(usage, terminator: ""); exit(0)
    default: fail("unknown option \(flag)\n" + usage)
    }
}
let measures = !only.subtracting(["profile"]).isEmpty
guard !ferry.isEmpty || !measures, !out.isEmpty || !measures else { fail(usage) }
let configs = configTokens.map { t -> BenchConfig in
    guard let c = BenchConfig(token: t) else { fail("bad configuration \(t) (e.g. split-64, packed-1518, split-64-2q)") }
    return c
}
if let reason = TestpmdBackend.skipReason() { fail("cannot run: \(reason)") }
BenchFiles.makeDirectory(work)
signal(SIGPIPE, SIG_IGN)

let testpmdVersion: String = {
    // Debian's package version (dpdk-testpmd has no --version).
    let log = work + "/testpmd-version.log"
    guard let dpkg = ProcessSpawn.which("dpkg-query"),
          let p = try? SpawnedProcess(executable: dpkg, arguments: ["-W", "-f=${Version}", "dpdk"], logPath: log)
    else { return "dpdk-testpmd" }
    _ = p.waitForExit(timeoutMs: 5000)
    let version = (BenchFiles.read(log) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    return version.isEmpty || version.contains(" ") ? "dpdk-testpmd" : "dpdk-testpmd \(version) (Debian)"
}()

var report = BenchReport(
    date: BenchReport.now(),
    settings: .init(pairs: pairs, seconds: seconds, warmup: warmup, configs: configs.map(\.name),
                    latencySeconds: latencySeconds, latencyLoads: [0.1, 0.5, 0.9], startupReps: startupReps,
                    backendCPU: backendCPU, dutCPU: dutCPU, comboPairs: comboPairs, comboSeconds: comboSeconds,
                    comboWarmup: comboWarmup, latencyReps: latencyReps, latencyFixedMaxPps: latencyFixedMax),
    host: .init(cpus: sysconf(Int32(_SC_NPROCESSORS_ONLN)), loadAverageStart: BenchFiles.loadAverage(), loadAverageEnd: 0,
                kernel: (BenchFiles.read("/proc/sys/kernel/osrelease") ?? "").trimmingCharacters(in: .whitespacesAndNewlines),
                testpmd: testpmdVersion))

func save() {
    report.host.loadAverageEnd = BenchFiles.loadAverage()
    do {
        let text = try report.json()
        guard BenchFiles.write(out, text + "\n") else { fail("cannot write \(out)") }
    } catch {
        fail("cannot encode the report: \(error)")
    }
}

if only.contains("throughput") {
    var s = ThroughputSettings()
    s.pairs = pairs
    s.seconds = seconds
    s.warmup = warmup
    s.configs = configs
    s.ferryBinary = ferry
    s.workDir = work
    s.backendCPU = backendCPU
    s.dutCPU = dutCPU
    report.throughput = ThroughputBench(settings: s, say: say).run()
    save()
}

if only.contains("combos") {
    // Every packed_vq × mrg_rxbuf × in_order combination, 64 B, one queue: no probe, every row
    // runs, and a run whose negotiated features differ from the request is flagged.
    var s = ThroughputSettings()
    s.pairs = comboPairs
    s.seconds = comboSeconds
    s.warmup = comboWarmup
    s.configs = BenchConfig.combinations
    s.ferryBinary = ferry
    s.workDir = work + "/combos"
    s.backendCPU = backendCPU
    s.dutCPU = dutCPU
    s.probe = false
    s.label = "combos"
    BenchFiles.makeDirectory(s.workDir)
    report.combos = ThroughputBench(settings: s, say: say).run()
    save()
}

if only.contains("latency") || only.contains("startup") {
    let socket = work + "/generator.sock"
    do {
        let generator = try Generator(path: socket, cpu: backendCPU)
        if only.contains("latency") {
            var s = LatencySettings()
            s.seconds = latencySeconds
            s.reps = latencyReps
            s.fixedMaxPps = latencyFixedMax
            s.traceDirectory = latencyTrace
            if let latencyTrace { BenchFiles.makeDirectory(latencyTrace) }
            s.ferryBinary = ferry
            s.workDir = work
            s.generatorCPU = backendCPU
            s.dutCPU = dutCPU
            report.latency = LatencyBench(settings: s, say: say).run(generator: generator, socket: socket)
            report.latencySummary = LatencySummary.summarize(report.latency, loads: s.loads)
            report.latencyComparison = LatencyComparison.compare(report.latencySummary)
            report.latencyByRate = LatencyByRate.bin(report.latency)
            save()
        }
        if only.contains("startup") {
            report.startup = StartupBench(reps: startupReps, ferryBinary: ferry, workDir: work, dutCPU: dutCPU,
                                          mainCPU: backendCPU, say: say).run(generator: generator, socket: socket)
        }
        for e in generator.errors { report.notes.append("generator: \(e)") }
        generator.stop()
    } catch {
        report.notes.append("generator: \(error)")
        say("[generator] cannot start: \(error)")
    }
}
if measures {
    save()
    say("[ferry-bench] wrote \(out)")
}

if only.contains("profile") {
    guard !ferryStripped.isEmpty, !profileOut.isEmpty else { fail("profile needs --ferry-stripped and --profile-out") }
    let valgrind = ProcessSpawn.which("valgrind") ?? "/usr/bin/valgrind"
    let runs = ProfileBench(ferryStripped: ferryStripped, valgrind: valgrind, seconds: profileSeconds, workDir: work,
                            backendCPU: backendCPU, dutCPU: dutCPU, packed: profilePacked, say: say).run()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    if let data = try? encoder.encode(runs) {
        _ = BenchFiles.write(profileOut, String(decoding: data, as: UTF8.self) + "\n")
    }
    say("[ferry-bench] wrote \(profileOut)")
}
