import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// The vhost-kernel transport: the `VhostBackend` calls as ioctls on /dev/vhost-net, with a tap
/// interface carrying the frames, the way DPDK's virtio-user does it
/// (drivers/net/virtio/virtio_user/vhost_kernel.c).
///
/// What it keeps from DPDK:
/// - One /dev/vhost-net fd and one tap queue per queue pair: vhost-net serves exactly one RX
///   and one TX ring per fd. The protocol's vring indices are global (RX 2p, TX 2p+1), so
///   vring `i` is ring `i % 2` of fd `i / 2`.
/// - SET_OWNER, SET_FEATURES and SET_MEM_TABLE go to every fd; GET_FEATURES to the first.
/// - GET_FEATURES adds what the tap provides though vhost-net does not list it: the guest and
///   host offloads (the tap has a virtio-net header) and MQ (the tap is multi-queue).
///   SET_FEATURES strips them again, with ACCESS_PLATFORM (Ferry's memory needs no IOMMU) and
///   bit 27 (VHOST_NET_F_VIRTIO_NET_HDR: the tap, not vhost-net, handles the header).
/// - The memory-region limit is vhost's `max_mem_regions` module parameter (default 64).
/// - Enabling a ring attaches the tap queue behind it with VHOST_NET_SET_BACKEND; disabling
///   attaches -1. vhost-net has no per-ring enable, and this is DPDK's `enable_qp`. The first
///   enable of a pair sets the tap's header size (TUNSETVNETHDRSZ: 12 with VERSION_1 or
///   MRG_RXBUF), its send buffer and offloads; the first start sets the interface MAC
///   (`macAddress`) on pair 0.
/// - No status and no config space: those calls throw `notSupported`, which the device
///   lifecycle treats as "this backend has none".
///
/// Not thread-safe: one control thread drives it.
public final class VhostKernelBackend: VhostBackend {
    public static let defaultPath = "/dev/vhost-net"
    /// vhost's module parameter for the memory-region limit.
    public static let maxMemRegionsParameter = "/sys/module/vhost/parameters/max_mem_regions"
    /// vhost's default when the parameter cannot be read.
    public static let defaultMaxMemoryRegions = 64

    public let path: String
    public let queuePairs: Int
    /// The tap interface's name, as the kernel resolved it (tap%d becomes tap0, ...).
    public let interfaceName: String
    public let maxMemoryRegions: Int
    /// vhost-kernel adds no transport bits of its own (DPDK: `get_backend_features` = 0).
    public var backendFeatures: UInt64 { 0 }
    public private(set) var unsupportedFeatures: UInt64 = 0
    /// The MAC to give the tap interface at the first start (DPDK's `tap_set_mac`); nil leaves
    /// the kernel's random one. Set it before DRIVER_OK.
    public var macAddress: [UInt8]?

    /// The features from the last SET_FEATURES, before the transport stripped its bits.
    public private(set) var driverFeatures: UInt64 = 0
    /// Which vrings have their tap queue attached.
    public private(set) var attached: [Bool]

    let channels: [VhostIoctlChannel]
    let taps: [TapQueue]
    private var macApplied = false
    private var closed = false

    /// Opens `queuePairs` fds of `path` and a tap queue each on `interfaceName` (tap%d when
    /// nil), multi-queue when `queuePairs` > 1.
    public convenience init(path: String = VhostKernelBackend.defaultPath, queuePairs: Int = 1,
                            interfaceName: String? = nil) throws {
        guard queuePairs >= 1 && queuePairs <= 0x8000 else {
            throw VhostError.io(path: path, operation: "open (\(queuePairs) queue pairs)", errno: EINVAL)
        }
        var devices: [any VhostIoctlDevice] = []
        var taps: [TapQueue] = []
        do {
            for _ in 0..<queuePairs { devices.append(try VhostFileDevice(path: path)) }
            let first = try TapQueue.open(name: interfaceName ?? TapQueue.defaultNamePattern, multiQueue: queuePairs > 1)
            taps.append(first)
            // Later queues join the interface the first one resolved.
            for _ in 1..<queuePairs { taps.append(try TapQueue.open(name: first.name, multiQueue: true)) }
        } catch {
            for d in devices { d.close() }
            for t in taps { t.close() }
            throw error
        }
        self.init(path: path, devices: devices, taps: taps,
                  maxMemoryRegions: Self.readMaxMemoryRegions(Self.maxMemRegionsParameter))
    }

