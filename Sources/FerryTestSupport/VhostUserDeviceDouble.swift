import Virtio
import CFerry
import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// An in-process vhost-user DEVICE (the backend side) for fast integration tests. Test
/// support, never product.
///
/// It listens on a unix socket (or connects to Ferry's listener, for server-mode tests), runs
/// the protocol on its own thread and records what it was told: the ordered requests, the
/// negotiated features, status, the memory table (mapped MAP_SHARED from the received fds) and
/// per-vring num/base/addr/kick/call/enable state. With `loopback` on, a polling thread turns
/// every frame taken from TX vring 2q+1 into a frame on RX vring 2q of the same pair, so a
/// driver sees its own traffic come back.
///
/// Hostile knobs in `Configuration` make it misbehave on purpose (wrong reply code, NACKs,
/// silence, closing mid-session) so the front-end's validation can be tested.
///
/// Call `stop()` when done: the threads keep the object alive until then.
public final class VhostUserDeviceDouble: @unchecked Sendable {
    // MARK: Configuration

    public struct Configuration: Sendable {
        /// GET_FEATURES answer. Default: VERSION_1 | PROTOCOL_FEATURES | MRG_RXBUF | INDIRECT_DESC.
        public var features: UInt64
        /// GET_PROTOCOL_FEATURES answer. Default: MQ | REPLY_ACK | STATUS.
        public var protocolFeatures: VhostUserProtocolFeatures
        /// GET_QUEUE_NUM answer (queues, not pairs).
        public var queueNum: UInt64
        /// The device config space served by GET_CONFIG and written by SET_CONFIG.
        public var configSpace: [UInt8]
        /// Run the TX→RX loopback datapath once a pair is started and enabled.
        public var loopback: Bool

        // Hostile knobs.

        /// Answer GET_VRING_BASE with this request code instead of GET_VRING_BASE.
        public var getVringBaseReplyRequest: VhostUserRequest?
        /// Answer GET_VRING_BASE for this ring index instead of the one asked.
        public var getVringBaseReplyIndex: UInt32?
        /// Close the connection once this many messages have been received (and handled).
        public var closeAfterMessages: Int?
        /// Requests acknowledged with a non-zero REPLY_ACK when NEED_REPLY is set.
        public var nackRequests: Set<VhostUserRequest>
        /// Requests never answered (neither reply nor ack): the front-end must time out.
        public var unansweredRequests: Set<VhostUserRequest>
        /// Requests whose reply payload is cut to 4 bytes (a size the front-end must refuse).
        public var truncatedReplies: Set<VhostUserRequest>
        /// Replace the flags of every reply (e.g. 0x1: REPLY bit missing).
        public var replyFlagsOverride: UInt32?

        public init(features: UInt64 = VhostUserDeviceDouble.defaultFeatures,
                    protocolFeatures: VhostUserProtocolFeatures = [.mq, .replyAck, .status],
                    queueNum: UInt64 = 2,
                    configSpace: [UInt8] = [UInt8](repeating: 0, count: 12),
                    loopback: Bool = true,
                    getVringBaseReplyRequest: VhostUserRequest? = nil,
                    getVringBaseReplyIndex: UInt32? = nil,
                    closeAfterMessages: Int? = nil,
                    nackRequests: Set<VhostUserRequest> = [],
                    unansweredRequests: Set<VhostUserRequest> = [],
                    truncatedReplies: Set<VhostUserRequest> = [],
                    replyFlagsOverride: UInt32? = nil) {
            self.features = features
            self.protocolFeatures = protocolFeatures
            self.queueNum = queueNum
            self.configSpace = configSpace
            self.loopback = loopback
            self.getVringBaseReplyRequest = getVringBaseReplyRequest
            self.getVringBaseReplyIndex = getVringBaseReplyIndex
            self.closeAfterMessages = closeAfterMessages
            self.nackRequests = nackRequests
            self.unansweredRequests = unansweredRequests
            self.truncatedReplies = truncatedReplies
            self.replyFlagsOverride = replyFlagsOverride
        }
    }

    /// VIRTIO_NET_F_MRG_RXBUF (bit 15).
    public static let featureMrgRxbuf: UInt64 = 1 << 15
    /// VIRTIO_F_VERSION_1 (bit 32).
    public static let featureVersion1: UInt64 = 1 << 32
    /// VIRTIO_F_IN_ORDER (bit 35).
    public static let featureInOrder: UInt64 = 1 << 35
    /// VIRTIO_F_RING_PACKED (bit 34): with it acked, the loopback runs on packed rings.
    public static let featureRingPacked: UInt64 = 1 << 34
    /// VIRTIO_RING_F_INDIRECT_DESC (bit 28): offered by default, as DPDK's vhost does; the
    /// rings follow INDIRECT descriptors (DeviceSplitRing / DevicePackedRing `popAvail`).
    public static let featureIndirectDesc: UInt64 = 1 << 28
    public static let defaultFeatures: UInt64 =
        featureVersion1 | VhostUserConstants.protocolFeaturesMask | featureMrgRxbuf | featureIndirectDesc

