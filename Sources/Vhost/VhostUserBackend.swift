#if canImport(Glibc)
import Glibc
#endif

/// The vhost-user transport: the `VhostBackend` calls as messages on a unix socket, the way
/// DPDK's virtio-user front-end sends them (drivers/net/virtio/virtio_user/vhost_user.c).
///
/// What it keeps from DPDK:
/// - GET_FEATURES negotiates protocol features when the device offers bit 30: the offer is
///   masked to `protocolFeatureMask` (MQ | REPLY_ACK | STATUS) and written back.
/// - NEED_REPLY is set, under REPLY_ACK, on SET_MEM_TABLE and SET_STATUS only (and on
///   SET_CONFIG, which DPDK never sends); a non-zero ack is `VhostError.nack`.
/// - SET/GET_STATUS only after FEATURES_OK and with the STATUS protocol feature; otherwise
///   `notSupported`, which callers treat as "this backend has no status channel".
/// - SET_FEATURES keeps bit 30 when the device offered it.
///
/// Where it is stricter than DPDK:
/// - Every reply is awaited with a timeout (`replyTimeoutMs`) instead of blocking forever.
/// - Any failed exchange (timeout, wrong reply, NACK-less garbage, EOF) closes the connection:
///   the stream can no longer be trusted to be in step (vhost-user.rst: "If front-end … receives
///   a wrong reply it will close the connection"). Later calls throw `closed`, and
///   `isPeerClosed()` turns true so the port goes down; in server mode `acceptAgain` recovers.
/// - MQ is also marked unsupported when the device has no protocol features at all (DPDK
///   only marks it when protocol features were negotiated without MQ); without the MQ
///   protocol feature a vhost-user device cannot carry several queue pairs.
///
/// Not thread-safe: one control thread drives it.
public final class VhostUserBackend: VhostBackend {
    public let path: String
    /// True when Ferry listens and the backend connects (`server=1`).
    public let isServer: Bool
    /// The protocol features Ferry is willing to use; the device's offer is masked to it.
    public let protocolFeatureMask: VhostUserProtocolFeatures
    /// How long to wait for each reply.
    public var replyTimeoutMs: Int = VhostUserSocket.defaultTimeoutMs

    public var maxMemoryRegions: Int { VhostUserConstants.memoryMaxRegions }
    /// `vhost_user_get_backend_features`: PROTOCOL_FEATURES, which the seed's supported set
    /// lacks.
    public var backendFeatures: UInt64 { VhostUserConstants.protocolFeaturesMask }
    public private(set) var unsupportedFeatures: UInt64 = 0

    /// The device's feature bits from the last GET_FEATURES.
    public private(set) var deviceFeatures: UInt64 = 0
    /// The protocol features agreed with SET_PROTOCOL_FEATURES (empty before, or when the
    /// device does not offer bit 30).
    public private(set) var protocolFeatures: VhostUserProtocolFeatures = []
    /// Every request sent (or attempted) on this backend, in order, across reconnects.
    /// Control path only (a few dozen entries per connection); it lets tests and logs show
    /// the exact sequence a backend was given.
    public private(set) var sentRequests: [VhostUserRequest] = []

    private var socket: VhostUserSocket?
    private var listener: VhostUserListener?
    /// The status the driver last wrote (`dev->status` in DPDK), gating SET/GET_STATUS.
    private var driverStatus: UInt8 = 0

    /// Client mode: connects to a backend listening at `path`.
    public init(connectingTo path: String,
                protocolFeatureMask: VhostUserProtocolFeatures = .dpdkFrontend) throws {
        self.path = path
        self.isServer = false
        self.protocolFeatureMask = protocolFeatureMask
        self.socket = try VhostUserSocket.connect(path: path)
    }

