import CFerry
import FerryConfig
import Virtio
import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// A Ferry run: sets up shared memory, ports and workers from a configuration, forwards until
/// the duration ends, a signal arrives or `requestStop()` is called, then stops cleanly and
/// reports.
///
/// The control thread (the caller of `run`) never touches a ring while workers run; it reads
/// published counters, watches backends and prints stats.
public final class FerryRuntime: @unchecked Sendable {
    public let config: FerryConfiguration
    /// Block SIGINT and SIGTERM and stop on them (the CLI). Off for in-process tests.
    public var handleSignals = true
    /// Where the periodic and final stats go. Defaults to stdout.
    public var output: (String) -> Void = { text in
        _ = text.withCString { fputs($0, stdout) }
        fflush(stdout)
    }

    private let stopFlag: UnsafeMutablePointer<UInt8>
    private let externalStop: UnsafeMutablePointer<UInt8>
    private let snapshotLock: UnsafeMutablePointer<pthread_mutex_t>
    private var latest: RunSummary?

    public init(config: FerryConfiguration) {
        self.config = config
        stopFlag = .allocate(capacity: 1)
        stopFlag.initialize(to: 0)
        externalStop = .allocate(capacity: 1)
        externalStop.initialize(to: 0)
        snapshotLock = .allocate(capacity: 1)
        pthread_mutex_init(snapshotLock, nil)
    }

    deinit {
        stopFlag.deallocate()
        externalStop.deallocate()
        pthread_mutex_destroy(snapshotLock)
        snapshotLock.deallocate()
    }

    /// The counters and link states as of the last control tick (50 ms), from any thread;
    /// nil before forwarding starts. For tests and monitoring.
    public func snapshot() -> RunSummary? {
        pthread_mutex_lock(snapshotLock); defer { pthread_mutex_unlock(snapshotLock) }
        return latest
    }

    private func publishSnapshot(_ summary: RunSummary) {
        pthread_mutex_lock(snapshotLock); defer { pthread_mutex_unlock(snapshotLock) }
        latest = summary
    }

    /// Asks a running `run()` to stop, from any thread.
    public func requestStop() {
        ferry_store_release_u8(externalStop, 1)
    }

