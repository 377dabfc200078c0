import XCTest
import Foundation
import FerryConfig
import FerryTestSupport
import Vhost
@testable import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// A fresh socket path under /tmp, unique per test process and call.
func forwardingSocketPath(_ tag: String) -> String {
    forwardingPathCounter += 1
    return "/tmp/ferry-fwd-\(getpid())-\(forwardingPathCounter)-\(tag).sock"
}

/// A fresh non-socket file path under /tmp, unique per test process and call.
func forwardingTempPath(_ tag: String, extension ext: String) -> String {
    forwardingPathCounter += 1
    return "/tmp/ferry-fwd-\(getpid())-\(forwardingPathCounter)-\(tag).\(ext)"
}
nonisolated(unsafe) private var forwardingPathCounter = 0

/// A configuration from `key = value` lines, through the real parser.
func forwardingConfig(_ lines: [String]) throws -> FerryConfiguration {
    try ConfigLoader.parse(text: lines.joined(separator: "\n") + "\n", file: "test.conf", overrides: [])
}

/// Collects `FerryRuntime.output` text; the runtime calls it from its control thread.
final class OutputBox: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""

    func append(_ s: String) {
        lock.lock(); defer { lock.unlock() }
        text += s
    }

    var value: String {
        lock.lock(); defer { lock.unlock() }
        return text
    }
}

/// A runtime with signals off and its output captured.
func makeRuntime(_ config: FerryConfiguration, output: OutputBox) -> FerryRuntime {
    let runtime = FerryRuntime(config: config)
    runtime.handleSignals = false
    runtime.output = { output.append($0) }
    return runtime
}

/// Runs to completion on the calling thread (the configuration must set a duration).
func runToCompletion(_ config: FerryConfiguration) throws -> (summary: RunSummary, output: String) {
    precondition(config.duration > 0, "a blocking run needs a duration")
    let box = OutputBox()
    let summary = try makeRuntime(config, output: box).run()
    return (summary, box.value)
}

struct RunDidNotFinish: Error, CustomStringConvertible {
    var description: String { "the run did not finish in time" }
}

/// A run on its own thread, so the test can act on the doubles while Ferry forwards.
final class BackgroundRun: @unchecked Sendable {
    let runtime: FerryRuntime
    let output = OutputBox()
    private let lock = NSLock()
    private var result: Result<RunSummary, Error>?
    private let finished = DispatchSemaphore(value: 0)

    init(_ config: FerryConfiguration) {
        precondition(config.duration > 0, "background runs keep a duration as a safety cap")
        runtime = makeRuntime(config, output: output)
        let thread = Thread { [self] in
            let r = Result { try runtime.run() }
            lock.lock()
            result = r
            lock.unlock()
            finished.signal()
        }
        thread.start()
    }

    /// Waits for the run to end by itself (its duration), up to `seconds` more.
    func wait(seconds: Double = 10) throws -> RunSummary {
        guard finished.wait(timeout: .now() + seconds) == .success else {
            runtime.requestStop()
            _ = finished.wait(timeout: .now() + 10)
            throw RunDidNotFinish()
        }
        finished.signal()
        lock.lock(); defer { lock.unlock() }
        return try result!.get()
    }

    /// Asks the run to stop now and waits for its summary.
    func stop() throws -> RunSummary {
        runtime.requestStop()
        return try wait()
    }
}

/// Little-endian reads from bytes the double copied out of Ferry's memory.
extension Array where Element == UInt8 {
    func le16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    func le32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(self[at + $1]) << (8 * $1) } }
    func le64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(self[at + $1]) << (8 * $1) } }
}

/// Looks at Ferry's split rings through a device double's mapping of Ferry's memory
/// (virtio 1.2 §2.7: descriptor table of 16-byte entries, avail ring `flags, idx, ring[]`).
struct RingPeek {
    let double: VhostUserDeviceDouble
    let index: UInt32
    let addr: VhostVringAddr
    let queueSize: Int

    init?(_ double: VhostUserDeviceDouble, vring index: UInt32) {
        guard let snapshot = double.vring(index), let addr = snapshot.addr, let num = snapshot.num else { return nil }
        self.double = double
        self.index = index
        self.addr = addr
        queueSize = Int(num)
    }

    /// The driver's avail index as published in shared memory.
    var availIndex: UInt16? {
        double.readGuestMemory(at: addr.availUserAddr + 2, length: 2).map { $0.le16(0) }
    }

    /// Header plus frame of every chain head the driver made available so far (up to a
    /// ring's worth), in avail order. Valid while the driver has not reclaimed them.
    func postedBuffers(count: Int) -> [[UInt8]]? {
        guard count <= queueSize,
              let avail = double.readGuestMemory(at: addr.availUserAddr, length: 4 + 2 * queueSize),
              let desc = double.readGuestMemory(at: addr.descUserAddr, length: 16 * queueSize) else { return nil }
        var out: [[UInt8]] = []
        for slot in 0..<count {
            let head = Int(avail.le16(4 + 2 * slot))
            guard head < queueSize else { return nil }
            let address = desc.le64(16 * head)
            let length = Int(desc.le32(16 * head + 8))
            guard let bytes = double.readGuestMemory(at: address, length: length) else { return nil }
            out.append(bytes)
        }
        return out
    }
}

/// A test case that owns device doubles and stops them (and removes their sockets) after
/// each test.
class DoubleOwningTestCase: XCTestCase {
    private var doubles: [VhostUserDeviceDouble] = []
    private var paths: [String] = []

    func makeDouble(_ tag: String, loopback: Bool = true, queuePairs: Int = 1) throws -> VhostUserDeviceDouble {
        let path = forwardingSocketPath(tag)
        paths.append(path)
        // Several pairs need VIRTIO_NET_F_MQ (bit 22) offered, as a multi-queue vhost backend does.
        let features = VhostUserDeviceDouble.defaultFeatures | (queuePairs > 1 ? 1 << 22 : 0)
        let double = try VhostUserDeviceDouble(listeningAt: path,
                                               configuration: .init(features: features, queueNum: UInt64(2 * queuePairs),
                                                                    loopback: loopback))
        doubles.append(double)
        return double
    }

    /// A file path removed after the test.
    func temporaryFile(_ tag: String, extension ext: String) -> String {
        let path = forwardingTempPath(tag, extension: ext)
        paths.append(path)
        return path
    }

    override func tearDown() {
        for d in doubles { d.stop() }
        doubles = []
        for p in paths { unlink(p) }
        paths = []
        super.tearDown()
    }
}
