import Foundation
import CFerry
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// One DUT run in the throughput A/B.
public struct ThroughputRun: Codable, Sendable {
    public var dut: DUTKind
    public var pair: Int
    /// Mean of the steady-state periods, Mpps; nil when the run failed.
    public var mpps: Double?
    /// Every period the DUT reported, Mpps (warm-up ones included, for the record).
    public var periodsMpps: [Double]
    public var warmupPeriods: Int
    /// Frames the DUT said it sent in the whole run, and frames the backend said it received:
    /// a check that the DUT's counters are honest (in-flight frames aside, they match).
    public var dutTxTotal: UInt64?
    public var backendRxTotal: UInt64?
    /// 1-minute load average when the run started: how busy the shared machine was.
    public var loadAverage: Double
    /// Preemptions per second of the DUT's forwarding thread and of the backend's, over the
    /// measured periods: how often other work took their core (0 on a quiet machine).
    public var dutPreemptionsPerSecond: Double?
    public var backendPreemptionsPerSecond: Double?
    /// The features the backend accepted (its `negotiated Virtio features` line), and for
    /// Ferry the ring line it logs per port: the check that the run is the configuration asked.
    public var negotiated: NegotiatedFeatures?
    public var ferryReported: NegotiatedFeatures?
    /// Why this run is not the configuration asked (features that differ, or that could not be
    /// read); nil when they match.
    public var negotiationMismatch: String?
    public var error: String?
}

/// Ferry / testpmd for one pair.
public struct ThroughputPair: Codable, Sendable {
    public var pair: Int
    public var ferryMpps: Double
    public var testpmdMpps: Double
    public var ratio: Double
}

/// One configuration's A/B result.
public struct ThroughputRow: Codable, Sendable {
    public var config: String
    public var token: String
    /// The features asked of both DUTs, "packed_vq=0,mrg_rxbuf=1,in_order=1".
    public var requested: String
    /// Every way a run's negotiated features differed from `requested`, "ferry: …" or
    /// "testpmd: …", each once. Empty when every run negotiated what was asked; a row with
    /// entries is flagged in the report, its rates belong to another configuration.
    public var negotiationMismatches: [String]
    public var status: String
    public var reason: String?
    public var runs: [ThroughputRun]
    public var pairs: [ThroughputPair]
    public var medianRatio: Double?
    public var minRatio: Double?
    public var maxRatio: Double?
    public var ferryMedianMpps: Double?
    public var testpmdMedianMpps: Double?
    /// Median preemptions per second of the DUT thread over the runs: the noise.
    public var medianDutPreemptionsPerSecond: Double?

    public init(config: BenchConfig, status: String, reason: String?, runs: [ThroughputRun]) {
        self.config = config.name
        token = config.token
        requested = config.featureArgs
        var mismatches: [String] = []
        for r in runs {
            guard let m = r.negotiationMismatch else { continue }
            let line = "\(r.dut.rawValue): \(m)"
            if !mismatches.contains(line) { mismatches.append(line) }
        }
        negotiationMismatches = mismatches
        self.status = status
        self.reason = reason
        self.runs = runs
        var pairs: [ThroughputPair] = []
        let indices = Set(runs.map(\.pair)).sorted()
        for p in indices {
            guard let f = runs.first(where: { $0.pair == p && $0.dut == .ferry })?.mpps,
                  let t = runs.first(where: { $0.pair == p && $0.dut == .testpmd })?.mpps, t > 0 else { continue }
            pairs.append(ThroughputPair(pair: p, ferryMpps: f, testpmdMpps: t, ratio: f / t))
        }
        self.pairs = pairs
        medianRatio = Stats.median(pairs.map(\.ratio))
        minRatio = pairs.map(\.ratio).min()
        maxRatio = pairs.map(\.ratio).max()
        ferryMedianMpps = Stats.median(runs.filter { $0.dut == .ferry }.compactMap(\.mpps))
        testpmdMedianMpps = Stats.median(runs.filter { $0.dut == .testpmd }.compactMap(\.mpps))
        medianDutPreemptionsPerSecond = Stats.median(runs.compactMap(\.dutPreemptionsPerSecond))
    }
}

