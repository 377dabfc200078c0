import CFerry
import FerryTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One DUT run under callgrind, for `scripts/cgprofile.py`.
public struct ProfileRun: Codable, Sendable {
    public var dut: DUTKind
    /// "busy" (a loop of frames, tx_first) or "idle" (no frame at all).
    public var mode: String
    /// callgrind wrote PREFIX-01, PREFIX-02, ... (one file per thread).
    public var prefix: String
    /// Frames the DUT received in the run (0 for idle runs).
    public var packets: UInt64
    public var error: String?
}

/// Runs each DUT under `valgrind --tool=callgrind` against dpdk-testpmd's net_vhost (io),
/// busy and idle. callgrind counts instructions, not time: the counts do not depend on how
/// busy the shared machine is.
public final class ProfileBench {
    let ferryStripped: String
    let valgrind: String
    let seconds: Int
    let workDir: String
    let backendCPU: Int
    let dutCPU: Int
    /// The ring layout profiled (frame size 64, one queue).
    let packed: Bool
    let say: (String) -> Void

    public init(ferryStripped: String, valgrind: String, seconds: Int, workDir: String, backendCPU: Int, dutCPU: Int,
                packed: Bool = false, say: @escaping (String) -> Void) {
        self.packed = packed
        self.ferryStripped = ferryStripped
        self.valgrind = valgrind
        self.seconds = seconds
        self.workDir = workDir
        self.backendCPU = backendCPU
        self.dutCPU = dutCPU
        self.say = say
    }

    public func run() -> [ProfileRun] {
        var runs: [ProfileRun] = []
        for kind in DUTKind.allCases {
            for busy in [true, false] {
                let r = once(kind: kind, busy: busy)
                say("[profile] \(kind.rawValue) \(r.mode): " + (r.error ?? "\(r.packets) frames"))
                runs.append(r)
            }
        }
        return runs
    }

    func once(kind: DUTKind, busy: Bool) -> ProfileRun {
        let mode = busy ? "busy" : "idle"
        let dir = workDir + "/profile-\(kind.rawValue)-\(mode)"
        BenchFiles.makeDirectory(dir)
        let prefix = dir + "/callgrind.out"
        var run = ProfileRun(dut: kind, mode: mode, prefix: prefix, packets: 0)
        let socket = dir + "/vhost.sock"
        var options = TestpmdOptions(vhostSockets: [socket])
        options.cores = "\(backendCPU)"
        options.logVhostMessages = false
        let backend: TestpmdBackend
        do {
            backend = try TestpmdBackend(options: options, workDir: dir)
            try backend.waitForSockets(timeoutMs: 30_000)
        } catch {
            run.error = "backend: \(error)"
            return run
        }
        defer { backend.kill() }
        let forwardSeconds = busy ? seconds : max(2, seconds / 3)
        // testpmd's stdout is block-buffered in a file except for its periodic stats (flushed),
        // which are printed by the main lcore, not the profiled forwarding thread.
        var launch = DUTLaunch(kind: kind, socket: socket, config: BenchConfig(packed: packed, frameSize: 64, queues: 1),
                               txFirst: busy, statsPeriod: kind == .testpmd ? 1 : 0, cpu: dutCPU, mainCPU: backendCPU,
                               ferryBinary: ferryStripped, workDir: dir)
        launch.wrapper = [valgrind, "--tool=callgrind", "--separate-threads=yes", "--dump-instr=yes",
                          "--callgrind-out-file=\(prefix)"]
        launch.ferryExtra = ["duration = \(forwardSeconds)"]
        let logPath = dir + "/dut.log"
        let process: SpawnedProcess
        do { process = try launch.spawn(log: logPath) } catch {
            run.error = "spawn: \(error)"
            return run
        }
        switch kind {
        case .ferry:
            // Ferry stops by itself after `duration` seconds of forwarding.
            if !process.waitForExit(timeoutMs: (forwardSeconds + 120) * 1000) {
                launch.stop(process)
                run.error = "ferry under valgrind did not finish"
            }
            let json = BenchFiles.read(launch.ferryStatsJSON) ?? ""
            run.packets = UInt64(ThroughputBench.jsonInt(json[...], key: "rx_packets") ?? 0)
        case .testpmd:
            // Under valgrind EAL start-up takes a while; forwarding has begun once testpmd
            // prints its first stats block.
            let deadline = ferry_monotonic_ns() + 180_000_000_000
            while !(BenchFiles.read(logPath) ?? "").contains("Rx-pps:") {
                if !process.isRunning || ferry_monotonic_ns() > deadline {
                    run.error = "testpmd under valgrind did not start forwarding: " + ThroughputBench.tail(BenchFiles.read(logPath) ?? "")
                    launch.stop(process)
                    return run
                }
                usleep(200_000)
            }
            sleep(UInt32(forwardSeconds))
            launch.stop(process, graceMs: 60_000)
            run.packets = ThroughputBench.lastCounter("RX-packets:", in: BenchFiles.read(logPath) ?? "") ?? 0
        }
        if busy && run.packets == 0 && run.error == nil { run.error = "no frames forwarded" }
        return run
    }
}
