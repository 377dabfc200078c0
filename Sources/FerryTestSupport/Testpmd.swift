#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How to start dpdk-testpmd as a vhost-user backend (`net_vhost` PMD) for Ferry to talk to.
public struct TestpmdOptions {
    /// One `net_vhost` port per path, numbered in this order (testpmd numbers ports in --vdev
    /// order: `vhostSockets[0]` is port 0).
    public var vhostSockets: [String]
    /// Queue pairs per port (`queues=` devarg and `--rxq/--txq`).
    public var queues: Int = 1
    /// `--forward-mode`: io, mac, macswap, rxonly, txonly, ...
    public var forwardMode = "io"
    /// CPUs for the forwarding lcores, an EAL-style list ("0", "0,1", "0-1"). One forwarding
    /// lcore per CPU. The main lcore (idle: it only reads commands) shares the first CPU, so
    /// testpmd stays off every other CPU (Ferry's).
    public var cores: String = "0"
    /// Appended to every `net_vhost` devarg list, e.g. "dequeue-zero-copy=1".
    public var extraVdevArgs: String = ""
    /// Appended after the harness's testpmd arguments (later options win in testpmd's getopt).
    public var extraTestpmdArgs: [String] = []
    /// `--log-level=lib.vhost.config:debug` (every message read, with details). When false the
    /// vhost config log is limited to warnings and `vhostMessageOrder` returns nothing.
    public var logVhostMessages = true
    /// net_vhost `client=1`: testpmd connects to sockets Ferry listens on (Ferry `server=1`).
    public var clientMode = false

    public init(vhostSockets: [String]) { self.vhostSockets = vhostSockets }
}

/// Why the testpmd harness failed. Descriptions carry the tail of testpmd's log.
public struct TestpmdError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// dpdk-testpmd running as a vhost-user device backend, for interop tests.
///
/// It runs in interactive mode (`-i -a`: forwarding auto-starts) with stdin on a socketpair that
/// only this object holds. That gives three things the non-interactive mode does not:
/// - `stop()` can ask for `show port stats all` after `stop`, so byte counters are exact and
///   final (`Forward statistics` has packets only, `--stats-period` reports are stale);
/// - tests can send commands mid-run (`command("port stop 0")`);
/// - testpmd quits at EOF on stdin, so it dies with the test process even on a crash.
/// stdout is line-buffered through `stdbuf -oL` when available so `log` is current.
public final class TestpmdBackend {
    public let options: TestpmdOptions
    public let workDir: String
    public let logPath: String
    /// The full command line, for diagnostics.
    public let commandLine: [String]
    private var process: SpawnedProcess?

    private static var prefixCounter = 0

    /// dpdk-testpmd in $PATH or /usr/bin.
    public static func locate() -> String? {
        ProcessSpawn.which("dpdk-testpmd", fallbackDirs: ["/usr/bin", "/usr/local/bin"])
    }

    /// nil when testpmd can run here, else why not.
    public static func skipReason() -> String? {
        guard locate() != nil else {
            return "dpdk-testpmd not found in PATH or /usr/bin (apt-get install dpdk dpdk-dev; scripts/lib/setup.sh does it)"
        }
        guard geteuid() == 0 else {
            return "dpdk-testpmd needs root (hugepages, vhost); run tests as root, e.g. via scripts/test"
        }
        let free = hugePagesFree()
        guard free >= 128 else {
            return "only \(free) free hugepages (need >= 128): echo 1024 > /proc/sys/vm/nr_hugepages and mount hugetlbfs on /dev/hugepages (scripts/lib/setup.sh)"
        }
        return nil
    }

    /// `HugePages_Free` from /proc/meminfo (0 when unreadable).
    public static func hugePagesFree() -> Int {
        guard let info = ProcessSpawn.readFile("/proc/meminfo") else { return 0 }
        for line in info.split(separator: "\n") where line.hasPrefix("HugePages_Free:") {
            return Int(line.dropFirst("HugePages_Free:".count).trimmingSpaces()) ?? 0
        }
        return 0
    }

