import CFerry
import FerryConfig
import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// A forwarding worker: one pinned thread running burst loops over its streams.
///
/// Everything the loop touches is worker-owned: its streams, their queues, its buffer cache
/// and its counters. The control thread talks to it through two bytes (stop, and each port's
/// link flag) and reads its published counters.
final class Worker: @unchecked Sendable {
    let id: Int
    let cpu: Int
    let mode: ForwardingMode
    let burst: Int
    let txFirst: Int
    /// `rx_mode=interrupt`: sleep on the RX call eventfds once every queue has been idle.
    let interruptMode: Bool
    /// Consecutive empty loops before an interrupt-mode worker sleeps: long enough that a
    /// steady flow never pays for arming notifications, short enough to idle within ~1 ms.
    static let idleLoopsBeforeSleep = 4096
    /// The longest sleep, so the worker still sees a stop or a link change promptly.
    static let sleepTimeoutMs: Int32 = 100
    /// Sleeps taken, for tests and stats.
    private(set) var sleeps = 0
    let streams: UnsafeMutablePointer<Stream>
    let streamCount: Int
    let cache: UnsafeMutablePointer<PoolCache>
    let stopFlag: UnsafeMutablePointer<UInt8>
    /// Advanced by the worker each time it publishes (every 256 loops): once it has moved
    /// twice, the worker has run a whole loop since the control thread last looked, so it has
    /// seen any link change made before.
    let heartbeat: UnsafeMutablePointer<UInt64>
    let bufs: UnsafeMutablePointer<UInt32>
    let lengths: UnsafeMutablePointer<UInt32>
    private var thread: pthread_t?
    /// Set by the worker when pinning failed (errno), for the control thread to log.
    private(set) var pinError: Int32 = 0

    init(id: Int, cpu: Int, mode: ForwardingMode, burst: Int, txFirst: Int, interruptMode: Bool = false,
         streams: [Stream], cache: PoolCache, stopFlag: UnsafeMutablePointer<UInt8>) {
        self.id = id
        self.interruptMode = interruptMode
        self.cpu = cpu
        self.mode = mode
        self.burst = burst
        self.txFirst = txFirst
        streamCount = streams.count
        self.streams = .allocate(capacity: max(1, streams.count))
        self.streams.initialize(from: streams, count: streams.count)
        self.cache = .allocate(capacity: 1)
        self.cache.initialize(to: cache)
        self.stopFlag = stopFlag
        heartbeat = .allocate(capacity: 1)
        heartbeat.initialize(to: 0)
        bufs = .allocate(capacity: burst)
        lengths = .allocate(capacity: burst)
    }

    deinit {
        cache.pointee.release()
        cache.deinitialize(count: 1)
        cache.deallocate()
        streams.deinitialize(count: streamCount)
        streams.deallocate()
        bufs.deallocate()
        lengths.deallocate()
        heartbeat.deallocate()
    }

    var beat: UInt64 { ferry_load_relaxed_u64(heartbeat) }