    /// A vring as the device sees it, copied out for assertions.
    public struct VringSnapshot: Equatable, Sendable {
        public var num: UInt32?
        public var base: UInt32?
        public var addr: VhostVringAddr?
        public var hasKickFd: Bool
        public var hasCallFd: Bool
        /// SET_VRING_KICK arrived (with or without fd) and no GET_VRING_BASE since.
        public var started: Bool
        public var enabled: Bool
        /// The device's next avail index (what GET_VRING_BASE would answer).
        public var lastAvailIndex: UInt16
    }

    // MARK: State (guarded by `mutex`)

    public let path: String
    public let configuration: Configuration
    private let mutex = DoubleMutex()
    private var listener: VhostUserListener?
    private let connectMode: Bool
    private var connection: VhostUserSocket?
    private var stopping = false
    private var controlThread: pthread_t?
    private var datapathThread: pthread_t?

    private var _receivedRequests: [VhostUserRequest] = []
    private var _messagesThisConnection = 0
    private var _connections = 0
    private var _status: UInt8 = 0
    private var _ackedFeatures: UInt64?
    private var _ackedProtocolFeatures: UInt64?
    private var _owner = false
    private var _configSpace: [UInt8]
    private var _errors: [String] = []
    private var _framesLooped: UInt64 = 0
    /// Frames spread over several RX buffers (MRG_RXBUF).
    private var _framesMerged: UInt64 = 0
    private var _framesDropped: UInt64 = 0
    /// TX chains taken through an INDIRECT descriptor, and direct TX chains of more than one
    /// descriptor.
    private var _txIndirectChains: UInt64 = 0
    private var _txDirectChains: UInt64 = 0
    private var regions: [MappedRegion] = []
    private var vrings: [UInt32: DeviceVring] = [:]

    /// Listens at `path` (a stale socket there is replaced) and serves each backend
    /// connection in turn until `stop()`.
    public init(listeningAt path: String, configuration: Configuration = Configuration()) throws {
        self.path = path
        self.configuration = configuration
        self._configSpace = configuration.configSpace
        self.connectMode = false
        self.listener = try VhostUserListener(path: path)
        start()
    }

    /// Connects to a front-end listening at `path` (Ferry in server mode), retrying until it
    /// appears (up to `connectTimeoutMs`), then serves that one connection.
    public init(connectingTo path: String, configuration: Configuration = Configuration(),
                connectTimeoutMs: Int = 10_000) {
        self.path = path
        self.configuration = configuration
        self._configSpace = configuration.configSpace
        self.connectMode = true
        self.connectTimeoutMs = connectTimeoutMs
        start()
    }
    private var connectTimeoutMs = 10_000

    private func start() {
        controlThread = startDoubleThread { [self] in controlLoop() }
        if configuration.loopback {
            datapathThread = startDoubleThread { [self] in datapathLoop() }
        }
    }

    /// Stops both threads, closes the connection and the listener, unmaps memory and closes
    /// every received fd. Idempotent.
    public func stop() {
        let threads: [pthread_t] = mutex.with {
            stopping = true
            connection?.shutdown()
            let t = [controlThread, datapathThread].compactMap { $0 }
            controlThread = nil
            datapathThread = nil
            return t
        }
        for t in threads { pthread_join(t, nil) }
        mutex.with {
            listener?.close()
            listener = nil
            resetDeviceLocked()
        }
    }

    /// Closes the current connection from the device side (the backend "quits").
    public func dropConnection() {
        mutex.with { connection?.shutdown() }
    }

    /// Writes bytes the front-end never asked for on the current connection, as a confused or
    /// hostile backend might. Returns false when there is no connection.
    @discardableResult
    public func sendUnsolicited(_ bytes: [UInt8]) -> Bool {
        mutex.with {
            guard let connection else { return false }
            return (try? connection.sendBytes(bytes)) != nil
        }
    }

    // MARK: Observations

    public var receivedRequests: [VhostUserRequest] { mutex.with { _receivedRequests } }
    /// Connections accepted (or made) so far.
    public var connectionCount: Int { mutex.with { _connections } }
    public var isConnected: Bool { mutex.with { connection != nil } }
    public var status: UInt8 { mutex.with { _status } }
    public var ackedFeatures: UInt64? { mutex.with { _ackedFeatures } }
    public var ackedProtocolFeatures: VhostUserProtocolFeatures? {
        mutex.with { _ackedProtocolFeatures.map(VhostUserProtocolFeatures.init(rawValue:)) }
    }
    public var ownerSet: Bool { mutex.with { _owner } }
    public var configSpace: [UInt8] { mutex.with { _configSpace } }
    /// What went wrong on the device side (bad requests, mmap failures, broken rings).
    public var errors: [String] { mutex.with { _errors } }
    public var framesLooped: UInt64 { mutex.with { _framesLooped } }
    /// Frames taken from TX that found no RX buffer (or one too small).
    public var framesDropped: UInt64 { mutex.with { _framesDropped } }
    /// TX chains the loopback took through an INDIRECT descriptor (one ring slot each).
    public var txIndirectChains: UInt64 { mutex.with { _txIndirectChains } }
    /// TX chains the loopback took as direct chains of two or more descriptors.
    public var txDirectChains: UInt64 { mutex.with { _txDirectChains } }
    /// The memory table as received (fds are -1: they were mapped and closed).
    public var memoryRegions: [VhostMemoryRegion] {
        mutex.with {
            regions.map { VhostMemoryRegion(guestPhysAddr: $0.guestPhysAddr, memorySize: $0.size,
                                            userAddr: $0.userAddr, mmapOffset: $0.mmapOffset, fd: -1) }
        }
    }

