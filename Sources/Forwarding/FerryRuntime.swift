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
/// The control thread (the caller of `run`) never touches a ring while workers run; it sleeps
/// in `ControlEvents` until a backend hangs up or comes back, a timer or a signal is due, or
/// another thread asks for something, then acts and prints stats.
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
    private let growRequest: UnsafeMutablePointer<UInt8>
    /// Wakes the control thread for `requestStop`, `requestPoolGrowth` and the pool's low water.
    private let wake: EventFD?
    /// While forwarding: builds a summary from the workers' published counters (under
    /// `snapshotLock`). Afterwards, `latest` holds the final summary.
    private var liveSummary: (() -> RunSummary)?
    private var latest: RunSummary?
    /// How many times the control thread woke up during `run`: it sleeps until there is work,
    /// so this stays small on a quiet run (for tests and diagnostics).
    public private(set) var controlWakeups = 0

    public init(config: FerryConfiguration) {
        self.config = config
        stopFlag = .allocate(capacity: 1)
        stopFlag.initialize(to: 0)
        externalStop = .allocate(capacity: 1)
        externalStop.initialize(to: 0)
        snapshotLock = .allocate(capacity: 1)
        pthread_mutex_init(snapshotLock, nil)
        growRequest = .allocate(capacity: 1)
        growRequest.initialize(to: 0)
        wake = try? EventFD.make()
    }

    deinit {
        stopFlag.deallocate()
        externalStop.deallocate()
        pthread_mutex_destroy(snapshotLock)
        snapshotLock.deallocate()
        growRequest.deallocate()
        wake?.close()
    }

    /// The counters and link states now, as the workers last published them (every few
    /// bursts), from any thread; the final summary once `run` has stopped; nil before
    /// forwarding starts. Built on the caller's thread, so asking costs the control thread
    /// nothing. For tests and monitoring.
    public func snapshot() -> RunSummary? {
        pthread_mutex_lock(snapshotLock); defer { pthread_mutex_unlock(snapshotLock) }
        return liveSummary?() ?? latest
    }

    private func publishSnapshot(live: (() -> RunSummary)?, latest summary: RunSummary?) {
        pthread_mutex_lock(snapshotLock); defer { pthread_mutex_unlock(snapshotLock) }
        liveSummary = live
        latest = summary
    }

    /// Asks a running `run()` to stop, from any thread.
    public func requestStop() {
        ferry_store_release_u8(externalStop, 1)
        wake?.signal()
    }

    /// Runs to completion and returns the summary. Throws on a start-up failure (a missing
    /// backend names its path) before anything forwards.
    public func run() throws -> RunSummary {
        if handleSignals { blockStopSignals() }
        signal(SIGPIPE, SIG_IGN)

        let dataRoom = PacketPool.defaultDataRoom
        try Self.checkTxPackets(config.txPackets, dataRoom: dataRoom)
        let queueCounts = Set(config.ports.map(\.queues))
        guard queueCounts.count == 1, let queues = queueCounts.first else {
            throw RuntimeError.config("every port must have the same number of queues (as testpmd's --rxq/--txq)")
        }

        let workerCount = min(queues, config.cores.map { max(1, $0.count) } ?? queues)
        let initialBuffers = bufferCount(queues: queues, workers: workerCount)
        let memory = try SharedMemory(size: memoryBytes(queues: queues, workers: workerCount),
                                      reserve: 8 * memoryBytes(queues: queues, workers: workerCount))

        // Rings first, then the pool, which takes the rest of the memory so that it can grow
        // in place when the memory grows.
        var ports: [Port] = []
        for pc in config.ports {
            ports.append(try Port(config: pc, memory: memory, peerMAC: config.ethPeer(port: pc.index).octets))
        }
        let pool = try PacketPool(memory: memory, count: initialBuffers)
        // Worker caches give their buffers back to the pool as they go, and the rings live in
        // the shared memory: both must outlive the workers and ports, on every exit path.
        defer { withExtendedLifetime((memory, pool)) {} }
        for port in ports { try port.prepare(burst: config.burst, dataRoom: dataRoom, maxFrameLength: config.maxPacketLength) }

        var setupCache = pool.makeCache(capacity: 1024)
        defer { setupCache.release() }
        for port in ports { try port.start(cache: &setupCache) }
        setupCache.flush()

        // Streams, as testpmd builds them: for each queue, each port forwards to its peer.
        // Every stream of queue q goes to worker q % workers, so each TX queue has one owner.
        let node = CorePlacement.portNode()
        let cpus = try CorePlacement.assign(workers: workerCount, requested: config.cores, node: node)
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
                let segments = config.txPackets.count > 1 ? config.txPackets : [frame.count]
                let template = UDPTemplate.storage(frame: frame, segments: segments)
                templates.append(template)
                let w = q % workerCount
                let slot = streamIndex.count
                streamsByWorker[w].append(Stream(
                    rxPort: port.index, rxQueueIndex: q, txPort: peer.index, txQueueIndex: q,
                    rx: port.rxQueues[q], tx: peer.txQueues[q], rxLink: port.link, txLink: peer.link,
                    txPortMAC: peer.macBytes, txPeerMAC: peer.peerMacBytes,
                    template: template, templateLength: frame.count, templateSegments: segments.count,
                    published: PublishedCounters(slot: published + slot * PublishedCounters.stride)))
                streamIndex.append((w, streamsByWorker[w].count - 1, port.index, q, peer.index, q))
            }
        }

        // stats_json is opened now, so a bad path fails before forwarding, not after it.
        var jsonFile: UnsafeMutablePointer<FILE>?
        if let path = config.statsJSON {
            guard let f = fopen(path, "w") else {
                throw RuntimeError.config("stats_json: cannot write \(path): \(String(cString: strerror(errno)))")
            }
            jsonFile = f
        }
        defer { if let jsonFile { fclose(jsonFile) } }

        ferry_store_release_u8(stopFlag, 0)
        var workers: [Worker] = []
        // Should a later worker fail to start, the earlier ones are stopped and joined before
        // the memory they use is released.
        defer {
            if !workers.isEmpty {
                ferry_store_release_u8(stopFlag, 1)
                for worker in workers { worker.join() }
            }
        }
        for w in 0..<workerCount {
            let worker = Worker(id: w, cpu: cpus[w], mode: config.fwd, burst: config.burst, txFirst: config.txFirst,
                                interruptMode: config.rxMode == .interrupt,
                                streams: streamsByWorker[w], cache: pool.makeCache(), stopFlag: stopFlag)
            try worker.start()
            workers.append(worker)
            FerryLog.info("worker \(w) on core \(cpus[w]): \(streamsByWorker[w].count) stream(s), \(config.fwd.rawValue) mode, burst \(config.burst), rx_mode \(config.rxMode.rawValue)")
        }

        usleep(1000)
        for worker in workers where worker.pinError != 0 {
            FerryLog.warning("worker \(worker.id): cannot pin to core \(worker.cpu): \(String(cString: strerror(worker.pinError)))")
        }

        let startNs = ferry_monotonic_ns()
        let summary = { (elapsed: Double) -> RunSummary in
            Self.summarize(ports: ports, workers: workers, streamIndex: streamIndex, seconds: elapsed)
        }
        publishSnapshot(live: { summary(Double(ferry_monotonic_ns() - startNs) / 1e9) }, latest: nil)
        // The live summary reads the ports and workers from other threads: it goes before they
        // are torn down, on every path.
        defer { publishSnapshot(live: nil, latest: snapshot()) }
        let control = ControlEvents(wake: wake, handleSignals: handleSignals)
        if let wake { pool.armLowWater(below: pool.count / 8, event: wake) }
        let endNs: UInt64? = config.duration > 0 ? startNs + UInt64(config.duration * 1e9) : nil
        var lastStats = startNs
        var lastSummary = summary(0)
        controlWakeups = 0
        while true {
            if ferry_load_acquire_u8(externalStop) != 0 { break }
            var now = ferry_monotonic_ns()
            if let endNs, now >= endNs { break }
            let woken = control.wait(
                linkFDs: ports.compactMap { p in p.linkFileDescriptor.map { (p.index, $0) } },
                listenerFDs: ports.compactMap { p in p.reconnectFileDescriptor.map { (p.index, $0) } },
                timeoutMs: Self.timeoutMs(until: nextDeadline(ports: ports, endNs: endNs, lastStats: lastStats, now: now),
                                          now: now))
            controlWakeups += 1
            if woken.stopSignal != 0 {
                FerryLog.info("signal \(woken.stopSignal == SIGINT ? "SIGINT" : "SIGTERM"): stopping")
                break
            }
            if ferry_load_acquire_u8(externalStop) != 0 { break }
            now = ferry_monotonic_ns()
            if let endNs, now >= endNs { break }
            var wentDown = false
            for port in ports where port.checkLink(hungUp: woken.hungUp.contains(port.index)) { wentDown = true }
            if wentDown { quiesce(workers) }
            for port in ports where port.reconnectDue(nowNs: now, connectable: woken.connectable.contains(port.index)) {
                port.attemptReconnect(nowNs: now, pool: pool)
            }
            if ferry_load_acquire_u8(growRequest) != 0 || pool.available < pool.count / 8 {
                ferry_store_release_u8(growRequest, 0)
                growPool(pool, ports: ports)
                if let wake, !growthFailed { pool.armLowWater(below: pool.count / 8, event: wake) }
            }
            if config.statsPeriod > 0 && now - lastStats >= UInt64(config.statsPeriod) * 1_000_000_000 {
                let current = summary(Double(now - startNs) / 1e9)
                printPeriodic(current, previous: lastSummary, seconds: Double(now - lastStats) / 1e9)
                lastSummary = current
                lastStats = now
            }
        }

        // Stop: workers finish their burst and publish, then each device stops with
        // GET_VRING_BASE, and the final stats print.
        publishSnapshot(live: nil, latest: summary(Double(ferry_monotonic_ns() - startNs) / 1e9))
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
        publishSnapshot(live: nil, latest: result)
        output(StatsReport.final(result))
        if let jsonFile {
            _ = result.json().withCString { fputs($0, jsonFile) }
        }
        workers.removeAll()
        ports.removeAll()
        return result
    }

    /// Asks a running `run()` to grow the buffer pool now, as it does by itself when fewer than
    /// an eighth of the buffers are free.
    public func requestPoolGrowth() {
        ferry_store_release_u8(growRequest, 1)
        wake?.signal()
    }

    /// The next time the control thread must act without being woken: the end of `duration`,
    /// the next `stats_period` print, the next client-mode reconnect attempt, or a short tick
    /// for a server-mode port with no listening socket to watch. nil: nothing is timed.
    private func nextDeadline(ports: [Port], endNs: UInt64?, lastStats: UInt64, now: UInt64) -> UInt64? {
        var next = endNs
        func consider(_ t: UInt64) { next = min(next ?? t, t) }
        if config.statsPeriod > 0 { consider(lastStats + UInt64(config.statsPeriod) * 1_000_000_000) }
        for port in ports {
            guard let due = port.nextReconnectNs else { continue }
            if !port.config.server {
                consider(due)
            } else if port.reconnectFileDescriptor == nil {
                consider(now + UInt64(ControlEvents.fallbackTickMs) * 1_000_000)
            }
        }
        return next
    }

    /// poll(2)'s timeout for `deadline`: rounded up, so the wait never ends before it; -1 for
    /// none.
    static func timeoutMs(until deadline: UInt64?, now: UInt64) -> Int32 {
        guard let deadline else { return -1 }
        guard deadline > now else { return 0 }
        let ns = deadline - now
        return Int32(min(ns / 1_000_000 + (ns % 1_000_000 == 0 ? 0 : 1), UInt64(Int32.max)))
    }

    /// Memory-table updates done (each one a SET_MEM_TABLE to every connected backend).
    public private(set) var memoryUpdates = 0
    private var growthFailed = false

    /// Grows the pool by half: a new memory segment, SET_MEM_TABLE to every connected
    /// backend (pairs paused around it, as the seed's memory event callback does), and only
    /// then the new buffers go into the pool, so no backend sees an address it cannot map.
    private func growPool(_ pool: PacketPool, ports: [Port]) {
        guard !growthFailed else { return }
        do {
            let added = try pool.grow(buffers: max(1024, pool.count / 2))
            for port in ports where port.isLinkUp {
                do {
                    try port.device.updateMemoryTable()
                } catch {
                    FerryLog.warning("port \(port.index) (\(port.config.path)): memory table update failed: \(error)")
                }
            }
            pool.release(added)
            memoryUpdates += 1
            FerryLog.info("buffer pool grew by \(added.count) buffers to \(pool.count); memory table sent again (\(pool.count * pool.stride / 1024 / 1024) MiB of buffers)")
        } catch {
            growthFailed = true
            FerryLog.warning("buffer pool cannot grow: \(error)")
        }
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

    private static func summarize(ports: [Port], workers: [Worker],
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

    /// Shared memory for the rings plus the buffer pool, with room to spare.
    private func memoryBytes(queues: Int, workers: Int) -> Int {
        var bytes = 1 << 20
        for p in config.ports {
            let ring = max(SplitRing.memorySize(queueSize: p.queueSize), PackedRing.memorySize(queueSize: p.queueSize))
            // Data rings, plus a control ring and a shadow control ring with their buffers.
            bytes += 2 * p.queues * (ring + SplitRingLayout.alignment) + 64 * 1024
            // INDIRECT_DESC tables for the TX rings, when the port may accept the feature.
            if p.indirect { bytes += VirtioUserDevice.indirectTableBytes(queueSize: p.queueSize, queuePairs: p.queues) }
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
        var set = ControlEvents.stopSignals
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }
}

extension FerryRuntime {
    /// `txpkts`: a frame of up to `FerryConfiguration.largestFrame` bytes, each segment fitting one
    /// buffer's data room (testpmd's `set txpkts` has the same rule against its mbuf size).
    /// Several segments make a chained frame; its head must hold the Ethernet header and the
    /// whole frame the UDP template.
    static func checkTxPackets(_ segments: [Int], dataRoom: Int) throws {
        let total = segments.reduce(0, +)
        guard total <= FerryConfiguration.largestFrame else {
            throw RuntimeError.config("txpkts: \(total) bytes exceed the largest frame, \(FerryConfiguration.largestFrame) bytes")
        }
        for s in segments where s > dataRoom {
            throw RuntimeError.config("txpkts: a \(s)-byte segment does not fit one \(dataRoom)-byte buffer")
        }
        if segments.count > 1 {
            guard segments.count <= TxQueue.maxSegments else {
                throw RuntimeError.config("txpkts: at most \(TxQueue.maxSegments) segments")
            }
            guard segments.allSatisfy({ $0 > 0 }), segments[0] >= 14, total >= UDPTemplate.minimumLength else {
                throw RuntimeError.config("txpkts: a segmented frame needs a first segment of at least 14 bytes and \(UDPTemplate.minimumLength) bytes in all")
            }
        }
    }
}

