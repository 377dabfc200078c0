import CFerry
import Vhost
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The latency and start-up traffic generator: a vhost-user DEVICE (the backend side) that a
/// DUT's virtio-user port connects to, exactly as it would to DPDK's net_vhost.
///
/// Two threads:
/// - the control thread accepts connections and answers the vhost-user protocol (Ferry's own
///   codec and socket code from the Vhost module), maps the driver's memory and builds the
///   device side of vring 0 (the DUT's RX) and vring 1 (the DUT's TX);
/// - the datapath thread, pinned to `cpu`, runs `TrafficJob`s: it writes timestamped,
///   sequence-numbered frames into the DUT's RX ring and takes them back from its TX ring.
///
/// They share the rings through a pause handshake: before the control thread touches ring or
/// memory state it clears `ready` and waits until the datapath has acknowledged, so the
/// datapath never reads a ring that is being torn down. Test support, not product.
public final class Generator: @unchecked Sendable {
    /// VERSION_1 | MRG_RXBUF | IN_ORDER | PROTOCOL_FEATURES: what DPDK's net_vhost offers that
    /// the DUTs use, without offloads (this generator computes no checksums) and without
    /// INDIRECT_DESC or EVENT_IDX (neither DUT uses them).
    public static let offeredFeatures: UInt64 = (1 << 32) | (1 << 15) | (1 << 35) | VhostUserConstants.protocolFeaturesMask
    public static let offeredProtocolFeatures: VhostUserProtocolFeatures = [.mq, .replyAck, .status]

    public let path: String
    public let cpu: Int
    private let listener: VhostUserListener

    // Flags shared with the datapath: [0] ready, [1] pause request, [2] pause ack, [3] stop.
    private let flags: UnsafeMutablePointer<UInt32>
    private let rings: UnsafeMutablePointer<GenRing>
    private var memory = MemoryMap()
    private var callFds: (Int32, Int32) = (-1, -1)
    private var headerSize = 12

    // Job hand-off: the orchestrator posts, the datapath takes.
    private let jobLock: UnsafeMutablePointer<pthread_mutex_t>
    private var pendingJob: TrafficJob?
    private let jobPosted: UnsafeMutablePointer<UInt8>

    // Observations, written by the control thread ([0] connect ns, [1] ready ns, [2] connections).
    private let events: UnsafeMutablePointer<UInt64>
    private let errorLock: UnsafeMutablePointer<pthread_mutex_t>
    private var _errors: [String] = []

    private var controlThread: pthread_t?
    private var datapathThread: pthread_t?

    // Control-thread state per connection.
    private var vrings: [VringState] = [VringState(), VringState()]
    private var ackedFeatures: UInt64 = 0
    private var protocolFeaturesAcked = false
    private var status: UInt64 = 0

    private struct VringState {
        var num: UInt32?
        var base: UInt16 = 0
        var addr: VhostVringAddr?
        var started = false
        var enabled = false
        var kickFd: Int32 = -1
        var callFd: Int32 = -1
    }

    /// Listens at `path` and starts both threads; the datapath pins itself to `cpu`.
    public init(path: String, cpu: Int) throws {
        self.path = path
        self.cpu = cpu
        listener = try VhostUserListener(path: path)
        flags = .allocate(capacity: 4)
        flags.initialize(repeating: 0, count: 4)
        rings = .allocate(capacity: 2)
        jobLock = .allocate(capacity: 1)
        pthread_mutex_init(jobLock, nil)
        jobPosted = .allocate(capacity: 1)
        jobPosted.initialize(to: 0)
        events = .allocate(capacity: 3)
        events.initialize(repeating: 0, count: 3)
        errorLock = .allocate(capacity: 1)
        pthread_mutex_init(errorLock, nil)
        controlThread = startThread { [self] in controlLoop() }
        datapathThread = startThread { [self] in datapathLoop() }
    }

    /// Stops both threads, closes the listener and unmaps everything.
    public func stop() {
        ferry_store_release_u32(flags + 3, 1)
        for t in [controlThread, datapathThread].compactMap({ $0 }) { pthread_join(t, nil) }
        controlThread = nil
        datapathThread = nil
        listener.close()
        memory.deallocate()
        for i in 0..<2 { closeRingFds(i) }
    }