    public func vring(_ index: UInt32) -> VringSnapshot? {
        mutex.with {
            guard let v = vrings[index] else { return nil }
            return VringSnapshot(num: v.num, base: v.base, addr: v.addr, hasKickFd: v.kickFd >= 0,
                                 hasCallFd: v.callFd >= 0, started: v.started, enabled: v.enabled,
                                 lastAvailIndex: v.ring?.lastAvailIndex ?? v.lastAvailIndex)
        }
    }

    /// Reads `length` bytes at a driver (guest-physical) address through the mapped memory
    /// table, or nil when out of bounds: proof that memory is really shared.
    public func readGuestMemory(at address: UInt64, length: Int) -> [UInt8]? {
        mutex.with {
            guard let p = Self.translate(regions, guestAddress: address, length: length) else { return nil }
            return Array(UnsafeRawBufferPointer(start: p, count: length))
        }
    }

    /// Polls `condition` until it holds or `timeoutMs` passes. For synchronising with the
    /// device thread (messages without replies arrive asynchronously), not for timing.
    public func waitUntil(timeoutMs: Int = 5000, _ condition: () -> Bool) -> Bool {
        let end = ferry_monotonic_ns() + UInt64(timeoutMs) * 1_000_000
        while true {
            if condition() { return true }
            if ferry_monotonic_ns() >= end { return false }
            usleep(1000)
        }
    }

    /// Waits until at least `count` requests have been received.
    public func waitForRequests(count: Int, timeoutMs: Int = 5000) -> Bool {
        waitUntil(timeoutMs: timeoutMs) { receivedRequests.count >= count }
    }

    // MARK: Control thread

    private var isStopping: Bool { mutex.with { stopping } }

    private func controlLoop() {
        while !isStopping {
            guard let socket = nextConnection() else {
                if connectMode { return }
                continue
            }
            mutex.with {
                connection = socket
                _connections += 1
                _messagesThisConnection = 0
            }
            serve(socket)
            mutex.with {
                connection = nil
                socket.close()
            }
            if connectMode { return }
        }
    }

    /// Accepts (listen mode) or connects (connect mode); nil when stopping or given up.
    private func nextConnection() -> VhostUserSocket? {
        if connectMode {
            let end = ferry_monotonic_ns() + UInt64(connectTimeoutMs) * 1_000_000
            while !isStopping && ferry_monotonic_ns() < end {
                if let s = try? VhostUserSocket.connect(path: path) { return s }
                usleep(2000)
            }
            if !isStopping { record("could not connect to \(path)") }
            return nil
        }
        guard let listener = mutex.with({ listener }) else { return nil }
        do {
            return try listener.accept(timeoutMs: 50)
        } catch VhostError.timeout {
            return nil
        } catch {
            record("accept: \(error)")
            usleep(10_000)
            return nil
        }
    }

    private func serve(_ socket: VhostUserSocket) {
        while !isStopping {
            do {
                guard try socket.waitReadable(timeoutMs: 50) else { continue }
                let (message, fds) = try socket.receive(timeoutMs: 2000, expectingReply: false)
                if !handle(message, fds: fds, on: socket) { return }
            } catch VhostError.closed {
                return
            } catch {
                record("receive: \(error)")
                return
            }
        }
    }