    /// Spawns testpmd; its output goes to `workDir/testpmd.log`. Stale socket files at the
    /// vhost paths are removed first (server mode). Returns once the process is started; use
    /// `waitForSockets` before connecting.
    public init(options: TestpmdOptions, workDir: String) throws {
        guard let exe = Self.locate() else { throw TestpmdError("dpdk-testpmd not found") }
        guard !options.vhostSockets.isEmpty else { throw TestpmdError("no vhost sockets given") }
        for path in options.vhostSockets where path.utf8.count > 107 {
            throw TestpmdError("socket path longer than 107 bytes (AF_UNIX limit): \(path)")
        }
        let cpus = try Self.parseCPUList(options.cores)
        self.options = options
        self.workDir = workDir
        self.logPath = workDir.hasSuffix("/") ? workDir + "testpmd.log" : workDir + "/testpmd.log"

        if !options.clientMode {
            for path in options.vhostSockets { ProcessSpawn.removeSocketFile(path) }
        }

        Self.prefixCounter += 1
        let prefix = "ferry-tp-\(getpid())-\(Self.prefixCounter)"
        var eal: [String] = []
        // lcore 0 = main, lcores 1...n = forwarding, each pinned with lcore@cpu.
        var lcoreMap = ["0@\(cpus[0])"]
        for (i, cpu) in cpus.enumerated() { lcoreMap.append("\(i + 1)@\(cpu)") }
        eal += ["--lcores", lcoreMap.joined(separator: ","), "--main-lcore", "0"]
        eal += ["--in-memory", "--no-pci", "--file-prefix=\(prefix)"]
        eal += ["--log-level=lib.vhost.config:\(options.logVhostMessages ? "debug" : "warning")"]
        for (i, path) in options.vhostSockets.enumerated() {
            var devargs = "net_vhost\(i),iface=\(path),queues=\(options.queues)"
            if options.clientMode { devargs += ",client=1" }
            if !options.extraVdevArgs.isEmpty { devargs += "," + options.extraVdevArgs }
            eal += ["--vdev", devargs]
        }
        var app = ["-i", "-a", "--forward-mode=\(options.forwardMode)", "--nb-cores=\(cpus.count)",
                   "--rxq=\(options.queues)", "--txq=\(options.queues)"]
        if !options.extraTestpmdArgs.contains(where: { $0.hasPrefix("--total-num-mbufs") }) {
            // The default pool (~155k mbufs, ~340 MB of hugepages) is far more than vhost needs.
            app.append("--total-num-mbufs=\(max(32768, 4096 * options.queues * options.vhostSockets.count))")
        }
        app += options.extraTestpmdArgs

        var executable = exe
        var args = eal + ["--"] + app
        if let stdbuf = ProcessSpawn.which("stdbuf", fallbackDirs: ["/usr/bin"]) {
            executable = stdbuf
            args = ["-oL", "-eL", exe] + args
        }
        self.commandLine = [executable] + args
        self.process = try SpawnedProcess(executable: executable, arguments: args, logPath: logPath)
    }

    deinit {
        kill()
    }

    /// Everything testpmd has written so far.
    public var log: String { ProcessSpawn.readFile(logPath) ?? "" }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// The process id (nil after `kill` or `stop`).
    public var pid: Int32? { process?.pid }

    /// Waits until every vhost socket is listening (server mode). In client mode testpmd does
    /// not create the sockets; this returns at once. On timeout or early exit testpmd is killed
    /// and the error carries its log.
    public func waitForSockets(timeoutMs: Int) throws {
        if options.clientMode { return }
        let deadline = ProcessSpawn.nowMs() + timeoutMs
        while true {
            if options.vhostSockets.allSatisfy({ ProcessSpawn.isListening(unixPath: $0) }) { return }
            if !isRunning {
                let text = log
                kill()
                throw TestpmdError("dpdk-testpmd exited before its sockets appeared:\n\(TestpmdLog.tail(text))\ncommand: \(commandLine.joined(separator: " "))")
            }
            if ProcessSpawn.nowMs() >= deadline {
                let missing = options.vhostSockets.filter { !ProcessSpawn.isListening(unixPath: $0) }
                let text = log
                kill()
                throw TestpmdError("timed out after \(timeoutMs) ms waiting for vhost sockets \(missing):\n\(TestpmdLog.tail(text))")
            }
            ProcessSpawn.sleepMs(10)
        }
    }