    func start() throws {
        let context = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let worker = Unmanaged<Worker>.fromOpaque(arg!).takeRetainedValue()
            worker.main()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Worker>.fromOpaque(context).release()
            throw RuntimeError.thread(errno: rc)
        }
        thread = tid
    }

    func join() {
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }

    /// Reads a stream's counters as last published.
    func counters(stream: Int) -> StreamCounters { streams[stream].published.read() }

    private func main() {
        let rc = ferry_pin_current_thread(Int32(cpu))
        if rc != 0 { pinError = rc }
        switch mode {
        case .io: run(IOEngine.self)
        case .mac: run(MacEngine.self)
        case .macswap: run(MacSwapEngine.self)
        case .rxonly: run(RxOnlyEngine.self)
        case .txonly: run(TxOnlyEngine.self)
        }
    }

    /// The burst loop, specialized per engine.
    private func run<E: ForwardingEngine>(_ engine: E.Type) {
        let streams = self.streams
        let count = streamCount
        let cache = self.cache
        let bufs = self.bufs
        let lengths = self.lengths
        let burst = self.burst
        let stop = stopFlag

        var iteration: UInt32 = 0
        var idleLoops = 0
        let canSleep = interruptMode && E.receives
        while ferry_load_acquire_u8(stop) == 0 {
            var s = 0
            var moved = 0
            while s < count {
                let stream = streams + s
                s &+= 1
                guard linkUp(stream) else {
                    stream.pointee.wasUp = false
                    continue
                }
                if !stream.pointee.wasUp {
                    stream.pointee.wasUp = true
                    sendTxFirst(stream, bufs: bufs, lengths: lengths, burst: burst, cache: cache)
                }
                moved &+= forward(stream, E.self, bufs: bufs, lengths: lengths, burst: burst, cache: cache)
            }
            iteration &+= 1
            if iteration & 255 == 0 { publish() }
            if canSleep {
                idleLoops = moved == 0 ? idleLoops &+ 1 : 0
                if idleLoops >= Self.idleLoopsBeforeSleep {
                    sleepUntilTraffic()
                    idleLoops = 0
                }
            }
        }
        publish()
    }

    /// testpmd's `--tx-first`: bursts of txonly frames on the stream's TX queue.
    @inline(never)
    private func sendTxFirst(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                             lengths: UnsafeMutablePointer<UInt32>, burst: Int, cache: UnsafeMutablePointer<PoolCache>) {
        for _ in 0..<txFirst {
            let n = TxOnlyEngine.produce(stream, bufs: bufs, lengths: lengths, max: burst, cache: &cache.pointee)
            stream.pointee.counters.generated &+= UInt64(n)
            transmitBurst(stream, bufs: bufs, lengths: lengths, count: n, cache: cache)
        }
    }

    @inline(__always)
    private func linkUp(_ stream: UnsafeMutablePointer<Stream>) -> Bool {
        ferry_load_acquire_u8(stream.pointee.rxLink) != 0 && ferry_load_acquire_u8(stream.pointee.txLink) != 0
    }

    /// Forwards one burst on `stream`; returns how many frames it moved.
    @inline(__always)
    private func forward<E: ForwardingEngine>(_ stream: UnsafeMutablePointer<Stream>, _ engine: E.Type,
                                              bufs: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                                              burst: Int, cache: UnsafeMutablePointer<PoolCache>) -> Int {
        let n: Int
        if E.receives {
            n = stream.pointee.rx.pointee.receive(bufs: bufs, lengths: lengths, max: burst, cache: &cache.pointee,
                                                  refill: false)
            guard n > 0 else {
                stream.pointee.rx.pointee.replenish(cache: &cache.pointee)
                return 0
            }
            var bytes: UInt64 = 0
            for i in 0..<n { bytes &+= UInt64(lengths[i]) }
            stream.pointee.counters.rxPackets &+= UInt64(n)
            stream.pointee.counters.rxBytes &+= bytes
        } else {
            n = TxOnlyEngine.produce(stream, bufs: bufs, lengths: lengths, max: burst, cache: &cache.pointee)
            guard n > 0 else { return 0 }
        }
        E.process(stream, bufs: bufs, lengths: lengths, count: n, cache: &cache.pointee)
        if E.transmits {
            transmitBurst(stream, bufs: bufs, lengths: lengths, count: n, cache: cache)
        } else {
            for i in 0..<n { cache.pointee.freeChain(bufs[i]) }
        }
        // After the frames are out (see `RxQueue.receive`): the buffers TX reclaimed are
        // back in the cache by now.
        if E.receives { stream.pointee.rx.pointee.replenish(cache: &cache.pointee) }
        return n
    }

    /// Interrupt mode: asks every RX ring for a notification and sleeps on their call
    /// eventfds until one fires or the timeout passes (DTS's "interrupt mode" scenario).
    /// The used rings are checked after arming (virtio 1.2 §2.7.10), so a frame that landed
    /// in between is never slept on.
    @inline(never)
    private func sleepUntilTraffic() {
        var fds: [pollfd] = []
        var pending = false
        for s in 0..<streamCount where ferry_load_acquire_u8(streams[s].rxLink) != 0 {
            let rx = streams[s].rx
            if rx.pointee.ring.enableInterrupts() { pending = true }
            fds.append(pollfd(fd: rx.pointee.callFD.fd, events: Int16(POLLIN), revents: 0))
        }
        publish()
        if !pending {
            sleeps += 1
            _ = poll(&fds, nfds_t(fds.count), Self.sleepTimeoutMs)
        }
        for s in 0..<streamCount {
            let rx = streams[s].rx
            _ = rx.pointee.callFD.drain()
            rx.pointee.ring.disableInterrupts()
        }
        publish()
    }

    /// Sends a burst; what does not fit on the ring is dropped and counted, as testpmd does.
    @inline(__always)
    private func transmitBurst(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                               lengths: UnsafeMutablePointer<UInt32>, count n: Int,
                               cache: UnsafeMutablePointer<PoolCache>) {
        guard n > 0 else { return }
        let sent = stream.pointee.tx.pointee.transmit(bufs: bufs, lengths: lengths, count: n, cache: &cache.pointee)
        var bytes: UInt64 = 0
        for i in 0..<sent { bytes &+= UInt64(lengths[i]) }
        stream.pointee.counters.txPackets &+= UInt64(sent)
        stream.pointee.counters.txBytes &+= bytes
        if sent < n {
            stream.pointee.counters.txDropped &+= UInt64(n &- sent)
            for i in sent..<n { cache.pointee.freeChain(bufs[i]) }
        }
    }

    private func publish() {
        ferry_store_relaxed_u64(heartbeat, ferry_load_relaxed_u64(heartbeat) &+ 1)
        for s in 0..<streamCount {
            streams[s].counters.rxErrors = streams[s].rx.pointee.errors
            streams[s].published.publish(streams[s].counters)
        }
    }
}

enum RuntimeError: Error, CustomStringConvertible {
    case thread(errno: Int32)
    case config(String)
    case start(String)

    var description: String {
        switch self {
        case let .thread(e): return "cannot start worker thread: \(String(cString: strerror(e)))"
        case let .config(m): return m
        case let .start(m): return m
        }
    }
}