    /// Handles one request; false closes the connection.
    private func handle(_ message: VhostUserMessage, fds: [Int32], on socket: VhostUserSocket) -> Bool {
        var fds = fds
        let request = message.request
        var reply: VhostUserMessage.Payload?
        var failed = false
        let closeNow: Bool = mutex.with {
            _receivedRequests.append(request)
            _messagesThisConnection += 1
            switch (request, message.payload) {
            case (.setOwner, _):
                _owner = true
            case (.resetOwner, _):
                _owner = false
                resetDeviceLocked()
            case (.getFeatures, _):
                reply = .u64(configuration.features)
            case let (.setFeatures, .u64(v)):
                _ackedFeatures = v
                if v & VhostUserConstants.protocolFeaturesMask == 0 {
                    // vhost-user.rst "Ring states": without PROTOCOL_FEATURES every ring is
                    // enabled at once.
                    for (_, ring) in vrings { ring.enabled = true }
                }
            case (.getProtocolFeatures, _):
                reply = .u64(configuration.protocolFeatures.rawValue)
            case let (.setProtocolFeatures, .u64(v)):
                _ackedProtocolFeatures = v
            case (.getQueueNum, _):
                reply = .u64(configuration.queueNum)
            case let (.setMemTable, .memoryTable(table)):
                failed = !setMemoryTableLocked(table, fds: fds)
                fds = []  // consumed (mapped or closed)
            case let (.setVringNum, .vringState(s)):
                if let ring = vringLocked(s.index) {
                    ring.num = s.num
                    ring.ring = nil
                    ring.broken = false
                } else { failed = true }
            case let (.setVringBase, .vringState(s)):
                if let ring = vringLocked(s.index) {
                    ring.base = s.num
                    ring.lastAvailIndex = UInt16(truncatingIfNeeded: s.num)
                    ring.usedIndex = ring.lastAvailIndex
                    ring.ring = nil
                    ring.broken = false
                } else { failed = true }
            case let (.setVringAddr, .vringAddr(a)):
                if let ring = vringLocked(a.index) {
                    ring.addr = a
                    ring.ring = nil
                    ring.broken = false
                } else { failed = true }
            case let (.setVringKick, .u64(v)), let (.setVringCall, .u64(v)), let (.setVringErr, .u64(v)):
                let (index, hasFd) = VhostUserMessage.vringFile(from: v)
                var fd: Int32 = -1
                if hasFd {
                    if fds.count == 1 { fd = fds.removeFirst() } else {
                        record("\(request) ring \(index): expected 1 fd, got \(fds.count)", locked: true)
                        failed = true
                    }
                }
                if !failed, let ring = vringLocked(index) {
                    switch request {
                    case .setVringKick:
                        ring.replaceKick(fd)
                        ring.started = true
                    case .setVringCall:
                        ring.replaceCall(fd)
                    default:
                        if fd >= 0 { Glibc.close(fd) }
                    }
                } else if fd >= 0 {
                    Glibc.close(fd)
                    failed = true
                }
            case let (.getVringBase, .vringState(s)):
                if let ring = vringLocked(s.index) {
                    ring.saveRingState()
                    ring.started = false
                    reply = .vringState(VhostVringState(index: configuration.getVringBaseReplyIndex ?? s.index,
                                                        num: UInt32(ring.lastAvailIndex)))
                } else {
                    reply = .vringState(VhostVringState(index: s.index, num: 0))
                    failed = true
                }
            case let (.setVringEnable, .vringState(s)):
                if let ring = vringLocked(s.index) { ring.enabled = s.num != 0 } else { failed = true }
            case let (.setStatus, .u64(v)):
                _status = UInt8(truncatingIfNeeded: v)
            case (.getStatus, _):
                reply = .u64(UInt64(_status))
            case let (.getConfig, .config(offset, size, flags, _)):
                let end = Int(offset) + Int(size)
                if end <= _configSpace.count {
                    reply = .config(offset: offset, size: size, flags: flags,
                                    bytes: Array(_configSpace[Int(offset)..<end]))
                } else {
                    reply = .config(offset: offset, size: 0, flags: flags, bytes: [])
                    failed = true
                }
            case let (.setConfig, .config(offset, _, _, bytes)):
                let end = Int(offset) + bytes.count
                if end <= _configSpace.count {
                    _configSpace.replaceSubrange(Int(offset)..<end, with: bytes)
                } else { failed = true }
            default:
                record("unhandled \(request) with payload \(message.payload)", locked: true)
            }
            if let limit = configuration.closeAfterMessages, _messagesThisConnection >= limit { return true }
            return false
        }
        for f in fds { Glibc.close(f) }
        if failed { record("\(request) failed") }
        if closeNow { return false }
        if configuration.unansweredRequests.contains(request) { return true }

        var out: VhostUserMessage?
        if let reply {
            var payload = reply
            var code = request
            if request == .getVringBase, let wrong = configuration.getVringBaseReplyRequest { code = wrong }
            if configuration.truncatedReplies.contains(request) { payload = .raw([0, 0, 0, 0]) }
            out = .reply(to: code, payload: payload)
        } else if message.needsReply {
            let nack = failed || configuration.nackRequests.contains(request)
            var payload = VhostUserMessage.Payload.u64(nack ? 1 : 0)
            if configuration.truncatedReplies.contains(request) { payload = .raw([0, 0, 0, 0]) }
            out = .reply(to: request, payload: payload)
        }
        guard var out else { return true }
        if let flags = configuration.replyFlagsOverride { out.flags = VhostUserHeaderFlags(rawValue: flags) }
        do {
            try socket.send(out)
        } catch {
            record("send reply to \(request): \(error)")
            return false
        }
        return true
    }

    private func vringLocked(_ index: UInt32) -> DeviceVring? {
        guard index <= UInt32(VhostUserConstants.vringIndexMask) else {
            record("vring index \(index) out of range", locked: true)
            return nil
        }
        if let v = vrings[index] { return v }
        let v = DeviceVring()
        if let acked = _ackedFeatures, acked & VhostUserConstants.protocolFeaturesMask == 0 { v.enabled = true }
        vrings[index] = v
        return v
    }