    /// Runs to completion and returns the summary. Throws on a start-up failure (a missing
    /// backend names its path) before anything forwards.
    public func run() throws -> RunSummary {
        if handleSignals { blockStopSignals() }
        signal(SIGPIPE, SIG_IGN)

        let dataRoom = PacketPool.defaultDataRoom
        guard config.txPacketLength <= dataRoom else {
            throw RuntimeError.config("txpkts: \(config.txPacketLength) bytes do not fit one \(dataRoom)-byte buffer; chained TX is not supported yet")
        }
        let queueCounts = Set(config.ports.map(\.queues))
        guard queueCounts.count == 1, let queues = queueCounts.first else {
            throw RuntimeError.config("every port must have the same number of queues (as testpmd's --rxq/--txq)")
        }

        let workerCount = min(queues, config.cores.map { max(1, $0.count) } ?? queues)
        let memory = try SharedMemory(size: memoryBytes(queues: queues, workers: workerCount))
        let pool = try PacketPool(memory: memory, count: bufferCount(queues: queues, workers: workerCount))

        var ports: [Port] = []
        for pc in config.ports {
            let port = try Port(config: pc, memory: memory, peerMAC: config.ethPeer(port: pc.index).octets)
            try port.prepare(burst: config.burst, dataRoom: dataRoom)
            ports.append(port)
        }

        var setupCache = pool.makeCache(capacity: 1024)
        defer { setupCache.release() }
        for port in ports { try port.start(cache: &setupCache) }
        setupCache.flush()

        // Streams, as testpmd builds them: for each queue, each port forwards to its peer.
        // Every stream of queue q goes to worker q % workers, so each TX queue has one owner.
        let node = CorePlacement.portNode()
        let cpus = CorePlacement.assign(workers: workerCount, requested: config.cores, node: node)
        let published = PublishedCounters.allocate(count: ports.count * queues)
        defer { published.deallocate() }
        var templates: [UnsafeMutablePointer<UInt8>] = []
        defer { for t in templates { t.deallocate() } }
        var streamsByWorker = Array(repeating: [Stream](), count: workerCount)
        var streamIndex: [(worker: Int, slot: Int, rxPort: Int, rxQueue: Int, txPort: Int, txQueue: Int)] = []
        for q in 0..<queues {
            for port in ports {
                let peer = ports[config.portTopology.peer(of: port.index, portCount: ports.count)]
                let frame = UDPTemplate.frame(length: max(config.txPacketLength, UDPTemplate.minimumLength),
                                              source: peer.mac, destination: config.ethPeer(port: peer.index).octets)
                let template = UnsafeMutablePointer<UInt8>.allocate(capacity: frame.count)
                template.initialize(from: frame, count: frame.count)
                templates.append(template)
                let w = q % workerCount
                let slot = streamIndex.count
                streamsByWorker[w].append(Stream(
                    rxPort: port.index, rxQueueIndex: q, txPort: peer.index, txQueueIndex: q,
                    rx: port.rxQueues[q], tx: peer.txQueues[q], rxLink: port.link, txLink: peer.link,
                    txPortMAC: peer.macBytes, txPeerMAC: peer.peerMacBytes,
                    template: template, templateLength: frame.count,
                    published: PublishedCounters(slot: published + slot * PublishedCounters.stride)))
                streamIndex.append((w, streamsByWorker[w].count - 1, port.index, q, peer.index, q))
            }
        }

        ferry_store_release_u8(stopFlag, 0)
        var workers: [Worker] = []
        for w in 0..<workerCount {
            let worker = Worker(id: w, cpu: cpus[w], mode: config.fwd, burst: config.burst, txFirst: config.txFirst,
                                interruptMode: config.rxMode == .interrupt,
                                streams: streamsByWorker[w], cache: pool.makeCache(), stopFlag: stopFlag)
            try worker.start()
            workers.append(worker)
            FerryLog.info("worker \(w) on core \(cpus[w]): \(streamsByWorker[w].count) stream(s), \(config.fwd.rawValue) mode, burst \(config.burst), rx_mode \(config.rxMode.rawValue)")
        }

        let startNs = ferry_monotonic_ns()
        let summary = { (elapsed: Double) -> RunSummary in
            self.summarize(ports: ports, workers: workers, streamIndex: streamIndex, seconds: elapsed)
        }
        var lastStats = startNs
        var lastSummary = summary(0)
        while true {
            if waitTick(milliseconds: 50) { break }
            if ferry_load_acquire_u8(externalStop) != 0 { break }
            let now = ferry_monotonic_ns()
            let elapsed = Double(now - startNs) / 1e9
            if config.duration > 0 && elapsed >= config.duration { break }
            var wentDown = false
            for port in ports where port.pollLink() { wentDown = true }
            if wentDown { quiesce(workers) }
            for port in ports where port.reconnectDue(nowNs: now) {
                port.attemptReconnect(nowNs: now)
            }
            publishSnapshot(summary(elapsed))
            if config.statsPeriod > 0 && now - lastStats >= UInt64(config.statsPeriod) * 1_000_000_000 {
                let current = summary(elapsed)
                printPeriodic(current, previous: lastSummary, seconds: Double(now - lastStats) / 1e9)
                lastSummary = current
                lastStats = now
            }
        }

        // Stop: workers finish their burst and publish, then each device stops with
        // GET_VRING_BASE, and the final stats print.
        ferry_store_release_u8(stopFlag, 1)
        for worker in workers { worker.join() }
        let elapsed = Double(ferry_monotonic_ns() - startNs) / 1e9
        let linkAtStop = ports.map(\.isLinkUp)
        for port in ports { port.stop() }
        var result = summary(elapsed)
        for i in result.ports.indices {
            result.ports[i].linkUp = linkAtStop[i]
            result.ports[i].txInFlightAtStop = ports[i].txInFlightAtStop
            result.ports[i].rxUnreadAtStop = ports[i].rxUnreadAtStop
        }
        publishSnapshot(result)
        output(StatsReport.final(result))
        if let path = config.statsJSON { try writeJSON(result, to: path) }
        workers.removeAll()
        ports.removeAll()
        // Worker caches give their buffers back to the pool as they go, and the rings live
        // in the shared memory: both must outlive the workers and ports.
        withExtendedLifetime((memory, pool)) {}
        return result
    }

    /// Waits until every worker has run a whole loop since now, so none is still inside a
    /// burst on a port whose link was just taken down. Bounded: a worker that does not move
    /// within a second is reported and not waited for.
    private func quiesce(_ workers: [Worker]) {
        let start = workers.map(\.beat)
        let deadline = ferry_monotonic_ns() + 1_000_000_000
        while ferry_monotonic_ns() < deadline {
            if zip(workers, start).allSatisfy({ $0.beat &- $1 >= 2 }) { return }
            usleep(100)
        }
        FerryLog.warning("a worker did not finish its loop within 1 s of a link change")
    }