    // MARK: Observations

    /// Whether both vrings are running and the datapath may use them.
    public var isReady: Bool { ferry_load_acquire_u32(flags) != 0 }
    /// Monotonic ns of the first connection accepted since `resetEvents` (0: none).
    public var connectNs: UInt64 { ferry_load_relaxed_u64(events) }
    /// Monotonic ns at which the rings first became ready since `resetEvents`.
    public var readyNs: UInt64 { ferry_load_relaxed_u64(events + 1) }
    public var connections: UInt64 { ferry_load_relaxed_u64(events + 2) }

    public func resetEvents() {
        ferry_store_relaxed_u64(events, 0)
        ferry_store_relaxed_u64(events + 1, 0)
    }

    public var errors: [String] {
        pthread_mutex_lock(errorLock); defer { pthread_mutex_unlock(errorLock) }
        return _errors
    }

    private func record(_ message: String) {
        pthread_mutex_lock(errorLock); defer { pthread_mutex_unlock(errorLock) }
        if _errors.count < 100 { _errors.append(message) }
    }

    /// Waits until the rings are ready (true) or `timeoutMs` passes.
    public func waitReady(timeoutMs: Int) -> Bool {
        let end = ferry_monotonic_ns() + UInt64(timeoutMs) * 1_000_000
        while !isReady {
            if ferry_monotonic_ns() >= end { return false }
            usleep(1000)
        }
        return true
    }

    /// Waits until the DUT has gone (rings no longer ready).
    public func waitNotReady(timeoutMs: Int) -> Bool {
        let end = ferry_monotonic_ns() + UInt64(timeoutMs) * 1_000_000
        while isReady {
            if ferry_monotonic_ns() >= end { return false }
            usleep(1000)
        }
        return true
    }

    /// Hands `job` to the datapath; it starts at once (start-up probes wait for the rings).
    public func post(_ job: TrafficJob) {
        pthread_mutex_lock(jobLock)
        pendingJob = job
        pthread_mutex_unlock(jobLock)
        ferry_store_release_u8(jobPosted, 1)
    }

    // MARK: Control thread

    private var stopping: Bool { ferry_load_acquire_u32(flags + 3) != 0 }

    private func controlLoop() {
        while !stopping {
            let socket: VhostUserSocket
            do {
                socket = try listener.accept(timeoutMs: 50)
            } catch VhostError.timeout {
                continue
            } catch {
                if !stopping { record("accept: \(error)") }
                usleep(10_000)
                continue
            }
            if connectNs == 0 { ferry_store_relaxed_u64(events, ferry_monotonic_ns()) }
            ferry_store_relaxed_u64(events + 2, connections + 1)
            serve(socket)
            pauseDatapath()
            resetConnectionState()
            socket.close()
        }
        pauseDatapath()
    }

    private func serve(_ socket: VhostUserSocket) {
        while !stopping {
            do {
                guard try socket.waitReadable(timeoutMs: 50) else { continue }
                let (message, fds) = try socket.receive(timeoutMs: 2000, expectingReply: false)
                if !handle(message, fds: fds, socket: socket) { return }
            } catch VhostError.closed {
                return
            } catch {
                record("receive: \(error)")
                return
            }
        }
    }

    private func resetConnectionState() {
        memory.unmapAll()
        for i in 0..<2 { closeRingFds(i) }
        vrings = [VringState(), VringState()]
        ackedFeatures = 0
        protocolFeaturesAcked = false
        status = 0
    }

    private func closeRingFds(_ i: Int) {
        guard i < vrings.count else { return }
        if vrings[i].kickFd >= 0 { close(vrings[i].kickFd) }
        if vrings[i].callFd >= 0 { close(vrings[i].callFd) }
        vrings[i].kickFd = -1
        vrings[i].callFd = -1
    }

