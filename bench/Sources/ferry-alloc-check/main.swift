import BenchCore
import CFerry
import FerryConfig
import FerryTestSupport
import Forwarding
import Foundation
import MallocInterposerSwift

/// ferry-alloc-check: counts the mallocs Ferry's forwarding loop makes after warm-up and
/// fails unless there are none.
///
/// Why not an ordo-one/benchmark target: its malloc metric (the same interposer, used here
/// directly) counts the whole process, and other threads allocate on purpose (this check's
/// own `snapshot()` polls; Ferry's control thread when it wakes for a stats period or a link
/// change). The question is the forwarding loop, so this attributes every
/// allocation to its thread with the interposer's allocation hook: the worker is the thread
/// pinned to the DUT core (checked in /proc). The runtime is Ferry's own `FerryRuntime`, the
/// code `ferry run` executes, against dpdk-testpmd's net_vhost in io mode with `tx_first`, as
/// in the throughput A/B.
///
/// Run with LD_PRELOAD=libMallocInterposerSwift.so (bench/run does): on Linux the interposer
/// replaces malloc only when preloaded. The check first proves the hook sees an allocation
/// made on a thread pinned to the worker core; without that it fails rather than report 0.
///
/// usage: ferry-alloc-check [--seconds N] [--warmup N] [--cpu N] [--backend-cpu N] [--out FILE]

var seconds = 5
var warmup = 2
var workerCPU = 1
var backendCPU = 0
var outPath: String?
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let flag = args.removeFirst()
    let value = args.isEmpty ? "" : args.removeFirst()
    switch flag {
    case "--seconds": seconds = Int(value) ?? seconds
    case "--warmup": warmup = Int(value) ?? warmup
    case "--cpu": workerCPU = Int(value) ?? workerCPU
    case "--backend-cpu": backendCPU = Int(value) ?? backendCPU
    case "--out": outPath = value
    default:
        FileHandle.standardError.write("unknown option \(flag)\n".data(using: .utf8)!)
        exit(2)
    }
}

// Counters the hook writes: [0] allocations on the worker core, [1] on other threads.
// Allocated before the hook is installed; the hook itself allocates nothing.
let counts = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)
counts.initialize(repeating: 0, count: 2)
let watchedCPU = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
watchedCPU.initialize(to: Int32(workerCPU))

/// True when the calling thread may run only on the watched core (sched_getaffinity).
@inline(never)
func onWatchedCore() -> Bool {
    var cpus: (Int32, Int32) = (-1, -1)
    let n = withUnsafeMutableBytes(of: &cpus) { raw in
        ferry_allowed_cpus(raw.baseAddress!.assumingMemoryBound(to: Int32.self), 2)
    }
    return n == 1 && cpus.0 == watchedCPU.pointee
}

let hook: MallocInterposerSwift.AllocationHook = { _ in
    if onWatchedCore() {
        bump(counts, 1)
    } else {
        bump(counts + 1, 1)
    }
}

@inline(__always)
func bump(_ p: UnsafeMutablePointer<UInt64>, _ v: UInt64) {
    // Relaxed is enough: read after the measured window, once every thread has been joined
    // or quiesced by the hook's removal.
    ferry_store_relaxed_u64(p, ferry_load_relaxed_u64(p) &+ v)
}

func emit(_ result: [String: Any], ok: Bool) -> Never {
    if let data = try? JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys]) {
        let text = String(decoding: data, as: UTF8.self)
        print(text)
        if let outPath { _ = BenchFiles.write(outPath, text + "\n") }
    }
    exit(ok ? 0 : 1)
}

// 1. The hook works: a thread pinned to the worker core makes 10 allocations.
MallocInterposerSwift.initialize()
MallocInterposerSwift.setAllocationHook(hook)
MallocInterposerSwift.hook()
// The pointers escape to this table, so the optimizer cannot drop the malloc/free pairs.
let probeSink = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 10)
probeSink.initialize(repeating: nil, count: 10)
var probeThread = pthread_t()
pthread_create(&probeThread, nil, { _ in
    _ = ferry_pin_current_thread(watchedCPU.pointee)
    for i in 0..<10 { probeSink[i] = malloc(64 + i) }
    return nil
}, nil)
pthread_join(probeThread, nil)
for i in 0..<10 { free(probeSink[i]) }
MallocInterposerSwift.unhook()
let probeCount = ferry_load_relaxed_u64(counts)
guard probeCount >= 10 else {
    emit(["ok": false, "error": "the malloc hook did not see 10 allocations on a thread pinned to core \(workerCPU) (saw \(probeCount)): is libMallocInterposerSwift.so preloaded?"], ok: false)
}
counts[0] = 0
counts[1] = 0

