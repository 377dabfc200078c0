/// What a virtio-user port is asked to be: DPDK's virtio-user devargs, by the same names.
public struct VirtioUserOptions: Sendable, Equatable {
    /// A vhost-user socket (or, later, /dev/vhost-net or /dev/vhost-vdpa-N).
    public var path: String
    /// Maximum queue pairs (`queues`).
    public var queues: Int
    /// Ring size (`queue_size`).
    public var queueSize: Int
    /// The port MAC (`mac`), or nil to take the device's or a random one.
    public var mac: [UInt8]?
    /// Listen on `path` and let the backend connect (`server`).
    public var server: Bool
    /// Offer MRG_RXBUF (`mrg_rxbuf`).
    public var mrgRxbuf: Bool
    /// Offer IN_ORDER (`in_order`).
    public var inOrder: Bool
    /// Offer RING_PACKED (`packed_vq`).
    public var packedVq: Bool
    /// Accept VIRTIO_RING_F_INDIRECT_DESC: chained TX frames then take one ring slot each.
    /// Not a DPDK devarg (DPDK always accepts it); off keeps every chain direct.
    public var indirect: Bool
    /// Claim a control queue (`cq`); forced on with more than one queue pair.
    public var cq: Bool
    /// How long server mode waits for the backend to connect.
    public var acceptTimeoutMs: Int
    /// The tap for vhost-kernel (`iface`); nil or "tap%d" lets the kernel name it.
    public var iface: String?

    public init(path: String, queues: Int = 1, queueSize: Int = 256, mac: [UInt8]? = nil,
                server: Bool = false, mrgRxbuf: Bool = true, inOrder: Bool = true,
                packedVq: Bool = false, cq: Bool = false, acceptTimeoutMs: Int = 30_000, iface: String? = nil,
                indirect: Bool = true) {
        self.path = path
        self.queues = queues
        self.queueSize = queueSize
        self.mac = mac
        self.server = server
        self.mrgRxbuf = mrgRxbuf
        self.inOrder = inOrder
        self.packedVq = packedVq
        self.indirect = indirect
        self.cq = cq
        self.acceptTimeoutMs = acceptTimeoutMs
        self.iface = iface
    }
}

public enum VirtioUserError: Error, CustomStringConvertible {
    case serverModeNeedsVhostUser(path: String)
    case tooManyQueuePairs(path: String, requested: Int, supported: Int)
    case featuresRejected(path: String, status: UInt8)
    case driverRejected(path: String, status: UInt8)
    case invalidState(path: String, detail: String)

    public var description: String {
        switch self {
        case let .serverModeNeedsVhostUser(path):
            return "\(path): server mode only works with vhost-user sockets"
        case let .tooManyQueuePairs(path, requested, supported):
            return "\(path): \(requested) queue pairs requested, the backend supports \(supported)"
        case let .featuresRejected(path, status):
            return "\(path): device did not accept the features (status 0x\(String(status, radix: 16)))"
        case let .driverRejected(path, status):
            return "\(path): device did not accept DRIVER_OK (status 0x\(String(status, radix: 16)))"
        case let .invalidState(path, detail):
            return "\(path): \(detail)"
        }
    }
}