    /// Handles one request; false closes the connection.
    private func handle(_ message: VhostUserMessage, fds: [Int32], socket: VhostUserSocket) -> Bool {
        var fds = fds
        var reply: VhostUserMessage.Payload?
        var failed = false
        switch (message.request, message.payload) {
        case (.setOwner, _), (.resetOwner, _):
            break
        case (.getFeatures, _):
            reply = .u64(Self.offeredFeatures)
        case let (.setFeatures, .u64(v)):
            ackedFeatures = v
            protocolFeaturesAcked = v & VhostUserConstants.protocolFeaturesMask != 0
            // VERSION_1 or MRG_RXBUF: the 12-byte header (virtio 1.2 §5.1.6).
            headerSize = v & ((1 << 32) | (1 << 15)) != 0 ? 12 : 10
        case (.getProtocolFeatures, _):
            reply = .u64(Self.offeredProtocolFeatures.rawValue)
        case (.setProtocolFeatures, _):
            break
        case (.getQueueNum, _):
            reply = .u64(2)
        case let (.setMemTable, .memoryTable(table)):
            pauseDatapath()
            let error = memory.map(guestPhys: table.map(\.guestPhysAddr), user: table.map(\.userAddr),
                                   sizes: table.map(\.memorySize), offsets: table.map(\.mmapOffset), fds: fds)
            fds = []
            if let error {
                record(error)
                failed = true
            }
        case let (.setVringNum, .vringState(s)):
            if s.index < 2 { vrings[Int(s.index)].num = s.num } else { failed = !ignoredRing(s.index) }
        case let (.setVringBase, .vringState(s)):
            if s.index < 2 { vrings[Int(s.index)].base = UInt16(truncatingIfNeeded: s.num) }
        case let (.setVringAddr, .vringAddr(a)):
            if a.index < 2 { vrings[Int(a.index)].addr = a }
        case let (.setVringKick, .u64(v)), let (.setVringCall, .u64(v)), let (.setVringErr, .u64(v)):
            let (index, hasFd) = VhostUserMessage.vringFile(from: v)
            var fd: Int32 = -1
            if hasFd, !fds.isEmpty { fd = fds.removeFirst() }
            if index < 2 {
                let i = Int(index)
                switch message.request {
                case .setVringKick:
                    if vrings[i].kickFd >= 0 { close(vrings[i].kickFd) }
                    vrings[i].kickFd = fd
                    vrings[i].started = true
                case .setVringCall:
                    pauseDatapath()
                    if vrings[i].callFd >= 0 { close(vrings[i].callFd) }
                    vrings[i].callFd = fd
                default:
                    if fd >= 0 { close(fd) }
                }
            } else if fd >= 0 {
                close(fd)
            }
        case let (.setVringEnable, .vringState(s)):
            if s.index < 2 {
                if s.num == 0 { pauseDatapath() }
                vrings[Int(s.index)].enabled = s.num != 0
            }
        case let (.getVringBase, .vringState(s)):
            pauseDatapath()
            var base: UInt32 = 0
            if s.index < 2 {
                let i = Int(s.index)
                if ringsBuilt { base = UInt32(rings[i].lastAvail) } else { base = UInt32(vrings[i].base) }
                vrings[i].base = UInt16(truncatingIfNeeded: base)
                vrings[i].started = false
                ringsBuilt = false
            }
            reply = .vringState(VhostVringState(index: s.index, num: base))
        case let (.setStatus, .u64(v)):
            status = v
        case (.getStatus, _):
            reply = .u64(status)
        default:
            break
        }
        for f in fds { close(f) }
        updateReadiness()

        var out: VhostUserMessage?
        if let reply {
            out = .reply(to: message.request, payload: reply)
        } else if message.needsReply {
            out = .reply(to: message.request, payload: .u64(failed ? 1 : 0))
        }
        if let out {
            do { try socket.send(out) } catch {
                record("send reply to \(message.request): \(error)")
                return false
            }
        }
        return true
    }

    /// Rings beyond pair 0 (a control queue, other pairs) are accepted and never served.
    private func ignoredRing(_ index: UInt32) -> Bool { index <= UInt32(VhostUserConstants.vringIndexMask) }

