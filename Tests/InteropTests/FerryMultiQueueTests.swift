import XCTest
import FerryConfig
import FerryTestSupport
import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Multi-queue against dpdk-testpmd: Ferry enables its pairs through the emulated control
/// queue (MQ_VQ_PAIRS_SET → SET_VRING_ENABLE per pair) and every queue carries traffic.
final class FerryMultiQueueTests: InteropTestCase {
    func testTwoQueuePairsAllCarryTraffic() throws { try checkQueues(2, packed: false) }
    func testFourQueuePairsAllCarryTraffic() throws { try checkQueues(4, packed: false) }
    func testTwoQueuePairsOnPackedRingsAllCarryTraffic() throws { try checkQueues(2, packed: true) }
    func testFourQueuePairsOnPackedRingsAllCarryTraffic() throws { try checkQueues(4, packed: true) }

    private func checkQueues(_ queues: Int, packed: Bool) throws {
        let paths = try startBackend(sockets: 2, options: { $0.queues = queues })
        let packedArgs = packed ? ["port.0.packed_vq=1", "port.1.packed_vq=1"] : []
        let summary = try runFerry(paths: paths, extra: ["port.0.queues=\(queues)", "port.1.queues=\(queues)", "duration=2"] + packedArgs)
        _ = try XCTUnwrap(backend).stop()
        XCTAssertEqual(summary.streams.count, 2 * queues)
        for s in summary.streams {
            XCTAssertGreaterThan(s.rxPackets, 0, "stream \(s.rxPort)/\(s.rxQueue) -> \(s.txPort)/\(s.txQueue) received nothing")
            XCTAssertGreaterThan(s.txPackets, 0, "stream \(s.rxPort)/\(s.rxQueue) -> \(s.txPort)/\(s.txQueue) sent nothing")
        }
        // testpmd's log shows the pairs enabled one by one after DRIVER_OK.
        let enables = try XCTUnwrap(backend).log.components(separatedBy: "\n").filter { $0.contains("set queue enable: 1") }
        XCTAssertGreaterThanOrEqual(enables.count, 2 * 2 * queues, "every vring of every pair should be enabled")
    }
}

/// Shared set-up for tests that run Ferry in-process against a real dpdk-testpmd.
class InteropTestCase: XCTestCase {
    var workDir = ""
    var backend: TestpmdBackend?

    override func setUpWithError() throws {
        try requireRealPeer(TestpmdBackend.skipReason())
        workDir = try ProcessSpawn.makeTemporaryDirectory(prefix: "ferry-interop-")
    }

    override func tearDown() {
        backend?.kill()
        backend = nil
        if !workDir.isEmpty { ProcessSpawn.removeDirectory(workDir) }
    }

    func socketPaths(_ count: Int) -> [String] { (0..<count).map { "\(workDir)/vhost\($0).sock" } }

    /// Starts testpmd serving (or, in client mode, connecting to) the given sockets. With
    /// `--no-flush-rx`, so frames Ferry sends before testpmd's forwarding starts are kept.
    @discardableResult
    func startBackend(sockets: Int, options tweak: (inout TestpmdOptions) -> Void = { _ in }) throws -> [String] {
        let paths = socketPaths(sockets)
        var options = TestpmdOptions(vhostSockets: paths)
        options.extraTestpmdArgs = ["--no-flush-rx"]
        tweak(&options)
        let testpmd = try TestpmdBackend(options: options, workDir: workDir)
        backend = testpmd
        if !options.clientMode {
            try testpmd.waitForSockets(timeoutMs: 20_000)
            XCTAssertTrue(testpmd.waitForLog("testpmd> ", timeoutMs: 20_000), "testpmd never reached its prompt")
        }
        return paths
    }

    func configuration(paths: [String], extra: [String]) throws -> FerryConfiguration {
        var text = ""
        for (i, p) in paths.enumerated() { text += "port.\(i).path = \(p)\n" }
        let core = sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1 ? 1 : 0
        text += "fwd = io\ntx_first = 1\ncores = \(core)\nduration = 2\n"
        return try ConfigLoader.parse(text: text, file: "interop.conf", overrides: extra)
    }

    func makeRuntime(paths: [String], extra: [String]) throws -> FerryRuntime {
        let runtime = FerryRuntime(config: try configuration(paths: paths, extra: extra))
        runtime.handleSignals = false
        runtime.output = { _ in }
        return runtime
    }

    func runFerry(paths: [String], extra: [String]) throws -> RunSummary {
        try makeRuntime(paths: paths, extra: extra).run()
    }

    /// Runs Ferry on a thread of its own; `finish()` stops it and returns its summary.
    final class Background: @unchecked Sendable {
        let runtime: FerryRuntime
        private var result: Result<RunSummary, Error>?
        private let done = DispatchSemaphore(value: 0)

        init(_ runtime: FerryRuntime) {
            self.runtime = runtime
            let thread = Thread { [self] in
                result = Result { try runtime.run() }
                done.signal()
            }
            thread.start()
        }

        /// Whether `run()` has returned (it should not have, mid-test).
        var hasReturned: Bool {
            if done.wait(timeout: .now()) == .success { done.signal(); return true }
            return false
        }

        func finish(timeout: TimeInterval = 30) throws -> RunSummary {
            runtime.requestStop()
            guard done.wait(timeout: .now() + timeout) == .success else {
                throw TestpmdError("Ferry did not stop within \(timeout) s")
            }
            return try XCTUnwrap(result).get()
        }
    }

    /// Polls `condition` on Ferry's snapshot every 20 ms until it holds or `timeout` passes.
    func waitFor(_ runtime: FerryRuntime, timeout: TimeInterval, _ what: String,
                 _ condition: (RunSummary) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = runtime.snapshot(), condition(s) { return true }
            usleep(20_000)
        }
        XCTFail("timed out after \(timeout) s waiting for \(what); last snapshot: \(String(describing: runtime.snapshot()?.ports))")
        return false
    }
}