    /// Maps every region MAP_SHARED from its fd (closing the fds), replacing the old table.
    /// Rings are dropped and rebuilt from their saved indices, as their pointers change.
    private func setMemoryTableLocked(_ table: [VhostMemoryRegion], fds: [Int32]) -> Bool {
        defer { for f in fds { Glibc.close(f) } }
        guard fds.count == table.count else {
            record("SET_MEM_TABLE: \(table.count) regions but \(fds.count) fds", locked: true)
            return false
        }
        for (_, ring) in vrings { ring.saveRingState() }
        unmapAllLocked()
        var mapped: [MappedRegion] = []
        for (i, r) in table.enumerated() {
            let (total, overflow) = r.memorySize.addingReportingOverflow(r.mmapOffset)
            guard !overflow, r.memorySize > 0, total <= UInt64(Int.max) else {
                record("SET_MEM_TABLE: region \(i) has size \(r.memorySize) offset \(r.mmapOffset)", locked: true)
                for m in mapped { munmap(m.base, m.mapLength) }
                return false
            }
            // SAFETY: maps the front-end's memfd shared; the mapping lives until unmapAllLocked.
            let p = mmap(nil, Int(total), PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0)
            guard let p, p != MAP_FAILED else {
                record("SET_MEM_TABLE: mmap of region \(i) failed: errno \(errno)", locked: true)
                for m in mapped { munmap(m.base, m.mapLength) }
                return false
            }
            mapped.append(MappedRegion(guestPhysAddr: r.guestPhysAddr, size: r.memorySize, userAddr: r.userAddr,
                                       mmapOffset: r.mmapOffset, base: p, mapLength: Int(total)))
        }
        regions = mapped
        for (_, ring) in vrings { ring.broken = false }
        return true
    }

    private func unmapAllLocked() {
        for (_, ring) in vrings { ring.ring = nil }
        for m in regions { munmap(m.base, m.mapLength) }
        regions = []
    }

    private func resetDeviceLocked() {
        unmapAllLocked()
        for (_, ring) in vrings { ring.closeFds() }
        vrings = [:]
    }

    private func record(_ message: String, locked: Bool = false) {
        if locked { _errors.append(message) } else { mutex.with { _errors.append(message) } }
    }

    // MARK: Address translation

    /// A driver buffer address (guest-physical) to a local pointer, bounds-checked.
    private static func translate(_ regions: [MappedRegion], guestAddress: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard length >= 0 else { return nil }
        for r in regions {
            guard guestAddress >= r.guestPhysAddr else { continue }
            let offset = guestAddress - r.guestPhysAddr
            guard offset < r.size, UInt64(length) <= r.size - offset else { continue }
            return r.base + Int(r.mmapOffset) + Int(offset)
        }
        return nil
    }

    /// A ring address from SET_VRING_ADDR (the front-end's user address) to a local pointer.
    private static func translate(_ regions: [MappedRegion], userAddress: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard length >= 0 else { return nil }
        for r in regions {
            guard userAddress >= r.userAddr else { continue }
            let offset = userAddress - r.userAddr
            guard offset < r.size, UInt64(length) <= r.size - offset else { continue }
            return r.base + Int(r.mmapOffset) + Int(offset)
        }
        return nil
    }

    // MARK: Datapath thread

    private func datapathLoop() {
        while !isStopping {
            let worked = mutex.with { () -> Bool in
                var any = false
                let pairs = vrings.keys.filter { $0 % 2 == 0 }.sorted()
                for rxIndex in pairs {
                    if loopPairLocked(rxIndex: rxIndex) { any = true }
                }
                return any
            }
            if !worked { usleep(200) }
        }
    }

    /// Moves up to a burst of frames from TX (rxIndex+1) to RX (rxIndex). True if any moved.
    private func loopPairLocked(rxIndex: UInt32) -> Bool {
        if packedRingsAckedLocked { return loopPackedPairLocked(rxIndex: rxIndex) }
        guard let rx = vrings[rxIndex], let tx = vrings[rxIndex + 1],
              rx.isRunning, tx.isRunning, !rx.broken, !tx.broken,
              buildRingLocked(rx, index: rxIndex), buildRingLocked(tx, index: rxIndex + 1) else { return false }
        let headerLength = netHeaderLength
        var moved = 0
        do {
            while moved < 32, let txChain = try tx.ring!.popAvail() {
                moved += 1
                countTxChainLocked(txChain)
                let frame = txChain.readableBytes()
                tx.ring!.pushUsed(id: txChain.head, length: 0)
                guard frame.count >= headerLength else {
                    _framesDropped += 1
                    continue
                }
                guard let rxChain = try rx.ring!.popAvail() else {
                    _framesDropped += 1
                    continue
                }
                var out = [UInt8](repeating: 0, count: headerLength)
                if headerLength >= 12 { out[10] = 1 }  // num_buffers = 1 (little-endian u16)
                out.append(contentsOf: frame[headerLength...])
                if rxChain.writableLength < out.count, mergeableAckedLocked {
                    // MRG_RXBUF: spread the frame over more buffers (or hand them all back).
                    if try mergeSplitLocked(rx, first: rxChain, frame: &out) {
                        _framesLooped += 1
                        _framesMerged += 1
                        continue
                    }
                }
                guard rxChain.writableLength >= out.count else {
                    rx.ring!.lastAvailIndex &-= 1  // hand the buffer back
                    _framesDropped += 1
                    continue
                }
                let written = rxChain.writeWritable(out)
                rx.ring!.pushUsed(id: rxChain.head, length: UInt32(written))
                _framesLooped += 1
            }
        } catch {
            record("ring pair \(rxIndex / 2): \(error)", locked: true)
            rx.broken = true
            tx.broken = true
        }
        if moved > 0 {
            rx.notifyIfWanted()
            tx.notifyIfWanted()
        }
        return moved > 0
    }

