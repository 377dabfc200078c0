/// How received packets are turned into transmitted ones (testpmd's `--forward-mode`).
public enum ForwardingMode: String, Sendable, CaseIterable {
    /// Forward unchanged.
    case io
    /// Rewrite source MAC to the port's own and destination to its peer.
    case mac
    /// Swap source and destination MAC.
    case macswap
    /// Receive and free; transmit nothing.
    case rxonly
    /// Generate UDP/IPv4 frames; ignore what is received.
    case txonly
}

/// Which port a port's received traffic is sent out of (testpmd's `--port-topology`).
public enum PortTopology: String, Sendable, CaseIterable {
    /// 0<->1, 2<->3, ...; an odd last port forwards to itself.
    case paired
    /// 0->1->2->...->0.
    case chained
    /// Every port forwards to itself.
    case loop
}

/// How an idle worker waits for packets.
public enum RxMode: String, Sendable, CaseIterable {
    /// Busy-poll the used rings.
    case poll
    /// Sleep on the call eventfd until the device signals a used buffer (the driver turns
    /// used-buffer notifications back on before sleeping).
    case interrupt
}

/// One virtio-user port: the DPDK `net_virtio_user` devargs of the same names.
public struct PortConfig: Sendable, Equatable {
    /// N in `port.N.*`; ports are numbered 0..<count without gaps.
    public var index: Int
    /// The backend: a vhost-user socket, `/dev/vhost-net`, or a vhost-vdpa character device.
    public var path: String
    /// Queue pairs offered.
    public var queues: Int
    /// Descriptors per virtqueue.
    public var queueSize: Int
    /// The port's MAC; nil means "from the device, else random".
    public var mac: MACAddress?
    /// virtio-user listens on `path` and the backend connects (vhost-user only).
    public var server: Bool
    /// Offer VIRTIO_NET_F_MRG_RXBUF.
    public var mrgRxbuf: Bool
    /// Offer VIRTIO_F_IN_ORDER.
    public var inOrder: Bool
    /// Offer VIRTIO_F_RING_PACKED.
    public var packedVq: Bool
    /// Offer a control virtqueue.
    public var cq: Bool
    /// Reconnect interval in milliseconds; 0 disables reconnection.
    public var reconnectMs: Int
    /// Tap name template (vhost-kernel only).
    public var iface: String
    /// Accept VIRTIO_RING_F_INDIRECT_DESC (chained TX frames through indirect tables).
    public var indirect: Bool
    /// Where this port's first key was set: the file name, or `<command line>`.
    public var file: String
    /// The 1-based line (or argument position) of this port's first key, for later messages.
    public var line: Int

    public init(index: Int, path: String, queues: Int = 1, queueSize: Int = 256,
                mac: MACAddress? = nil, server: Bool = false, mrgRxbuf: Bool = true,
                inOrder: Bool = true, packedVq: Bool = false, cq: Bool = false,
                reconnectMs: Int = 0, iface: String = "tap%d", indirect: Bool = true,
                file: String = "", line: Int = 0) {
        self.index = index
        self.path = path
        self.queues = queues
        self.queueSize = queueSize
        self.mac = mac
        self.server = server
        self.mrgRxbuf = mrgRxbuf
        self.inOrder = inOrder
        self.packedVq = packedVq
        self.cq = cq
        self.reconnectMs = reconnectMs
        self.iface = iface
        self.indirect = indirect
        self.file = file
        self.line = line
    }

    /// `FILE:LINE` of this port's first key, to prefix run-time errors about the port.
    public var location: String { "\(file):\(line)" }
}

/// A validated Ferry run configuration.
public struct FerryConfiguration: Sendable, Equatable {
    /// At least one port, indexed 0..<ports.count (`ports[i].index == i`).
    public var ports: [PortConfig]
    public var fwd: ForwardingMode
    /// Packets per burst, 1...512.
    public var burst: Int
    /// Segment lengths of generated frames (txonly and tx_first); total 42...9000.
    public var txPackets: [Int]
    /// Bursts each stream sends before forwarding starts.
    public var txFirst: Int
    /// CPUs for workers, in the order given; nil means choose automatically.
    public var cores: [Int]?
    /// Peer MAC per port, with `02:00:00:00:00:0N` filled in for every port not configured.
    public var ethPeers: [Int: MACAddress]
    public var portTopology: PortTopology
    /// Seconds between periodic statistics; 0 disables them.
    public var statsPeriod: Int
    /// Seconds to run; 0 runs until SIGINT/SIGTERM.
    public var duration: Double
    /// File to write final statistics to as JSON.
    public var statsJSON: String?
    public var rxMode: RxMode
    /// The largest frame received, header excluded (testpmd's `--max-pkt-len`), 64...9216.
    /// Longer frames are dropped and counted as RX errors. Without MRG_RXBUF each posted RX
    /// chain is sized for it (virtio 1.2 §5.1.6.3.1), so a smaller value means fewer buffers
    /// per chain and more frames per ring.
    public var maxPacketLength: Int
    /// The most `maxPacketLength` may be: a 9000-byte payload with Ethernet and VLAN headers,
    /// rounded up.
    public static let largestFrame = 9216

    public init(ports: [PortConfig], fwd: ForwardingMode = .io, burst: Int = 32,
                txPackets: [Int] = [64], txFirst: Int = 0, cores: [Int]? = nil,
                ethPeers: [Int: MACAddress] = [:], portTopology: PortTopology = .paired,
                statsPeriod: Int = 0, duration: Double = 0, statsJSON: String? = nil,
                rxMode: RxMode = .poll, maxPacketLength: Int = FerryConfiguration.largestFrame) {
        self.ports = ports
        self.fwd = fwd
        self.burst = burst
        self.txPackets = txPackets
        self.txFirst = txFirst
        self.cores = cores
        var peers = ethPeers
        for port in ports where peers[port.index] == nil {
            peers[port.index] = MACAddress.defaultPeer(port: port.index)
        }
        self.ethPeers = peers
        self.portTopology = portTopology
        self.statsPeriod = statsPeriod
        self.duration = duration
        self.statsJSON = statsJSON
        self.rxMode = rxMode
        self.maxPacketLength = maxPacketLength
    }

    /// The destination MAC `mac` mode writes for frames sent on `port`.
    public func ethPeer(port: Int) -> MACAddress {
        ethPeers[port] ?? MACAddress.defaultPeer(port: port)
    }

    /// Total length of a generated frame.
    public var txPacketLength: Int { txPackets.reduce(0, +) }
}