public struct ThroughputSettings: Sendable {
    public var pairs = 5
    public var seconds = 10
    public var warmup = 3
    public var configs: [BenchConfig] = []
    public var ferryBinary = ""
    public var workDir = "/tmp/ferry-bench"
    public var backendCPU = 0
    public var dutCPU = 1
    /// Probe packed and multi-queue rows first and mark them pending when Ferry cannot run
    /// them (the configurations part). The combinations part runs every row and flags runs
    /// whose negotiated features differ instead.
    public var probe = true
    /// Log prefix: "[throughput]" or "[combos]".
    public var label = "throughput"
    public init() {}
}

/// The A/B: dpdk-testpmd's net_vhost (io) on the backend core, the DUT on its own core,
/// Ferry and testpmd's virtio-user alternating, A B A B, for `pairs` pairs per configuration.
public final class ThroughputBench {
    public let settings: ThroughputSettings
    let say: (String) -> Void
    private var runCounter = 0

    public init(settings: ThroughputSettings, say: @escaping (String) -> Void) {
        self.settings = settings
        self.say = say
    }

    public func run() -> [ThroughputRow] {
        var rows: [ThroughputRow] = []
        let tag = "[\(settings.label)]"
        for config in settings.configs {
            if settings.probe, let reason = probe(config) {
                say("\(tag) \(config.name): pending: \(reason)")
                rows.append(ThroughputRow(config: config, status: "pending", reason: reason, runs: []))
                continue
            }
            var runs: [ThroughputRun] = []
            for pair in 1...settings.pairs {
                for kind in [DUTKind.ferry, .testpmd] {
                    let r = runOnce(kind: kind, config: config, pair: pair)
                    let shown = r.mpps.map { fmt($0, 3) + " Mpps" } ?? "failed: \(r.error ?? "?")"
                    let preempted = "DUT preempted \(fmt(r.dutPreemptionsPerSecond ?? -1, 0))/s, backend \(fmt(r.backendPreemptionsPerSecond ?? -1, 0))/s"
                    let negotiation = r.negotiationMismatch.map { ", NEGOTIATION DIFFERS: \($0)" } ?? ""
                    say("\(tag) \(config.name) pair \(pair)/\(settings.pairs) \(kind.rawValue): \(shown) (load \(fmt(r.loadAverage, 2)), \(preempted))\(negotiation)")
                    runs.append(r)
                }
            }
            let ok = runs.contains { $0.mpps != nil }
            let row = ThroughputRow(config: config, status: ok ? "ok" : "failed",
                                    reason: ok ? nil : runs.compactMap(\.error).first, runs: runs)
            if let m = row.medianRatio {
                say("\(tag) \(config.name): median ratio ferry/testpmd \(fmt(m, 2)) (min \(fmt(row.minRatio ?? 0, 2)), max \(fmt(row.maxRatio ?? 0, 2)))")
            }
            rows.append(row)
        }
        return rows
    }

    private func nextDir() -> String {
        runCounter += 1
        let dir = settings.workDir + "/tp-\(runCounter)"
        BenchFiles.makeDirectory(dir)
        return dir
    }

    private func startBackend(dir: String, socket: String, queues: Int) throws -> TestpmdBackend {
        var options = TestpmdOptions(vhostSockets: [socket])
        options.queues = queues
        options.forwardMode = "io"
        options.cores = "\(settings.backendCPU)"
        // lib.vhost.config at debug: it prints the `negotiated Virtio features` line each run is
        // checked against (and every message; control path only, nothing per packet).
        options.logVhostMessages = true
        let backend = try TestpmdBackend(options: options, workDir: dir)
        try backend.waitForSockets(timeoutMs: 30_000)
        return backend
    }