    /// Server mode: listens at `path` and waits up to `acceptTimeoutMs` (negative: forever)
    /// for the backend to connect. The listener is kept for `acceptAgain`.
    public init(listeningAt path: String, acceptTimeoutMs: Int,
                protocolFeatureMask: VhostUserProtocolFeatures = .dpdkFrontend) throws {
        self.path = path
        self.isServer = true
        self.protocolFeatureMask = protocolFeatureMask
        let listener = try VhostUserListener(path: path)
        self.listener = listener
        do {
            self.socket = try listener.accept(timeoutMs: acceptTimeoutMs)
        } catch {
            listener.close()
            throw error
        }
    }

    deinit { close() }

    /// The listening descriptor in server mode (readable when a backend reconnects), else nil.
    public var listenerFileDescriptor: Int32? {
        listener.map { $0.fileDescriptor }.flatMap { $0 >= 0 ? $0 : nil }
    }

    /// Server mode: drops the current connection, if any, and accepts the next backend.
    /// Negotiated state is forgotten; the caller renegotiates from SET_OWNER, as the seed's
    /// `virtio_user_dev_server_reconnect` does.
    public func acceptAgain(timeoutMs: Int) throws {
        guard let listener else {
            throw VhostError.notSupported(path: path, what: "re-accepting (not in server mode)")
        }
        socket?.close()
        socket = nil
        resetNegotiation()
        socket = try listener.accept(timeoutMs: timeoutMs)
    }

    /// Client mode: drops the current connection, if any, and connects to `path` again (for
    /// `reconnect_ms`, which DPDK's virtio-user lacks). Negotiated state is forgotten. Throws
    /// `backendMissing` while nothing listens there.
    public func connectAgain() throws {
        guard !isServer else {
            throw VhostError.notSupported(path: path, what: "reconnecting as a client (in server mode)")
        }
        socket?.close()
        socket = nil
        resetNegotiation()
        socket = try VhostUserSocket.connect(path: path)
    }

    /// Whether a connection is open (it may still have been closed by the peer).
    public var isConnected: Bool { socket != nil }

    // MARK: VhostBackend

    public func setOwner() throws {
        try send(VhostUserMessage(request: .setOwner))
    }

    public func getFeatures() throws -> UInt64 {
        let features = try query(.getFeatures)
        deviceFeatures = features
        protocolFeatures = []
        unsupportedFeatures = 0
        if features & VhostUserConstants.protocolFeaturesMask != 0 {
            let offered = VhostUserProtocolFeatures(rawValue: try query(.getProtocolFeatures))
            let agreed = offered.intersection(protocolFeatureMask)
            try send(VhostUserMessage(request: .setProtocolFeatures, payload: .u64(agreed.rawValue)))
            protocolFeatures = agreed
        }
        if !protocolFeatures.contains(.mq) {
            unsupportedFeatures |= VhostUserConstants.virtioNetFeatureMQ
        }
        return features
    }

    public func setFeatures(_ features: UInt64) throws {
        let value = features | (deviceFeatures & VhostUserConstants.protocolFeaturesMask)
        try send(VhostUserMessage(request: .setFeatures, payload: .u64(value)))
    }

    public func setMemoryTable(_ regions: [VhostMemoryRegion]) throws {
        guard regions.count <= maxMemoryRegions else {
            throw VhostError.tooManyRegions(path: path, count: regions.count, max: maxMemoryRegions)
        }
        if let bad = regions.first(where: { $0.fd < 0 }) {
            throw VhostError.io(path: path, operation: "SET_MEM_TABLE (region at 0x\(String(bad.userAddr, radix: 16)) has no fd)",
                                errno: EBADF)
        }
        try sendAcked(VhostUserMessage(request: .setMemTable, payload: .memoryTable(regions)),
                      fds: regions.map(\.fd))
    }

    public func setVringNum(_ state: VhostVringState) throws {
        try send(VhostUserMessage(request: .setVringNum, payload: .vringState(state)))
    }

    public func setVringBase(_ state: VhostVringState) throws {
        try send(VhostUserMessage(request: .setVringBase, payload: .vringState(state)))
    }