    private func countTxChainLocked(_ chain: DeviceChain) {
        if chain.viaIndirect {
            _txIndirectChains += 1
        } else if chain.ringDescriptors > 1 {
            _txDirectChains += 1
        }
    }

    /// The virtio-net header the driver uses: 12 bytes with VERSION_1 or MRG_RXBUF, else 10
    /// (virtio 1.2 §5.1.6).
    private var netHeaderLength: Int {
        let acked = _ackedFeatures ?? 0
        return acked & (Self.featureVersion1 | Self.featureMrgRxbuf) != 0 ? 12 : 10
    }

    /// Builds the DeviceSplitRing for a vring from its addresses, once per memory table.
    private func buildRingLocked(_ v: DeviceVring, index: UInt32) -> Bool {
        if v.ring != nil { return true }
        guard let num = v.num, let addr = v.addr, num > 0, num <= 32768, num & (num - 1) == 0 else {
            record("vring \(index): bad size or no address", locked: true)
            v.broken = true
            return false
        }
        let n = Int(num)
        let snapshot = regions
        guard let desc = Self.translate(snapshot, userAddress: addr.descUserAddr, length: 16 * n),
              let avail = Self.translate(snapshot, userAddress: addr.availUserAddr, length: 6 + 2 * n),
              let used = Self.translate(snapshot, userAddress: addr.usedUserAddr, length: 6 + 8 * n) else {
            record("vring \(index): ring addresses outside the memory table", locked: true)
            v.broken = true
            return false
        }
        var ring = DeviceSplitRing(queueSize: UInt16(n), desc: desc, avail: avail, used: used) { address, length in
            VhostUserDeviceDouble.translate(snapshot, guestAddress: address, length: length)
        }
        ring.lastAvailIndex = v.lastAvailIndex
        ring.forceUsedIndex(v.usedIndex)
        ring.setNoNotify(true)  // the double polls; kicks are not needed
        v.ring = ring
        return true
    }
}

// MARK: - Device-side vring state

private final class DeviceVring {
    var num: UInt32?
    var base: UInt32?
    var addr: VhostVringAddr?
    var kickFd: Int32 = -1
    var callFd: Int32 = -1
    var started = false
    var enabled = false
    var broken = false
    /// Saved indices while no DeviceSplitRing exists (before building, after a remap).
    var lastAvailIndex: UInt16 = 0
    var usedIndex: UInt16 = 0
    var ring: DeviceSplitRing?

    var isRunning: Bool { started && enabled && addr != nil && num != nil }

    func saveRingState() {
        if let ring {
            lastAvailIndex = ring.lastAvailIndex
            usedIndex = ring.usedIndex
        }
        ring = nil
    }

    func replaceKick(_ fd: Int32) {
        if kickFd >= 0 { Glibc.close(kickFd) }
        kickFd = fd
        broken = false
    }

    func replaceCall(_ fd: Int32) {
        if callFd >= 0 { Glibc.close(callFd) }
        callFd = fd
    }

    /// Signals the call eventfd unless the driver suppressed interrupts.
    func notifyIfWanted() {
        guard callFd >= 0, var r = ring, r.shouldInterrupt() else { return }
        ring = r
        var one: UInt64 = 1
        _ = write(callFd, &one, 8)
    }

    func closeFds() {
        if kickFd >= 0 { Glibc.close(kickFd) }
        if callFd >= 0 { Glibc.close(callFd) }
        kickFd = -1
        callFd = -1
        ring = nil
    }
}

/// One mapped SET_MEM_TABLE region.
private struct MappedRegion {
    var guestPhysAddr: UInt64
    var size: UInt64
    var userAddr: UInt64
    var mmapOffset: UInt64
    var base: UnsafeMutableRawPointer
    var mapLength: Int
}

// MARK: - Threads and locking (test support)

private final class DoubleMutex {
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    init() {
        m = .allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        pthread_mutex_init(m, nil)
    }
    deinit {
        pthread_mutex_destroy(m)
        m.deallocate()
    }
    func with<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }
}

private final class DoubleThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func startDoubleThread(_ body: @escaping () -> Void) -> pthread_t? {
    let box = Unmanaged.passRetained(DoubleThreadBody(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        Unmanaged<DoubleThreadBody>.fromOpaque(arg!).takeRetainedValue().run()
        return nil
    }, box)
    if rc != 0 {
        Unmanaged<DoubleThreadBody>.fromOpaque(box).release()
        return nil
    }
    return tid
}

