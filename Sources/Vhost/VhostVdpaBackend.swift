import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// The vhost-vdpa transport: the `VhostBackend` calls as ioctls on /dev/vhost-vdpa-N, the way
/// DPDK's virtio-user does it (drivers/net/virtio/virtio_user/vhost_vdpa.c).
///
/// What it keeps from DPDK:
/// - The device must be a network device: VHOST_VDPA_GET_DEVICE_ID is 1 (VIRTIO_ID_NET).
/// - GET_FEATURES also negotiates the backend features: the device's offer masked to
///   IOTLB_MSG_V2 | IOTLB_BATCH, written back with SET_BACKEND_FEATURES.
/// - SET_FEATURES always adds ACCESS_PLATFORM (bit 33): a vDPA device reaches Ferry's memory
///   only through the IOTLB, and vdpa_sim refuses features without it.
/// - Memory is mapped with IOTLB v2 messages written to the fd: BATCH_BEGIN, INVALIDATE of
///   everything, one read-write UPDATE per region, BATCH_END. The IOVA is Ferry's own virtual
///   address (`guestPhysAddr`), so rings and descriptors carry the same addresses as on every
///   other backend.
/// - Status, config space (the MAC, max_virtqueue_pairs) and ring enable are the vDPA ioctls.
/// - The vring indices are the device's own: RX 2p, TX 2p+1, then its control queue.
///
/// Stricter than DPDK: ring indices are checked against VHOST_VDPA_GET_VQS_COUNT and regions
/// against VHOST_VDPA_GET_IOVA_RANGE when the kernel answers those, and config reads against
/// the config size, so a mistake is a named error rather than an EINVAL from deep in the
/// kernel. Closing the fd resets the device.
///
/// Not thread-safe: one control thread drives it.
public final class VhostVdpaBackend: VhostBackend {
    /// The most mappings Ferry will send; vdpa_sim's IOTLB holds 2048 entries by default, and
    /// Ferry shares one region.
    public static let maxIotlbRegions = 256
    /// The largest config access accepted (virtio-net's config is 24 bytes today; the kernel
    /// caps reads at the device's config size).
    public static let maxConfigBytes = 256

    public let path: String
    public var maxMemoryRegions: Int { Self.maxIotlbRegions }
    /// vhost-vdpa adds no bits to the supported set; ACCESS_PLATFORM is added at SET_FEATURES.
    public var backendFeatures: UInt64 { 0 }
    public private(set) var unsupportedFeatures: UInt64 = 0

    public let deviceID: UInt32
    /// Virtqueues the device has (data queues and its control queue), or nil when the kernel
    /// does not say.
    public let virtqueueCount: UInt32?
    /// The largest ring the device accepts, or nil when the kernel does not say.
    public let maxQueueSize: UInt16?
    public let configSize: UInt32?
    /// The IOVA window the device can address, or nil when the kernel does not say.
    public let iovaRange: (first: UInt64, last: UInt64)?

    /// The device's features from the last GET_FEATURES.
    public private(set) var deviceFeatures: UInt64 = 0
    /// The backend features agreed at GET_FEATURES.
    public private(set) var negotiatedBackendFeatures: VhostBackendFeatures = []
    /// Every IOTLB message written, in order (control path; a handful per start).
    public private(set) var sentIotlbMessages: [VhostIotlbMessage] = []

    let channel: VhostIoctlChannel
    private var closed = false

    /// Opens `path` and checks it is a vDPA network device.
    public convenience init(path: String) throws {
        let device = try VhostFileDevice(path: path)
        do {
            try self.init(path: path, device: device)
        } catch {
            device.close()
            throw error
        }
    }

    /// Wraps an open device (tests pass a recording double). Reads the device id and, where the
    /// kernel has them, the virtqueue count, ring size limit, config size and IOVA range.
    init(path: String, device: any VhostIoctlDevice) throws {
        self.path = path
        channel = VhostIoctlChannel(device: device, path: path)
        deviceID = try channel.vdpaGetDeviceID()
        guard deviceID == UInt32(FERRY_VIRTIO_ID_NET) else {
            throw VhostError.notSupported(path: path, what: "vDPA device id \(deviceID) (only 1, a network device)")
        }
        virtqueueCount = try? channel.vdpaGetVqsCount()
        maxQueueSize = try? channel.vdpaGetVringNum()
        configSize = try? channel.vdpaGetConfigSize()
        iovaRange = try? channel.vdpaGetIovaRange()
    }

    deinit { close() }

    // MARK: VhostBackend

    public func setOwner() throws {
        try live().setOwner()
    }

    public func getFeatures() throws -> UInt64 {
        let c = try live()
        let features = try c.getFeatures()
        deviceFeatures = features
        let offered = VhostBackendFeatures(rawValue: try c.getBackendFeatures())
        let agreed = offered.intersection(.ferrySupported)
        try c.setBackendFeatures(agreed.rawValue)
        negotiatedBackendFeatures = agreed
        return features
    }

    public func setFeatures(_ features: UInt64) throws {
        try live().setFeatures(Self.wireFeatures(features))
    }

    /// What the device is told: the driver's features plus ACCESS_PLATFORM.
    public static func wireFeatures(_ features: UInt64) -> UInt64 {
        features | VhostKernelFeatureBits.accessPlatform
    }