    /// Waits until the log contains `text` (e.g. "virtio is now ready for processing", or
    /// "Port 0: link state change event") at least `occurrences` times. Returns false on
    /// timeout or if testpmd exited; does not kill.
    @discardableResult
    public func waitForLog(_ text: String, occurrences: Int = 1, timeoutMs: Int) -> Bool {
        let deadline = ProcessSpawn.nowMs() + timeoutMs
        while true {
            if Self.count(of: text, in: log) >= occurrences { return true }
            if !isRunning || ProcessSpawn.nowMs() >= deadline {
                return Self.count(of: text, in: log) >= occurrences
            }
            ProcessSpawn.sleepMs(10)
        }
    }

    /// Sends one interactive command line (e.g. "show port stats all", "port stop 0").
    public func command(_ line: String) throws {
        guard let p = process, p.isRunning else { throw TestpmdError("dpdk-testpmd is not running") }
        try p.writeStdin(line.hasSuffix("\n") ? line : line + "\n")
    }

    /// Stops forwarding, prints final statistics and quits; escalates to SIGINT and then
    /// SIGKILL if testpmd does not exit in time. Throws when no final statistics were found
    /// (testpmd crashed or was killed), with the log tail.
    @discardableResult
    public func stop() throws -> TestpmdStats {
        guard let p = process else { throw TestpmdError("dpdk-testpmd was already stopped or killed") }
        let wasRunning = p.isRunning
        if wasRunning {
            // `stop` first: counters settle, then NIC statistics are final. Then quit.
            try? p.writeStdin("stop\nshow port stats all\nquit\n")
            if !p.waitForExit(timeoutMs: 15_000) {
                p.terminate(with: SIGINT, graceMs: 5_000)
            }
        }
        p.closeStdin()
        p.kill()
        process = nil
        removeServerSockets()
        let text = log
        let stats = TestpmdStats.parse(text)
        guard stats.sawForwardStatistics, !stats.ports.isEmpty else {
            let why = wasRunning ? "no final statistics in its log" : "it had already exited"
            throw TestpmdError("dpdk-testpmd stop: \(why):\n\(TestpmdLog.tail(text))")
        }
        return stats
    }

    /// Hard stop (SIGKILL), for restart tests. Removes the server sockets it leaves behind so
    /// a new backend can bind the same paths. Safe to call more than once.
    public func kill() {
        guard let p = process else { return }
        p.closeStdin()
        p.kill()
        process = nil
        removeServerSockets()
    }

    /// vhost-user messages testpmd read on `socket`, in order, e.g. ["VHOST_USER_SET_OWNER",
    /// "VHOST_USER_GET_FEATURES", ...].
    public func vhostMessageOrder(socket: String) -> [String] {
        TestpmdLog.vhostMessageOrder(log, socket: socket)
    }

    /// The same, split per connection (reconnect tests).
    public func vhostSessions(socket: String) -> [[String]] {
        TestpmdLog.vhostSessions(log, socket: socket)
    }

    private func removeServerSockets() {
        if options.clientMode { return }
        for path in options.vhostSockets { ProcessSpawn.removeSocketFile(path) }
    }

    static func count(of needle: String, in haystack: String) -> Int {
        guard !needle.isEmpty else { return 0 }
        var n = 0
        var rest = haystack[...]
        while let r = rest.range(of: needle) {
            n += 1
            rest = rest[r.upperBound...]
        }
        return n
    }

    /// "0", "0,1", "2-3" -> CPU numbers.
    static func parseCPUList(_ list: String) throws -> [Int] {
        var cpus: [Int] = []
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            if bounds.count == 1, let c = Int(bounds[0].trimmingSpaces()), c >= 0 {
                cpus.append(c)
            } else if bounds.count == 2, let a = Int(bounds[0].trimmingSpaces()),
                      let b = Int(bounds[1].trimmingSpaces()), a >= 0, a <= b {
                cpus.append(contentsOf: a...b)
            } else {
                throw TestpmdError("bad core list \"\(list)\"")
            }
        }
        guard !cpus.isEmpty else { throw TestpmdError("empty core list") }
        return cpus
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