    public func getVringBase(index: UInt32) throws -> UInt32 {
        let reply = try exchange(VhostUserMessage(request: .getVringBase,
                                                  payload: .vringState(VhostVringState(index: index, num: 0))))
        guard case let .vringState(state) = reply.payload else {
            throw dropViolation("GET_VRING_BASE reply has no vring state")
        }
        guard state.index == index else {
            throw dropViolation("GET_VRING_BASE reply is for ring \(state.index), asked for ring \(index)")
        }
        return state.num
    }

    public func setVringAddr(_ addr: VhostVringAddr) throws {
        try send(VhostUserMessage(request: .setVringAddr, payload: .vringAddr(addr)))
    }

    public func setVringKick(index: UInt32, fd: Int32) throws {
        try setVringFile(.setVringKick, index: index, fd: fd)
    }

    public func setVringCall(index: UInt32, fd: Int32) throws {
        try setVringFile(.setVringCall, index: index, fd: fd)
    }

    public func setVringEnable(index: UInt32, enable: Bool) throws {
        try send(VhostUserMessage(request: .setVringEnable,
                                  payload: .vringState(VhostVringState(index: index, num: enable ? 1 : 0))))
    }

    public func setStatus(_ status: UInt8) throws {
        driverStatus = status
        try requireStatusChannel()
        try sendAcked(VhostUserMessage(request: .setStatus, payload: .u64(UInt64(status))))
    }

    public func getStatus() throws -> UInt8 {
        try requireStatusChannel()
        let status = UInt8(truncatingIfNeeded: try query(.getStatus))
        driverStatus = status
        return status
    }

    public func getConfig(offset: UInt32, size: UInt32) throws -> [UInt8] {
        guard protocolFeatures.contains(.config) else {
            throw VhostError.notSupported(path: path, what: "config space (CONFIG protocol feature not negotiated)")
        }
        guard size <= UInt32(VhostUserConstants.maxConfigSize) else {
            throw VhostError.io(path: path, operation: "GET_CONFIG of \(size) bytes", errno: EINVAL)
        }
        let request = VhostUserMessage(request: .getConfig,
                                       payload: .config(offset: offset, size: size, flags: 0,
                                                        bytes: [UInt8](repeating: 0, count: Int(size))))
        let reply = try exchange(request)
        guard case let .config(rOffset, rSize, _, bytes) = reply.payload, rOffset == offset, rSize == size else {
            throw dropViolation("GET_CONFIG reply does not match offset \(offset) size \(size)")
        }
        return bytes
    }

    public func setConfig(offset: UInt32, bytes: [UInt8]) throws {
        guard protocolFeatures.contains(.config) else {
            throw VhostError.notSupported(path: path, what: "config space (CONFIG protocol feature not negotiated)")
        }
        guard bytes.count <= VhostUserConstants.maxConfigSize else {
            throw VhostError.io(path: path, operation: "SET_CONFIG of \(bytes.count) bytes", errno: EINVAL)
        }
        try sendAcked(VhostUserMessage(request: .setConfig,
                                       payload: .config(offset: offset, size: UInt32(bytes.count), flags: 0, bytes: bytes)))
    }

    /// GET_QUEUE_NUM: how many queues the device has. Needs the MQ protocol feature.
    /// (DPDK's virtio-user does not ask; it is here for diagnostics.)
    public func getQueueNum() throws -> UInt64 {
        guard protocolFeatures.contains(.mq) else {
            throw VhostError.notSupported(path: path, what: "GET_QUEUE_NUM (MQ protocol feature not negotiated)")
        }
        return try query(.getQueueNum)
    }

    public func isPeerClosed() -> Bool {
        socket?.isPeerClosed() ?? true
    }

    public var peerFileDescriptor: Int32? {
        socket.map { $0.fileDescriptor }.flatMap { $0 >= 0 ? $0 : nil }
    }

    public var reconnectFileDescriptor: Int32? { listenerFileDescriptor }