    /// One DUT run: a fresh backend, the DUT, warm-up + `seconds` periods, stop.
    func runOnce(kind: DUTKind, config: BenchConfig, pair: Int) -> ThroughputRun {
        let dir = nextDir()
        let socket = dir + "/vhost.sock"
        var result = ThroughputRun(dut: kind, pair: pair, mpps: nil, periodsMpps: [], warmupPeriods: settings.warmup,
                                   loadAverage: BenchFiles.loadAverage())
        let backend: TestpmdBackend
        do { backend = try startBackend(dir: dir, socket: socket, queues: config.queues) } catch {
            result.error = "backend: \(error)"
            return result
        }
        let launch = DUTLaunch(kind: kind, socket: socket, config: config, txFirst: true, statsPeriod: 1,
                               cpu: settings.dutCPU, mainCPU: settings.backendCPU, ferryBinary: settings.ferryBinary,
                               workDir: dir)
        let logPath = dir + "/dut.log"
        let process: SpawnedProcess
        do { process = try launch.spawn(log: logPath) } catch {
            backend.kill()
            result.error = "spawn: \(error)"
            return result
        }
        let needed = settings.warmup + settings.seconds
        // Start-up (testpmd's EAL takes seconds) plus the periods, with room to spare.
        let deadline = ferry_monotonic_ns() + UInt64(needed + 40) * 1_000_000_000
        var samples: [Double] = []
        var dutStart: (UInt64, UInt64)?, dutEnd: (UInt64, UInt64)?
        var backendStart: (UInt64, UInt64)?, backendEnd: (UInt64, UInt64)?
        func sample(_ pid: Int32?, _ cpu: Int) -> (UInt64, UInt64)? {
            guard let pid, let n = Preemption.count(pid: pid, cpu: cpu) else { return nil }
            return (n, ferry_monotonic_ns())
        }
        var pinned = false
        while true {
            let log = BenchFiles.read(logPath) ?? ""
            samples = Self.periods(log: log, kind: kind, ports: 1)
            if !samples.isEmpty && !pinned {
                // The worker runs: move Ferry's control thread off its core (warm-up absorbs it).
                pinned = true
                if !launch.pinControlThread(process) { result.error = "taskset failed to move the control thread" }
            }
            if samples.count >= settings.warmup && dutStart == nil {
                dutStart = sample(process.pid, settings.dutCPU)
                backendStart = sample(backend.pid, settings.backendCPU)
            }
            if samples.count >= needed {
                dutEnd = sample(process.pid, settings.dutCPU)
                backendEnd = sample(backend.pid, settings.backendCPU)
                break
            }
            if !process.isRunning {
                result.error = "the DUT exited early: " + Self.tail(log)
                break
            }
            if ferry_monotonic_ns() > deadline {
                result.error = "no \(needed) stats periods within \(needed + 40) s"
                break
            }
            usleep(200_000)
        }
        result.dutPreemptionsPerSecond = Preemption.rate(dutStart, dutEnd)
        result.backendPreemptionsPerSecond = Preemption.rate(backendStart, backendEnd)
        launch.stop(process)
        let stats = try? backend.stop()
        let log = BenchFiles.read(logPath) ?? ""
        result.periodsMpps = Self.periods(log: log, kind: kind, ports: 1).map { $0 / 1e6 }
        result.dutTxTotal = Self.lastCounter("TX-packets:", in: log)
        result.backendRxTotal = stats?.port(0)?.rxPackets
        Self.checkNegotiation(&result, config: config, backendLog: BenchFiles.read(backend.logPath) ?? "", dutLog: log)
        if result.error == nil {
            if let m = RateSeries.steadyMean(samples, warmup: settings.warmup, count: settings.seconds), m > 0 {
                result.mpps = m / 1e6
            } else {
                result.error = "no traffic in the steady state"
            }
        }
        return result
    }

