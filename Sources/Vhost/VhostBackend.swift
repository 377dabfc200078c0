/// The vhost backend protocol: what the virtio-user device asks of a backend, whatever the
/// transport (vhost-user socket, vhost-net or vhost-vdpa ioctls).
///
/// The calls mirror DPDK's `struct virtio_user_backend_ops`, so the device lifecycle in
/// `VirtioUser` reads like the seed. This is control path only: nothing here is called per
/// packet, so an existential (`any VhostBackend`) costs nothing that matters.
///
/// Every value a backend returns is untrusted; implementations validate replies (request code,
/// size, flags) and throw `VhostError.protocolViolation` rather than use a malformed one.
public protocol VhostBackend: AnyObject {
    /// The path the backend was opened from (socket, /dev/vhost-net, /dev/vhost-vdpa-N).
    var path: String { get }
    /// How many memory regions SET_MEM_TABLE may carry (8 for vhost-user).
    var maxMemoryRegions: Int { get }
    /// Feature bits the transport adds to the seed's supported set
    /// (`get_backend_features`; PROTOCOL_FEATURES for vhost-user).
    var backendFeatures: UInt64 { get }
    /// Features the transport says the device cannot have whatever it offers (for vhost-user,
    /// MQ when the MQ protocol feature was not negotiated). Valid after `getFeatures()`.
    var unsupportedFeatures: UInt64 { get }

    func setOwner() throws
    /// GET_FEATURES; for vhost-user also negotiates protocol features, as DPDK does.
    func getFeatures() throws -> UInt64
    func setFeatures(_ features: UInt64) throws
    func setMemoryTable(_ regions: [VhostMemoryRegion]) throws
    func setVringNum(_ state: VhostVringState) throws
    func setVringBase(_ state: VhostVringState) throws
    /// Stops the ring and returns the device's next avail index (bit 15: wrap on packed rings).
    func getVringBase(index: UInt32) throws -> UInt32
    func setVringAddr(_ addr: VhostVringAddr) throws
    func setVringKick(index: UInt32, fd: Int32) throws
    func setVringCall(index: UInt32, fd: Int32) throws
    func setVringEnable(index: UInt32, enable: Bool) throws
    /// SET_STATUS; throws `VhostError.notSupported` when the backend has no status channel.
    func setStatus(_ status: UInt8) throws
    /// GET_STATUS; throws `VhostError.notSupported` when the backend has no status channel.
    func getStatus() throws -> UInt8
    /// Reads device config space; throws `VhostError.notSupported` where there is none.
    func getConfig(offset: UInt32, size: UInt32) throws -> [UInt8]
    /// Writes device config space; throws `VhostError.notSupported` where there is none.
    func setConfig(offset: UInt32, bytes: [UInt8]) throws

    /// True once the peer has gone away (socket closed). Cheap; checked by the control thread.
    func isPeerClosed() -> Bool
    /// A descriptor that hangs up when the peer goes away (the vhost-user connection), so the
    /// control thread can sleep in poll(2) instead of checking `isPeerClosed` on a timer. nil
    /// when the transport has none: the kernel backends' peer is this kernel, which does not
    /// leave.
    var peerFileDescriptor: Int32? { get }
    /// A descriptor that turns readable when a reconnect can proceed without waiting (server
    /// mode's listening socket, readable once a backend connects), else nil.
    var reconnectFileDescriptor: Int32? { get }
    /// Releases the connection or file descriptors. Idempotent.
    func close()
}

extension VhostBackend {
    public var peerFileDescriptor: Int32? { nil }
    public var reconnectFileDescriptor: Int32? { nil }

    /// Enables or disables both vrings of a queue pair (DPDK's `enable_qp`): RX is 2·pair,
    /// TX is 2·pair+1.
    public func enableQueuePair(_ pair: Int, enable: Bool) throws {
        try setVringEnable(index: UInt32(2 * pair), enable: enable)
        try setVringEnable(index: UInt32(2 * pair + 1), enable: enable)
    }
}

/// One region of Ferry's shared memory as the backend maps it (VhostUserMemoryRegion).
/// Ferry's addresses are its own virtual addresses, as in DPDK's virtio-user, so
/// `guestPhysAddr == userAddr`.
public struct VhostMemoryRegion: Equatable, Sendable {
    public var guestPhysAddr: UInt64
    public var memorySize: UInt64
    public var userAddr: UInt64
    public var mmapOffset: UInt64
    /// The memfd backing the region; sent with SCM_RIGHTS. Not owned by this value.
    public var fd: Int32

    public init(guestPhysAddr: UInt64, memorySize: UInt64, userAddr: UInt64, mmapOffset: UInt64, fd: Int32) {
        self.guestPhysAddr = guestPhysAddr
        self.memorySize = memorySize
        self.userAddr = userAddr
        self.mmapOffset = mmapOffset
        self.fd = fd
    }
}

/// `struct vhost_vring_state`: a ring index and a number (size, base).
public struct VhostVringState: Equatable, Sendable {
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }
}

/// `struct vhost_vring_addr`: where a ring's three areas live, in Ferry's virtual addresses.
public struct VhostVringAddr: Equatable, Sendable {
    public var index: UInt32
    public var flags: UInt32
    public var descUserAddr: UInt64
    public var usedUserAddr: UInt64
    public var availUserAddr: UInt64
    public var logGuestAddr: UInt64
    public init(index: UInt32, flags: UInt32 = 0, descUserAddr: UInt64, usedUserAddr: UInt64,
                availUserAddr: UInt64, logGuestAddr: UInt64 = 0) {
        self.index = index
        self.flags = flags
        self.descUserAddr = descUserAddr
        self.usedUserAddr = usedUserAddr
        self.availUserAddr = availUserAddr
        self.logGuestAddr = logGuestAddr
    }
}

/// What can go wrong talking to a backend. Messages name the path, so an operator sees which
/// port failed.
public enum VhostError: Error, Equatable, CustomStringConvertible {
    /// Nothing is listening at the path (ENOENT, ECONNREFUSED).
    case backendMissing(path: String, errno: Int32)
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// The peer closed the connection.
    case closed(path: String)
    /// The backend sent something malformed: wrong request code, size or flags.
    case protocolViolation(path: String, detail: String)
    /// The backend lacks what the call needs (no STATUS, no CONFIG).
    case notSupported(path: String, what: String)
    /// REPLY_ACK came back non-zero.
    case nack(path: String, request: String, code: UInt64)
    /// More memory regions than the backend accepts.
    case tooManyRegions(path: String, count: Int, max: Int)
    /// No answer in time.
    case timeout(path: String, what: String)

    public var description: String {
        switch self {
        case let .backendMissing(path, errno):
            return "\(path): no vhost backend there (\(String(cString: strerrorCompat(errno))))"
        case let .io(path, op, errno):
            return "\(path): \(op) failed: \(String(cString: strerrorCompat(errno)))"
        case let .closed(path):
            return "\(path): backend closed the connection"
        case let .protocolViolation(path, detail):
            return "\(path): protocol violation: \(detail)"
        case let .notSupported(path, what):
            return "\(path): backend does not support \(what)"
        case let .nack(path, request, code):
            return "\(path): backend refused \(request) (reply \(code))"
        case let .tooManyRegions(path, count, max):
            return "\(path): \(count) memory regions, backend accepts at most \(max)"
        case let .timeout(path, what):
            return "\(path): timed out waiting for \(what)"
        }
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func strerrorCompat(_ e: Int32) -> UnsafeMutablePointer<CChar> { strerror(e) }
#endif