// MARK: - Packed rings (VIRTIO_F_RING_PACKED acked)

/// The loopback on packed rings. SET_VRING_ADDR then carries the descriptor ring, the driver
/// event area (`avail`) and the device event area (`used`); SET_VRING_BASE carries the next
/// position with the wrap counter in bit 15, which the existing handler already stores in
/// `lastAvailIndex` and `usedIndex` verbatim, as DPDK's vhost does (both sides start there).
/// GET_VRING_BASE answers `lastAvailIndex`, which this path keeps as `position | wrap << 15`,
/// so for a packed vring `VringSnapshot.lastAvailIndex` and GET_VRING_BASE are in that encoding.
///
/// The DevicePackedRing is rebuilt from the vring's addresses and saved positions on every
/// pass (nothing stays outstanding between passes), so it never outlives a memory table and
/// needs no state of its own in DeviceVring; the split path is untouched.
extension VhostUserDeviceDouble {
    private var packedRingsAckedLocked: Bool { (_ackedFeatures ?? 0) & Self.featureRingPacked != 0 }

    /// Moves up to a burst of frames from TX (rxIndex+1) to RX (rxIndex) on packed rings.
    private func loopPackedPairLocked(rxIndex: UInt32) -> Bool {
        guard let rx = vrings[rxIndex], let tx = vrings[rxIndex + 1],
              rx.isRunning, tx.isRunning, !rx.broken, !tx.broken,
              var rxRing = packedRingLocked(rx, index: rxIndex),
              var txRing = packedRingLocked(tx, index: rxIndex + 1) else { return false }
        let headerLength = packedNetHeaderLength
        var moved = 0
        do {
            while moved < 32, let txChain = try txRing.popAvail() {
                moved += 1
                countTxChainLocked(txChain)
                let frame = txChain.readableBytes()
                txRing.pushUsed(id: txChain.head, length: 0)
                guard frame.count >= headerLength else {
                    _framesDropped += 1
                    continue
                }
                guard let rxChain = try rxRing.popAvail() else {
                    _framesDropped += 1
                    continue
                }
                var out = [UInt8](repeating: 0, count: headerLength)
                if headerLength >= 12 { out[10] = 1 }  // num_buffers = 1 (little-endian u16)
                out.append(contentsOf: frame[headerLength...])
                if rxChain.writableLength < out.count, mergeableAckedLocked {
                    if try mergePackedLocked(&rxRing, first: rxChain, frame: &out) {
                        _framesLooped += 1
                        _framesMerged += 1
                        continue
                    }
                }
                guard rxChain.writableLength >= out.count else {
                    rxRing.unpop()  // hand the buffer back
                    _framesDropped += 1
                    continue
                }
                let written = rxChain.writeWritable(out)
                rxRing.pushUsed(id: rxChain.head, length: UInt32(written))
                _framesLooped += 1
            }
        } catch {
            record("packed ring pair \(rxIndex / 2): \(error)", locked: true)
            rx.broken = true
            tx.broken = true
        }
        savePackedState(rxRing, into: rx)
        savePackedState(txRing, into: tx)
        if moved > 0 {
            notifyPacked(&rxRing, rx)
            notifyPacked(&txRing, tx)
        }
        return moved > 0
    }

    private var packedNetHeaderLength: Int {
        let acked = _ackedFeatures ?? 0
        return acked & (Self.featureVersion1 | Self.featureMrgRxbuf) != 0 ? 12 : 10
    }

    /// A DevicePackedRing over the vring's addresses, positioned at its saved state.
    private func packedRingLocked(_ v: DeviceVring, index: UInt32) -> DevicePackedRing? {
        guard let num = v.num, let addr = v.addr, num > 0, num <= 32768 else {
            record("vring \(index): bad packed ring size or no address", locked: true)
            v.broken = true
            return nil
        }
        let n = Int(num)
        let snapshot = regions
        guard let desc = Self.translate(snapshot, userAddress: addr.descUserAddr, length: 16 * n),
              let driverEvent = Self.translate(snapshot, userAddress: addr.availUserAddr, length: 4),
              let deviceEvent = Self.translate(snapshot, userAddress: addr.usedUserAddr, length: 4) else {
            record("vring \(index): packed ring addresses outside the memory table", locked: true)
            v.broken = true
            return nil
        }
        var ring = DevicePackedRing(queueSize: UInt16(n), desc: desc, driverEvent: driverEvent,
                                    deviceEvent: deviceEvent) { address, length in
            VhostUserDeviceDouble.translate(snapshot, guestAddress: address, length: length)
        }
        guard ring.restore(availBase: UInt32(v.lastAvailIndex), usedBase: UInt32(v.usedIndex)) else {
            record("vring \(index): packed ring base beyond the ring", locked: true)
            v.broken = true
            return nil
        }
        ring.eventIdx = (_ackedFeatures ?? 0) & (1 << 29) != 0  // VIRTIO_RING_F_EVENT_IDX
        ring.setNoNotify(true)  // the double polls; kicks are not needed
        return ring
    }