    private func summarize(ports: [Port], workers: [Worker],
                           streamIndex: [(worker: Int, slot: Int, rxPort: Int, rxQueue: Int, txPort: Int, txQueue: Int)],
                           seconds: Double) -> RunSummary {
        var portSummaries = ports.map { PortSummary(port: $0.index, path: $0.config.path, linkUp: $0.isLinkUp, reconnects: $0.reconnects) }
        var streams: [StreamSummary] = []
        for s in streamIndex {
            let c = workers[s.worker].counters(stream: s.slot)
            portSummaries[s.rxPort].rxPackets += c.rxPackets
            portSummaries[s.rxPort].rxBytes += c.rxBytes
            portSummaries[s.rxPort].rxErrors += c.rxErrors
            portSummaries[s.txPort].txPackets += c.txPackets
            portSummaries[s.txPort].txBytes += c.txBytes
            portSummaries[s.txPort].txDropped += c.txDropped
            streams.append(StreamSummary(rxPort: s.rxPort, rxQueue: s.rxQueue, txPort: s.txPort, txQueue: s.txQueue,
                                         rxPackets: c.rxPackets, txPackets: c.txPackets, txDropped: c.txDropped,
                                         generated: c.generated))
        }
        if seconds > 0 {
            for i in portSummaries.indices {
                portSummaries[i].rxPps = Double(portSummaries[i].rxPackets) / seconds
                portSummaries[i].txPps = Double(portSummaries[i].txPackets) / seconds
            }
        }
        return RunSummary(durationSeconds: seconds, ports: portSummaries, streams: streams)
    }

    private func printPeriodic(_ current: RunSummary, previous: RunSummary, seconds: Double) {
        var text = "\nPort statistics ====================================\n"
        for (p, old) in zip(current.ports, previous.ports) {
            let rx = Double(p.rxPackets &- old.rxPackets) / seconds
            let tx = Double(p.txPackets &- old.txPackets) / seconds
            let rxb = Double(p.rxBytes &- old.rxBytes) * 8 / seconds
            let txb = Double(p.txBytes &- old.txBytes) * 8 / seconds
            text += StatsReport.periodic(port: p, rxPps: UInt64(rx), txPps: UInt64(tx), rxBps: UInt64(rxb), txBps: UInt64(txb))
        }
        output(text)
    }

    private func writeJSON(_ summary: RunSummary, to path: String) throws {
        guard let file = fopen(path, "w") else {
            throw RuntimeError.config("stats_json: cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        _ = summary.json().withCString { fputs($0, file) }
    }

    /// Shared memory for the rings plus the buffer pool, with room to spare.
    private func memoryBytes(queues: Int, workers: Int) -> Int {
        var bytes = 1 << 20
        for p in config.ports {
            bytes += 2 * p.queues * (SplitRingLayout.totalSize(queueSize: p.queueSize) + SplitRingLayout.alignment)
        }
        bytes += bufferCount(queues: queues, workers: workers) * (PacketPool.defaultHeadroom + PacketPool.defaultDataRoom)
        return bytes
    }

    /// Enough buffers to fill every RX and TX ring, every worker cache and the tx_first bursts.
    private func bufferCount(queues: Int, workers: Int) -> Int {
        var n = 0
        for p in config.ports { n += 2 * p.queues * p.queueSize }
        n += workers * (512 + 2 * config.burst) + 1024
        // tx_first frames beyond what the TX rings hold are dropped at once, so they need no
        // more buffers than the rings.
        n += min(config.txFirst * config.burst, 2 * (config.ports.map(\.queueSize).max() ?? 256)) * config.ports.count * queues
        return max(4096, n + n / 2)
    }

    // MARK: - Signals

    private func blockStopSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Sleeps one control tick. Returns true when a stop signal arrived.
    private func waitTick(milliseconds: Int) -> Bool {
        if handleSignals {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            sigaddset(&set, SIGTERM)
            var timeout = timespec(tv_sec: 0, tv_nsec: milliseconds * 1_000_000)
            let sig = sigtimedwait(&set, nil, &timeout)
            if sig == SIGINT || sig == SIGTERM {
                FerryLog.info("signal \(sig == SIGINT ? "SIGINT" : "SIGTERM"): stopping")
                return true
            }
            return false
        }
        usleep(UInt32(milliseconds * 1000))
        return false
    }
}