    public func close() {
        socket?.close()
        socket = nil
        listener?.close()
        listener = nil
    }

    // MARK: Exchanges

    private func resetNegotiation() {
        deviceFeatures = 0
        protocolFeatures = []
        unsupportedFeatures = 0
        driverStatus = 0
    }

    /// DPDK's three gates for SET/GET_STATUS: features are negotiated (FEATURES_OK), the
    /// device has protocol features, and STATUS was agreed.
    private func requireStatusChannel() throws {
        guard driverStatus & VhostUserConstants.statusFeaturesOK != 0 else {
            throw VhostError.notSupported(path: path, what: "device status before FEATURES_OK")
        }
        guard deviceFeatures & VhostUserConstants.protocolFeaturesMask != 0,
              protocolFeatures.contains(.status) else {
            throw VhostError.notSupported(path: path, what: "device status (STATUS protocol feature not negotiated)")
        }
    }

    private func setVringFile(_ request: VhostUserRequest, index: UInt32, fd: Int32) throws {
        let hasFd = fd >= 0
        try send(VhostUserMessage(request: request,
                                  payload: .u64(VhostUserMessage.vringFilePayload(index: index, hasFd: hasFd))),
                 fds: hasFd ? [fd] : [])
    }

    private func connected() throws -> VhostUserSocket {
        guard let socket, socket.fileDescriptor >= 0 else { throw VhostError.closed(path: path) }
        return socket
    }

    /// Sends a request that has no reply.
    private func send(_ message: VhostUserMessage, fds: [Int32] = []) throws {
        let socket = try connected()
        sentRequests.append(message.request)
        do {
            try socket.send(message, fds: fds, timeoutMs: replyTimeoutMs)
        } catch {
            dropConnection()
            throw error
        }
    }

    /// Sends a request with NEED_REPLY when REPLY_ACK is agreed, and checks the ack.
    private func sendAcked(_ message: VhostUserMessage, fds: [Int32] = []) throws {
        guard protocolFeatures.contains(.replyAck) else {
            try send(message, fds: fds)
            return
        }
        var m = message
        m.flags.insert(.needReply)
        let reply = try exchange(m, fds: fds)
        guard let code = reply.u64Value else {
            throw dropViolation("\(message.request) REPLY_ACK has no u64")
        }
        if code != 0 {
            throw VhostError.nack(path: path, request: "\(message.request)", code: code)
        }
    }

    /// A GET_* request answered by a u64.
    private func query(_ request: VhostUserRequest) throws -> UInt64 {
        let reply = try exchange(VhostUserMessage(request: request))
        guard let v = reply.u64Value else { throw dropViolation("\(request) reply has no u64") }
        return v
    }

    /// Sends a request and waits for its reply, checking the request code, the flags
    /// (exactly version 1 with REPLY, as DPDK's `vhost_user_read`) and the size (by the codec).
    /// Descriptors sent by a hostile backend with its reply are closed.
    private func exchange(_ message: VhostUserMessage, fds: [Int32] = []) throws -> VhostUserMessage {
        try send(message, fds: fds)
        let socket = try connected()
        let reply: VhostUserMessage
        do {
            let (m, strayFds) = try socket.receive(timeoutMs: replyTimeoutMs, waitingFor: "the reply to \(message.request)",
                                                     expectingReply: true)
            for f in strayFds { Glibc.close(f) }
            reply = m
        } catch {
            dropConnection()
            throw error
        }
        guard reply.request == message.request else {
            throw dropViolation("reply to \(message.request) carries request \(reply.request)")
        }
        guard reply.flags == [.version1, .reply] else {
            throw dropViolation("reply to \(message.request) has flags 0x\(String(reply.flags.rawValue, radix: 16)), expected 0x5")
        }
        return reply
    }

    private func dropConnection() {
        socket?.close()
        socket = nil
    }

    private func dropViolation(_ detail: String) -> VhostError {
        dropConnection()
        return .protocolViolation(path: path, detail: detail)
    }
}