    public func setMemoryTable(_ regions: [VhostMemoryRegion]) throws {
        let c = try live()
        guard negotiatedBackendFeatures.contains(.iotlbMessageV2) else {
            throw VhostError.notSupported(path: path, what: "IOTLB_MSG_V2 (GET_FEATURES first, or the device lacks it)")
        }
        guard regions.count <= maxMemoryRegions else {
            throw VhostError.tooManyRegions(path: path, count: regions.count, max: maxMemoryRegions)
        }
        for r in regions {
            guard r.memorySize > 0, r.guestPhysAddr <= UInt64.max - (r.memorySize - 1),
                  r.userAddr <= UInt64.max - (r.memorySize - 1) else {
                throw VhostError.io(path: path, operation: "IOTLB update (region at 0x\(String(r.guestPhysAddr, radix: 16)) of 0x\(String(r.memorySize, radix: 16)) bytes)",
                                    errno: EINVAL)
            }
            if let range = iovaRange, r.guestPhysAddr < range.first || r.guestPhysAddr + (r.memorySize - 1) > range.last {
                throw VhostError.io(path: path, operation: "IOTLB update (region 0x\(String(r.guestPhysAddr, radix: 16))+0x\(String(r.memorySize, radix: 16)) outside the device's IOVA range 0x\(String(range.first, radix: 16))-0x\(String(range.last, radix: 16)))",
                                    errno: ERANGE)
            }
        }
        let batch = negotiatedBackendFeatures.contains(.iotlbBatch)
        for message in VhostIotlbMessage.memoryTable(regions, batch: batch) {
            sentIotlbMessages.append(message)
            do {
                try c.writeIotlb(message)
            } catch let VhostError.io(p, operation, e) where e == EFAULT && message.kind == .update {
                // vhost reports every refused IOTLB message as EFAULT (vhost_chr_write_iter).
                // One common cause: a device without its own address translation (hardware,
                // vdpa_sim with use_va=0) pins Ferry's pages, and they count against
                // RLIMIT_MEMLOCK, root included.
                throw VhostError.io(path: p, operation: operation + "; the device refused the mapping (if it pins memory, check RLIMIT_MEMLOCK: ulimit -l)",
                                    errno: e)
            }
        }
    }

    public func setVringNum(_ state: VhostVringState) throws {
        try live(ring: state.index).setVringNum(index: state.index, num: state.num)
    }

    public func setVringBase(_ state: VhostVringState) throws {
        try live(ring: state.index).setVringBase(index: state.index, num: state.num)
    }

    public func getVringBase(index: UInt32) throws -> UInt32 {
        try live(ring: index).getVringBase(index: index)
    }

    public func setVringAddr(_ addr: VhostVringAddr) throws {
        try live(ring: addr.index).setVringAddr(index: addr.index, addr)
    }

    public func setVringKick(index: UInt32, fd: Int32) throws {
        try live(ring: index).setVringKick(index: index, fd: fd)
    }

    public func setVringCall(index: UInt32, fd: Int32) throws {
        try live(ring: index).setVringCall(index: index, fd: fd)
    }

    public func setVringEnable(index: UInt32, enable: Bool) throws {
        try live(ring: index).vdpaSetVringEnable(index: index, enable: enable)
    }

    public func setStatus(_ status: UInt8) throws {
        try live().vdpaSetStatus(status)
    }

    public func getStatus() throws -> UInt8 {
        try live().vdpaGetStatus()
    }

    public func getConfig(offset: UInt32, size: UInt32) throws -> [UInt8] {
        let c = try live()
        try checkConfigAccess(offset: offset, size: Int(size))
        let bytes = try c.vdpaGetConfig(offset: offset, size: Int(size))
        guard bytes.count == Int(size) else {
            throw VhostError.protocolViolation(path: path, detail: "GET_CONFIG returned \(bytes.count) bytes, asked for \(size)")
        }
        return bytes
    }

    public func setConfig(offset: UInt32, bytes: [UInt8]) throws {
        let c = try live()
        try checkConfigAccess(offset: offset, size: bytes.count)
        try c.vdpaSetConfig(offset: offset, bytes: bytes)
    }

    /// The kernel does not go away; only `close()` ends the backend.
    public func isPeerClosed() -> Bool { closed }

    /// Closes the fd, which resets the device.
    public func close() {
        guard !closed else { return }
        closed = true
        channel.device.close()
    }

    // MARK: Helpers

    private func live() throws -> VhostIoctlChannel {
        guard !closed else { throw VhostError.closed(path: path) }
        return channel
    }

    private func live(ring index: UInt32) throws -> VhostIoctlChannel {
        let c = try live()
        if let count = virtqueueCount, index >= count {
            throw VhostError.io(path: path, operation: "vring \(index) (the device has \(count) virtqueues)", errno: EINVAL)
        }
        return c
    }

    private func checkConfigAccess(offset: UInt32, size: Int) throws {
        let limit = configSize.map { Int($0) } ?? Self.maxConfigBytes
        guard size >= 0, size <= Self.maxConfigBytes, Int(offset) + size <= limit else {
            throw VhostError.io(path: path, operation: "config access at \(offset) of \(size) bytes (config is \(limit) bytes)", errno: EINVAL)
        }
    }
}