    /// Assembles a backend from open devices (one per pair) and tap queues. Tests use it.
    init(path: String, devices: [any VhostIoctlDevice], taps: [TapQueue], maxMemoryRegions: Int) {
        precondition(!devices.isEmpty && devices.count == taps.count, "one vhost fd and one tap queue per pair")
        self.path = path
        queuePairs = devices.count
        channels = devices.map { VhostIoctlChannel(device: $0, path: path) }
        self.taps = taps
        interfaceName = taps[0].name
        self.maxMemoryRegions = maxMemoryRegions
        attached = Array(repeating: false, count: 2 * devices.count)
    }

    deinit { close() }

    /// vhost's `max_mem_regions` (DPDK's `get_vhost_kernel_max_regions`); the default when the
    /// file is missing or does not hold a sane number.
    public static func readMaxMemoryRegions(_ parameterPath: String) -> Int {
        let fd = open(parameterPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return defaultMaxMemoryRegions }
        defer { Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count - 1) }
        guard n > 0 else { return defaultMaxMemoryRegions }
        return parseMaxMemoryRegions(String(decoding: buffer[0..<n], as: UTF8.self))
    }

    /// The parameter's text as a region count: a positive integer up to 65536, else the default.
    public static func parseMaxMemoryRegions(_ text: String) -> Int {
        let trimmed = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
        guard trimmed.count == 1, let value = Int(trimmed[0]), value >= 1, value <= 65536 else { return defaultMaxMemoryRegions }
        return value
    }

    // MARK: VhostBackend

    public func setOwner() throws {
        for c in try liveChannels() { try c.setOwner() }
    }

    public func getFeatures() throws -> UInt64 {
        var features = try liveChannels()[0].getFeatures()
        if taps[0].hasVnetHeader {
            features |= VhostKernelFeatureBits.tapGuestOffloads | VhostKernelFeatureBits.tapHostOffloads
        }
        if taps[0].isMultiQueue { features |= VhostKernelFeatureBits.mq }
        return features
    }

    public func setFeatures(_ features: UInt64) throws {
        driverFeatures = features
        let wire = Self.wireFeatures(features)
        for c in try liveChannels() { try c.setFeatures(wire) }
    }

    /// What vhost-net is told: the driver's features without what only the tap implements
    /// (offloads, MQ), without ACCESS_PLATFORM, and without bit 27.
    public static func wireFeatures(_ features: UInt64) -> UInt64 {
        features & ~(VhostKernelFeatureBits.accessPlatform | VhostKernelFeatureBits.tapGuestOffloads
                     | VhostKernelFeatureBits.tapHostOffloads | VhostKernelFeatureBits.mq
                     | VhostKernelFeatureBits.vhostNetVirtioNetHeader)
    }

    public func setMemoryTable(_ regions: [VhostMemoryRegion]) throws {
        guard regions.count <= maxMemoryRegions else {
            throw VhostError.tooManyRegions(path: path, count: regions.count, max: maxMemoryRegions)
        }
        for r in regions where r.memorySize == 0 || r.userAddr > UInt64.max - r.memorySize
            || r.guestPhysAddr > UInt64.max - r.memorySize {
            throw VhostError.io(path: path, operation: "VHOST_SET_MEM_TABLE (region at 0x\(String(r.userAddr, radix: 16)) of 0x\(String(r.memorySize, radix: 16)) bytes)",
                                errno: EINVAL)
        }
        for c in try liveChannels() { try c.setMemoryTable(regions) }
    }

    public func setVringNum(_ state: VhostVringState) throws {
        let (c, ring) = try locate(state.index)
        try c.setVringNum(index: ring, num: state.num)
    }

    public func setVringBase(_ state: VhostVringState) throws {
        let (c, ring) = try locate(state.index)
        try c.setVringBase(index: ring, num: state.num)
    }

    public func getVringBase(index: UInt32) throws -> UInt32 {
        let (c, ring) = try locate(index)
        return try c.getVringBase(index: ring)
    }

    public func setVringAddr(_ addr: VhostVringAddr) throws {
        let (c, ring) = try locate(addr.index)
        try c.setVringAddr(index: ring, addr)
    }

    public func setVringKick(index: UInt32, fd: Int32) throws {
        let (c, ring) = try locate(index)
        try c.setVringKick(index: ring, fd: fd)
    }

    public func setVringCall(index: UInt32, fd: Int32) throws {
        let (c, ring) = try locate(index)
        try c.setVringCall(index: ring, fd: fd)
    }

    public func setVringEnable(index: UInt32, enable: Bool) throws {
        let (c, ring) = try locate(index)
        let i = Int(index)
        guard attached[i] != enable else { return }
        let pair = i / 2
        if enable {
            if !attached[2 * pair] && !attached[2 * pair + 1] { try prepareTap(pair) }
            try c.netSetBackend(index: ring, fd: taps[pair].fileDescriptor)
        } else {
            try c.netSetBackend(index: ring, fd: -1)
        }
        attached[i] = enable
    }

    public func setStatus(_ status: UInt8) throws {
        throw VhostError.notSupported(path: path, what: "device status (vhost-kernel has none)")
    }

    public func getStatus() throws -> UInt8 {
        throw VhostError.notSupported(path: path, what: "device status (vhost-kernel has none)")
    }

    public func getConfig(offset: UInt32, size: UInt32) throws -> [UInt8] {
        throw VhostError.notSupported(path: path, what: "config space (vhost-kernel has none)")
    }

    public func setConfig(offset: UInt32, bytes: [UInt8]) throws {
        throw VhostError.notSupported(path: path, what: "config space (vhost-kernel has none)")
    }

    /// The kernel does not go away; only `close()` ends the backend.
    public func isPeerClosed() -> Bool { closed }

    public func close() {
        guard !closed else { return }
        closed = true
        for c in channels { c.device.close() }
        for t in taps { t.close() }
    }

    // MARK: Helpers

    private func liveChannels() throws -> [VhostIoctlChannel] {
        guard !closed else { throw VhostError.closed(path: path) }
        return channels
    }

    /// The fd and per-fd ring index behind global vring `index`; out of range is EINVAL.
    private func locate(_ index: UInt32) throws -> (VhostIoctlChannel, UInt32) {
        let all = try liveChannels()
        guard Int(index) < 2 * all.count else {
            throw VhostError.io(path: path, operation: "vring \(index) (this backend has \(2 * all.count) vrings)", errno: EINVAL)
        }
        return (all[Int(index) / 2], index % 2)
    }

    /// DPDK's `vhost_kernel_tap_setup` and, once, `tap_set_mac`.
    private func prepareTap(_ pair: Int) throws {
        let tap = taps[pair]
        let features = driverFeatures
        let headerSize: Int32 = features & (VhostKernelFeatureBits.version1 | VhostKernelFeatureBits.mrgRxbuf) != 0 ? 12 : 10
        if pair == 0, !macApplied, let mac = macAddress {
            try tap.setMAC(mac)
            macApplied = true
        }
        try tap.setVnetHeaderSize(headerSize)
        try tap.setSendBuffer(Int32.max)
        let offload = TapQueue.offloadFlags(features: features)
        if offload != 0 {
            // A kernel without an offload (UFO went away in 4.14) refuses the whole set; retry
            // without UFO, as DPDK does.
            do {
                try tap.setOffload(offload)
            } catch {
                try tap.setOffload(offload & ~UInt32(FERRY_TUN_F_UFO))
            }
        }
    }
}
