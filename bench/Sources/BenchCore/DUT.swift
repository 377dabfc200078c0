import Foundation
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The two devices under test.
public enum DUTKind: String, Codable, Sendable, CaseIterable {
    case ferry
    case testpmd
}

/// One throughput configuration: ring layout, frame size, queue pairs, and the two features
/// both DUTs offer (VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_IN_ORDER; on unless a combination says).
public struct BenchConfig: Codable, Sendable, Hashable {
    public var packed: Bool
    public var frameSize: Int
    public var queues: Int
    public var mrgRxbuf: Bool
    public var inOrder: Bool

    public init(packed: Bool, frameSize: Int, queues: Int, mrgRxbuf: Bool = true, inOrder: Bool = true) {
        self.packed = packed
        self.frameSize = frameSize
        self.queues = queues
        self.mrgRxbuf = mrgRxbuf
        self.inOrder = inOrder
    }

    /// The 8 feature combinations (packed_vq × mrg_rxbuf × in_order), 64 B, one queue, in the
    /// order the combos table lists them.
    public static var combinations: [BenchConfig] {
        var all: [BenchConfig] = []
        for packed in [false, true] {
            for mrg in [true, false] {
                for inOrder in [true, false] {
                    all.append(BenchConfig(packed: packed, frameSize: 64, queues: 1, mrgRxbuf: mrg, inOrder: inOrder))
                }
            }
        }
        return all
    }

    /// The requested features in devargs form: "packed_vq=1,mrg_rxbuf=0,in_order=1".
    public var featureArgs: String {
        "packed_vq=\(packed ? 1 : 0),mrg_rxbuf=\(mrgRxbuf ? 1 : 0),in_order=\(inOrder ? 1 : 0)"
    }

    /// "split 64B", "packed 1518B", "split 64B 2q".
    public var name: String {
        "\(packed ? "packed" : "split") \(frameSize)B" + (queues > 1 ? " \(queues)q" : "") + featureSuffix(" ", "=0")
    }

    /// "" with both features on (every configuration but some combinations), else what is off.
    func featureSuffix(_ separator: String, _ off: String) -> String {
        (mrgRxbuf ? "" : "\(separator)mrg_rxbuf\(off)") + (inOrder ? "" : "\(separator)in_order\(off)")
    }

    /// Parses "split-64", "packed-1518", "split-64-2q".
    public init?(token: String) {
        let parts = token.lowercased().split(separator: "-")
        guard parts.count >= 2, let size = Int(parts[1]), size >= 60, size <= 2048 else { return nil }
        switch parts[0] {
        case "split": packed = false
        case "packed": packed = true
        default: return nil
        }
        frameSize = size
        queues = 1
        mrgRxbuf = true
        inOrder = true
        if parts.count == 3 {
            guard parts[2].hasSuffix("q"), let q = Int(parts[2].dropLast()), q >= 1, q <= 8 else { return nil }
            queues = q
        }
    }

    public var token: String {
        "\(packed ? "packed" : "split")-\(frameSize)" + (queues > 1 ? "-\(queues)q" : "") + featureSuffix("-no-", "")
    }
}

/// How a DUT is started. Both DUTs get the same things: one virtio-user port on `socket`, io
/// forwarding back to the same port, one forwarding thread pinned to `cpu`, and testpmd-shaped
/// periodic stats when `statsPeriod` > 0.
public struct DUTLaunch {
    public var kind: DUTKind
    public var socket: String
    public var config: BenchConfig
    /// Seed the loop with one burst before forwarding (testpmd's `--tx-first`, Ferry's
    /// `tx_first=1`). Off for the generator runs: every frame then comes from the generator.
    public var txFirst: Bool
    public var statsPeriod: Int
    public var cpu: Int
    /// The core of each DUT's control thread: testpmd's main lcore (`--main-lcore`); Ferry's
    /// control thread is moved there by `pinControlThread` once its worker runs.
    public var mainCPU: Int
    public var ferryBinary: String
    public var workDir: String
    /// A command to run the DUT under (valgrind and its options), empty for none.
    public var wrapper: [String] = []
    /// More `key = value` lines for Ferry's configuration (e.g. `duration = 10`).
    public var ferryExtra: [String] = []

    /// testpmd's EAL file prefix for this run, unique per process and launch.
    public let filePrefix: String
    nonisolated(unsafe) static var counter = 0

    public init(kind: DUTKind, socket: String, config: BenchConfig, txFirst: Bool, statsPeriod: Int, cpu: Int,
                mainCPU: Int, ferryBinary: String, workDir: String) {
        Self.counter += 1
        filePrefix = "fbench-\(getpid())-\(Self.counter)"
        self.kind = kind
        self.socket = socket
        self.config = config
        self.txFirst = txFirst
        self.statsPeriod = statsPeriod
        self.cpu = cpu
        self.mainCPU = mainCPU
        self.ferryBinary = ferryBinary
        self.workDir = workDir
    }

    public var ferryStatsJSON: String { workDir + "/ferry-stats.json" }

    /// The executable and arguments, under `wrapper` if there is one.
    public func command() -> (String, [String]) {
        let (exe, args) = bareCommand()
        if let first = wrapper.first { return (first, Array(wrapper.dropFirst()) + [exe] + args) }
        return (exe, args)
    }