    private func savePackedState(_ ring: DevicePackedRing, into v: DeviceVring) {
        v.lastAvailIndex = UInt16(truncatingIfNeeded: ring.vringBase)
        v.usedIndex = UInt16(truncatingIfNeeded: ring.usedBase)
    }

    /// Signals the call eventfd unless the driver suppressed interrupts for this pass's slots.
    private func notifyPacked(_ ring: inout DevicePackedRing, _ v: DeviceVring) {
        guard v.callFd >= 0, ring.shouldInterrupt() else { return }
        var one: UInt64 = 1
        _ = write(v.callFd, &one, 8)
    }
}

/// MRG_RXBUF in the loopback (virtio 1.2 §5.1.6.4): a frame larger than one RX chain is spread
/// over as many chains as it needs, `num_buffers` in the first header says how many, and all
/// of them become visible to the driver at once (as DPDK's vhost publishes a whole burst), so
/// the driver never sees the head of a frame without its tail.
extension VhostUserDeviceDouble {
    var mergeableAckedLocked: Bool { (_ackedFeatures ?? 0) & Self.featureMrgRxbuf != 0 }

    /// Frames the loopback spread over several RX buffers.
    public var framesMerged: UInt64 { mutex.with { _framesMerged } }

    /// Pops further chains after `first` until `frame` fits; false (every chain after `first`
    /// handed back) when the ring runs out.
    private func popForMerge(first: DeviceChain, need: Int, pop: () throws -> DeviceChain?) rethrows -> [DeviceChain]? {
        var chains = [first]
        var room = first.writableLength
        while room < need, chains.count < 64, let c = try pop() {
            chains.append(c)
            room += c.writableLength
        }
        return room >= need ? chains : nil
    }

    /// Writes `frame` across `chains`, with num_buffers set; returns each chain's used length.
    private func spread(_ frame: inout [UInt8], over chains: [DeviceChain]) -> [Int] {
        let count = UInt16(chains.count)
        frame[10] = UInt8(count & 0xff)
        frame[11] = UInt8(count >> 8)
        var offset = 0
        var lengths: [Int] = []
        for c in chains {
            let end = min(frame.count, offset + c.writableLength)
            let written = c.writeWritable(Array(frame[offset..<end]))
            lengths.append(written)
            offset += written
        }
        return lengths
    }

    fileprivate func mergeSplitLocked(_ rx: DeviceVring, first: DeviceChain, frame: inout [UInt8]) throws -> Bool {
        guard frame.count >= 12 else { return false }
        var poppedAfterFirst = 0
        let popped = try popForMerge(first: first, need: frame.count) {
            let c = try rx.ring!.popAvail()
            if c != nil { poppedAfterFirst += 1 }
            return c
        }
        guard let chains = popped else {
            // Hand back what was popped after `first`; the caller hands back `first`.
            rx.ring!.lastAvailIndex &-= UInt16(poppedAfterFirst)
            return false
        }
        let lengths = spread(&frame, over: chains)
        let base = rx.ring!.usedIndex
        for (k, c) in chains.enumerated() {
            rx.ring!.writeUsedEntry(slot: base &+ UInt16(k), id: UInt32(c.head), length: UInt32(lengths[k]))
        }
        rx.ring!.forceUsedIndex(base &+ UInt16(chains.count))
        return true
    }

    func mergePackedLocked(_ ring: inout DevicePackedRing, first: DeviceChain, frame: inout [UInt8]) throws -> Bool {
        guard frame.count >= 12 else { return false }
        var poppedAfterFirst = 0
        let popped = try popForMerge(first: first, need: frame.count) {
            let c = try ring.popAvail()
            if c != nil { poppedAfterFirst += 1 }
            return c
        }
        guard let chains = popped else {
            for _ in 0..<poppedAfterFirst { ring.unpop() }
            return false
        }
        let lengths = spread(&frame, over: chains)
        // Every chain after the head first, each in its own slot (RX chains posted with
        // MRG_RXBUF are one descriptor each; a longer one moves the slot on by its length),
        // then the head, whose flags make the whole frame visible.
        var slots: [Int] = []
        for c in chains { slots.append(ring.outstanding.last(where: { $0.id == c.head })?.descriptors ?? 1) }
        var position = Int(ring.usedIndex)
        var wrap = ring.usedWrapCounter
        var total = 0
        for k in chains.indices {
            if k > 0 {
                ring.writeDescriptor(at: UInt16(position), id: chains[k].head, length: UInt32(lengths[k]),
                                     flags: PackedRingFlags.usedBits(wrap: wrap)
                                         | (lengths[k] > 0 ? PackedRingFlags.descWrite : 0))
            }
            total += slots[k]
            position += slots[k]
            while position >= Int(ring.queueSize) {
                position -= Int(ring.queueSize)
                wrap.toggle()
            }
        }
        ring.writeUsed(id: chains[0].head, length: UInt32(lengths[0]), advance: total)
        return true
    }
}