    private var ringsBuilt = false

    /// Builds the device rings and sets `ready` once memory and both vrings are complete.
    private func updateReadiness() {
        let complete = !memory.isEmpty && vrings.allSatisfy { v in
            v.num != nil && v.addr != nil && v.started && (v.enabled || !protocolFeaturesAcked)
        }
        guard complete else {
            if isReady { pauseDatapath() }
            return
        }
        guard !isReady else { return }
        for i in 0..<2 {
            let v = vrings[i]
            guard let num = v.num, let a = v.addr, num > 0, num <= 32768, num & (num - 1) == 0,
                  let desc = memory.translate(user: a.descUserAddr, length: 16 * Int(num)),
                  let avail = memory.translate(user: a.availUserAddr, length: 6 + 2 * Int(num)),
                  let used = memory.translate(user: a.usedUserAddr, length: 6 + 8 * Int(num)) else {
                record("vring \(i): bad size or addresses outside the memory table")
                return
            }
            var ring = GenRing(size: UInt16(num), desc: desc, avail: avail, used: used, base: v.base)
            // As DPDK's vhost on SET_VRING_BASE: the used index restarts at the base.
            ring.usedIndex = v.base
            ring.setNoNotify()
            (rings + i).initialize(to: ring)
        }
        callFds = (vrings[0].callFd, vrings[1].callFd)
        ringsBuilt = true
        if readyNs == 0 { ferry_store_relaxed_u64(events + 1, ferry_monotonic_ns()) }
        ferry_store_release_u32(flags, 1)
    }

    /// Clears `ready` and waits until the datapath has stopped touching the rings.
    private func pauseDatapath() {
        guard ferry_load_acquire_u32(flags) != 0 else { return }
        // Save the ring positions first: GET_VRING_BASE and a rebuild need them.
        ferry_store_release_u32(flags, 0)
        let request = ferry_load_acquire_u32(flags + 1) &+ 1
        ferry_store_release_u32(flags + 1, request)
        while ferry_load_acquire_u32(flags + 2) != request && !stopping {
            usleep(50)
        }
        if ringsBuilt {
            for i in 0..<2 { vrings[i].base = rings[i].lastAvail }
        }
    }

    // MARK: Datapath thread

    private func datapathLoop() {
        let rc = ferry_pin_current_thread(Int32(cpu))
        if rc != 0 { record("datapath: cannot pin to core \(cpu): errno \(rc)") }
        var engine = DatapathEngine(rings: rings, flags: flags, memory: memory)
        var job: TrafficJob?
        while ferry_load_acquire_u32(flags + 3) == 0 {
            acknowledgePause()
            if ferry_load_acquire_u8(jobPosted) != 0 {
                pthread_mutex_lock(jobLock)
                job = pendingJob
                pendingJob = nil
                ferry_store_release_u8(jobPosted, 0)
                pthread_mutex_unlock(jobLock)
            }
            guard ferry_load_acquire_u32(flags) != 0 else {
                usleep(20)
                continue
            }
            engine.memory = memory
            engine.callFds = callFds
            engine.headerSize = headerSize
            if let j = job {
                if engine.run(j) {
                    j.finish()
                    job = nil
                }
            } else {
                engine.idle()
            }
        }
        if let j = job {
            j.abortReason = "generator stopped"
            j.finish()
        }
    }

    private func acknowledgePause() {
        let request = ferry_load_acquire_u32(flags + 1)
        if request != ferry_load_relaxed_u32(flags + 2) && ferry_load_acquire_u32(flags) == 0 {
            ferry_store_release_u32(flags + 2, request)
        }
    }
}

/// A pthread running `body`, for the generator's two threads.
func startThread(_ body: @escaping () -> Void) -> pthread_t? {
    final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, context)
    if rc != 0 {
        Unmanaged<Box>.fromOpaque(context).release()
        return nil
    }
    return tid
}

@inline(__always)
func ferry_load_relaxed_u32(_ p: UnsafeMutablePointer<UInt32>) -> UInt32 {
    ferry_load_acquire_u32(p)
}