    func bareCommand() -> (String, [String]) {
        switch kind {
        case .ferry:
            let conf = workDir + "/dut.conf"
            var text = "# written by ferry-bench\n"
            text += "port.0.path = \(socket)\n"
            text += "port.0.queues = \(config.queues)\n"
            text += "port.0.packed_vq = \(config.packed ? 1 : 0)\n"
            text += "port.0.mrg_rxbuf = \(config.mrgRxbuf ? 1 : 0)\n"
            text += "port.0.in_order = \(config.inOrder ? 1 : 0)\n"
            text += "fwd = io\nburst = 32\n"
            // testpmd's default --max-pkt-len: without mrg_rxbuf both DUTs then post one
            // buffer per RX frame (Ferry's default, 9216, posts five).
            text += "max_pkt_len = 1518\n"
            text += "tx_first = \(txFirst ? 1 : 0)\n"
            text += "txpkts = \(config.frameSize)\n"
            text += "cores = \(cpu)\n"
            text += "stats_period = \(statsPeriod)\n"
            text += "stats_json = \(ferryStatsJSON)\n"
            for line in ferryExtra { text += line + "\n" }
            _ = BenchFiles.write(conf, text)
            return (ferryBinary, ["run", conf])
        case .testpmd:
            let exe = TestpmdBackend.locate() ?? "/usr/bin/dpdk-testpmd"
            // The features asked for explicitly (packed_vq=0,mrg_rxbuf=1,in_order=1 are also
            // virtio_user's defaults), so both DUTs offer the same set in every configuration.
            let vdev = "net_virtio_user0,path=\(socket),queues=\(config.queues),\(config.featureArgs)"
            // The anchors' frontend command: one forwarding lcore, --single-file-segments to stay
            // under vhost-user's 8 memory regions, 512 MB of hugepages.
            var args = ["-l", "\(mainCPU),\(cpu)", "--main-lcore", "\(mainCPU)", "--no-pci",
                        "--file-prefix=\(filePrefix)", "-m", "512", "--single-file-segments",
                        "--vdev", vdev, "--",
                        "--nb-cores=1", "--forward-mode=io", "-a", "--burst=32",
                        "--rxq=\(config.queues)", "--txq=\(config.queues)", "--txpkts=\(config.frameSize)"]
            if txFirst { args.append("--tx-first") }
            if statsPeriod > 0 { args += ["--stats-period", "\(statsPeriod)"] }
            return (exe, args)
        }
    }

    /// Spawns the DUT with stdout and stderr in `log`. stdin stays open (a socketpair), so a
    /// non-interactive testpmd without stats waits on it instead of exiting.
    public func spawn(log: String) throws -> SpawnedProcess {
        let (exe, args) = command()
        return try SpawnedProcess(executable: exe, arguments: args, logPath: log)
    }

    /// Ferry has no option to place its control thread. It sleeps until it has work (a
    /// `stats_period` print, a link change, the end), but left floating it still runs on the
    /// worker's core about half the time it wakes; when it woke every 50 ms that was ~20 more
    /// preemptions/s of Ferry's worker than of testpmd's. testpmd's main lcore is pinned to
    /// `mainCPU` by its command line, so Ferry's main thread (tid = pid) is moved there too, with
    /// `taskset -p`, once the worker has pinned itself. Only that thread moves: `taskset -p`
    /// without `-a` changes one thread. No-op for testpmd. Returns false when taskset failed.
    @discardableResult
    public func pinControlThread(_ process: SpawnedProcess) -> Bool {
        guard kind == .ferry, mainCPU >= 0 else { return true }
        let taskset = ProcessSpawn.which("taskset", fallbackDirs: ["/usr/bin", "/bin"]) ?? "/usr/bin/taskset"
        guard let p = try? SpawnedProcess(executable: taskset, arguments: ["-p", "-c", "\(mainCPU)", "\(process.pid)"],
                                          logPath: workDir + "/taskset.log") else { return false }
        _ = p.waitForExit(timeoutMs: 5000)
        return p.waitStatus == 0
    }

    /// Stops the DUT: SIGINT (both print final stats and exit), then SIGKILL after `graceMs`.
    /// Removes testpmd's hugepage files and runtime directory.
    public func stop(_ process: SpawnedProcess, graceMs: Int = 8000) {
        _ = process.terminate(with: SIGINT, graceMs: graceMs)
        process.closeStdin()
        if kind == .testpmd { BenchFiles.removeHugepageFiles(prefix: filePrefix) }
    }
}

/// File helpers for the harness.
public enum BenchFiles {
    @discardableResult
    public static func write(_ path: String, _ text: String) -> Bool {
        guard let f = fopen(path, "w") else { return false }
        defer { fclose(f) }
        return text.withCString { fputs($0, f) } >= 0
    }

    public static func read(_ path: String) -> String? { ProcessSpawn.readFile(path) }

    public static func makeDirectory(_ path: String) {
        var p = ""
        for part in path.split(separator: "/") {
            p += "/" + part
            mkdir(p, 0o755)
        }
    }

    /// testpmd leaves `<prefix>map_N` files in /dev/hugepages holding pages when it is killed,
    /// and a runtime directory under /var/run/dpdk.
    public static func removeHugepageFiles(prefix: String) {
        for dir in ["/dev/hugepages"] {
            guard let d = opendir(dir) else { continue }
            var names: [String] = []
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                if name.hasPrefix(prefix) { names.append(name) }
            }
            closedir(d)
            for n in names { unlink(dir + "/" + n) }
        }
        ProcessSpawn.removeDirectory("/var/run/dpdk/" + prefix)
    }

    /// The 1-minute load average, to record how busy the shared machine was.
    public static func loadAverage() -> Double {
        guard let text = read("/proc/loadavg"), let first = text.split(separator: " ").first else { return -1 }
        return Double(first) ?? -1
    }
}