// 2. A backend: dpdk-testpmd's net_vhost in io mode on the backend core.
if let reason = TestpmdBackend.skipReason() {
    emit(["ok": false, "error": "cannot run: \(reason)"], ok: false)
}
let dir = "/tmp/ferry-alloc-\(getpid())"
BenchFiles.makeDirectory(dir)
let socket = dir + "/vhost.sock"
var options = TestpmdOptions(vhostSockets: [socket])
options.cores = "\(backendCPU)"
options.logVhostMessages = false
let backend: TestpmdBackend
do {
    backend = try TestpmdBackend(options: options, workDir: dir)
    try backend.waitForSockets(timeoutMs: 30_000)
} catch {
    emit(["ok": false, "error": "backend: \(error)"], ok: false)
}

// 3. Ferry in-process, exactly as `ferry run` builds it.
let text = """
port.0.path = \(socket)
fwd = io
burst = 32
tx_first = 1
cores = \(workerCPU)
"""
let config: FerryConfiguration
do { config = try ConfigLoader.parse(text: text, file: "alloc-check.conf", overrides: []) } catch {
    emit(["ok": false, "error": "config: \(error)"], ok: false)
}
let runtime = FerryRuntime(config: config)
runtime.handleSignals = false
runtime.output = { _ in }
let runError = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
runError.initialize(to: 0)
final class RuntimeBox: @unchecked Sendable {
    let runtime: FerryRuntime
    init(_ r: FerryRuntime) { runtime = r }
}
let box = Unmanaged.passRetained(RuntimeBox(runtime)).toOpaque()
var runThread = pthread_t()
pthread_create(&runThread, nil, { arg in
    let r = Unmanaged<RuntimeBox>.fromOpaque(arg!).takeRetainedValue().runtime
    do { _ = try r.run() } catch { ferry_store_release_u8(runError, 1) }
    return nil
}, box)

func packets() -> UInt64 { runtime.snapshot()?.ports.first?.rxPackets ?? 0 }

// Warm-up: forwarding has started and run for `warmup` seconds.
let startWait = ferry_monotonic_ns()
while packets() == 0 {
    if ferry_load_acquire_u8(runError) != 0 || ferry_monotonic_ns() - startWait > 20_000_000_000 {
        runtime.requestStop()
        pthread_join(runThread, nil)
        backend.kill()
        emit(["ok": false, "error": "Ferry did not forward within 20 s"], ok: false)
    }
    usleep(10_000)
}
sleep(UInt32(warmup))

/// Threads of this process that may run only on `cpu`, from /proc/self/task/*/status.
func threadsPinned(to cpu: Int) -> [String] {
    var tids: [String] = []
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return [] }
    for tid in names {
        guard let status = BenchFiles.read("/proc/self/task/\(tid)/status") else { continue }
        for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed_list:") {
            if line.split(separator: "\t").last.map(String.init) == "\(cpu)" { tids.append(tid) }
        }
    }
    return tids
}
let pinned = threadsPinned(to: workerCPU)

// 4. The measured window.
let p0 = packets()
MallocInterposerSwift.reset()
MallocInterposerSwift.hook()
let t0 = ferry_monotonic_ns()
sleep(UInt32(seconds))
MallocInterposerSwift.unhook()
let t1 = ferry_monotonic_ns()
let p1 = packets()
let stats = MallocInterposerSwift.getStatistics()
let workerMallocs = ferry_load_relaxed_u64(counts)
let otherMallocs = ferry_load_relaxed_u64(counts + 1)

runtime.requestStop()
pthread_join(runThread, nil)
_ = try? backend.stop()
ProcessSpawn.removeDirectory(dir)

let forwarded = p1 &- p0
let ok = workerMallocs == 0 && forwarded > 0 && pinned.count == 1
var result: [String: Any] = [
    "ok": ok,
    "seconds": Double(t1 - t0) / 1e9,
    "warmup_seconds": warmup,
    "packets_forwarded": Int(forwarded),
    "worker_threads_pinned": pinned.count,
    "worker_mallocs": Int(workerMallocs),
    "worker_mallocs_per_packet": forwarded > 0 ? Double(workerMallocs) / Double(forwarded) : -1.0,
    "other_thread_mallocs": Int(otherMallocs),
    "process_mallocs": stats.mallocCount,
    "hook_probe_mallocs": Int(probeCount),
]
if pinned.count != 1 {
    result["error"] = "expected exactly one thread pinned to core \(workerCPU) (Ferry's worker), found \(pinned.count)"
} else if forwarded == 0 {
    result["error"] = "no packets forwarded in the window"
} else if workerMallocs > 0 {
    result["error"] = "Ferry's forwarding loop allocated \(workerMallocs) times for \(forwarded) packets"
}
emit(result, ok: ok)