    /// Fills the run's negotiated features from the backend's log (both DUTs) and Ferry's own
    /// ring line (Ferry), and says what differs from `config`. A run that never connected has
    /// nothing to check.
    static func checkNegotiation(_ run: inout ThroughputRun, config: BenchConfig, backendLog: String, dutLog: String) {
        run.negotiated = NegotiatedFeatures.fromBackendLog(backendLog)
        var problems: [String] = []
        if let n = run.negotiated {
            problems += n.differences(from: config).map { "backend saw \($0)" }
        } else if run.error == nil {
            problems.append("no negotiated features in the backend's log")
        }
        if run.dut == .ferry {
            run.ferryReported = NegotiatedFeatures.fromFerryLog(dutLog)
            if let f = run.ferryReported {
                problems += f.differences(from: config).map { "ferry logged \($0)" }
            } else if run.error == nil {
                problems.append("no ring line in ferry's log")
            }
        }
        run.negotiationMismatch = problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    /// The per-period Rx-pps of a DUT log. testpmd prints a block as forwarding starts, before
    /// any period has passed (always 0): it is dropped, so both series start at the first period.
    static func periods(log: String, kind: DUTKind, ports: Int) -> [Double] {
        var s = RateSeries.rxPps(in: log, ports: ports)
        if kind == .testpmd, s.first == 0 { s.removeFirst() }
        return s
    }

    static func lastCounter(_ label: String, in log: String) -> UInt64? {
        var last: UInt64?
        for line in log.split(separator: "\n") {
            guard let r = line.range(of: label) else { continue }
            let digits = line[r.upperBound...].drop { $0 == " " }.prefix { $0.isNumber }
            if let v = UInt64(digits) { last = v }
        }
        return last
    }

    static func tail(_ log: String, lines: Int = 4) -> String {
        log.split(separator: "\n").suffix(lines).joined(separator: " | ")
    }

    /// nil when Ferry can run `config`, else why the row is pending. Split rings with one
    /// queue always run. Packed rings and multi-queue are tried for a few seconds: they count
    /// as wired once Ferry says it negotiated them and every queue carried frames.
    public func probe(_ config: BenchConfig) -> String? {
        guard config.packed || config.queues > 1 else { return nil }
        let dir = nextDir()
        let socket = dir + "/vhost.sock"
        let backend: TestpmdBackend
        do { backend = try startBackend(dir: dir, socket: socket, queues: config.queues) } catch {
            return "backend for the probe: \(error)"
        }
        defer { backend.kill() }
        let launch = DUTLaunch(kind: .ferry, socket: socket, config: config, txFirst: true, statsPeriod: 1,
                               cpu: settings.dutCPU, mainCPU: settings.backendCPU, ferryBinary: settings.ferryBinary,
                               workDir: dir)
        let logPath = dir + "/dut.log"
        guard let process = try? launch.spawn(log: logPath) else { return "cannot start ferry" }
        let end = ferry_monotonic_ns() + 4_000_000_000
        while process.isRunning && ferry_monotonic_ns() < end { usleep(100_000) }
        let exitedEarly = !process.isRunning
        launch.stop(process)
        let log = BenchFiles.read(logPath) ?? ""
        if exitedEarly {
            return "ferry refused the configuration: " + Self.tail(log, lines: 2)
        }
        if config.packed {
            if log.contains(": split ring") {
                return "Ferry negotiated a split ring although packed_vq=1 was asked (RING_PACKED is not in its driver features yet)"
            }
            guard log.contains("packed") else { return "Ferry's log does not say which ring layout it negotiated" }
        }
        if config.queues > 1 {
            guard let json = BenchFiles.read(launch.ferryStatsJSON) else { return "no stats_json from ferry" }
            let busy = Self.queuesWithTraffic(statsJSON: json)
            if busy.count < config.queues {
                return "only queue(s) \(busy.sorted()) carried frames with queues=\(config.queues)"
            }
        }
        return nil
    }

    /// The RX queues whose stream counted frames in a Ferry stats_json document.
    static func queuesWithTraffic(statsJSON: String) -> Set<Int> {
        var busy = Set<Int>()
        for line in statsJSON.split(separator: "\n") where line.contains("\"rx_queue\"") {
            guard let q = jsonInt(line, key: "rx_queue"), let rx = jsonInt(line, key: "rx_packets") else { continue }
            if rx > 0 { busy.insert(q) }
        }
        return busy
    }

    static func jsonInt(_ line: Substring, key: String) -> Int? {
        guard let r = line.range(of: "\"\(key)\": ") else { return nil }
        return Int(line[r.upperBound...].prefix { $0.isNumber })
    }
}

/// A number with `digits` decimals.
public func fmt(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "n/a" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var s = "\(rounded)"
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
        if digits == 0 { s = String(s[..<dot]) }
    } else if digits > 0 {
        s += "." + String(repeating: "0", count: digits)
    }
    return s
}
