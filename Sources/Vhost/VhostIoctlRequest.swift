import CFerry

/// The ioctl request numbers of vhost (`<linux/vhost.h>`) and tun (`<linux/if_tun.h>`).
///
/// The numbers are the kernel's own `_IOW`/`_IOR`/`_IOWR` macros, evaluated in C (CFerry's
/// `ferry_ioc_*`), so they cannot drift from the headers; the host tests pin them to the values
/// every vhost front-end uses (QEMU, DPDK), so a header change cannot slip by either.
public enum VhostIoctl {
    // The calls vhost-net and vhost-vdpa share.
    public static let getFeatures = ferry_ioc_vhost_get_features()
    public static let setFeatures = ferry_ioc_vhost_set_features()
    public static let setOwner = ferry_ioc_vhost_set_owner()
    public static let resetOwner = ferry_ioc_vhost_reset_owner()
    public static let setMemTable = ferry_ioc_vhost_set_mem_table()
    public static let setVringNum = ferry_ioc_vhost_set_vring_num()
    public static let setVringAddr = ferry_ioc_vhost_set_vring_addr()
    public static let setVringBase = ferry_ioc_vhost_set_vring_base()
    public static let getVringBase = ferry_ioc_vhost_get_vring_base()
    public static let setVringKick = ferry_ioc_vhost_set_vring_kick()
    public static let setVringCall = ferry_ioc_vhost_set_vring_call()
    public static let setBackendFeatures = ferry_ioc_vhost_set_backend_features()
    public static let getBackendFeatures = ferry_ioc_vhost_get_backend_features()
    // vhost-net only.
    public static let netSetBackend = ferry_ioc_vhost_net_set_backend()
    // vhost-vdpa only.
    public static let vdpaGetDeviceID = ferry_ioc_vhost_vdpa_get_device_id()
    public static let vdpaGetStatus = ferry_ioc_vhost_vdpa_get_status()
    public static let vdpaSetStatus = ferry_ioc_vhost_vdpa_set_status()
    public static let vdpaGetConfig = ferry_ioc_vhost_vdpa_get_config()
    public static let vdpaSetConfig = ferry_ioc_vhost_vdpa_set_config()
    public static let vdpaSetVringEnable = ferry_ioc_vhost_vdpa_set_vring_enable()
    public static let vdpaGetVringNum = ferry_ioc_vhost_vdpa_get_vring_num()
    public static let vdpaGetIovaRange = ferry_ioc_vhost_vdpa_get_iova_range()
    public static let vdpaGetConfigSize = ferry_ioc_vhost_vdpa_get_config_size()
    public static let vdpaGetVqsCount = ferry_ioc_vhost_vdpa_get_vqs_count()
    // tun/tap.
    public static let tunSetIff = ferry_ioc_tun_set_iff()
    public static let tunGetIff = ferry_ioc_tun_get_iff()
    public static let tunGetFeatures = ferry_ioc_tun_get_features()
    public static let tunSetOffload = ferry_ioc_tun_set_offload()
    public static let tunSetSndbuf = ferry_ioc_tun_set_sndbuf()
    public static let tunGetVnetHdrSz = ferry_ioc_tun_get_vnet_hdr_sz()
    public static let tunSetVnetHdrSz = ferry_ioc_tun_set_vnet_hdr_sz()
    public static let siocSifHwaddr = ferry_ioc_siocsifhwaddr()

    /// The argument size encoded in a request (`_IOC_SIZE`): how many bytes the kernel copies.
    public static func argumentSize(_ request: UInt) -> Int { Int((request >> 16) & 0x3fff) }
    /// Whether the kernel reads the argument (`_IOC_WRITE`, from the caller's side).
    public static func kernelReads(_ request: UInt) -> Bool { request & (1 << 30) != 0 }
    /// Whether the kernel writes the argument back (`_IOC_READ`).
    public static func kernelWrites(_ request: UInt) -> Bool { request & (1 << 31) != 0 }

    /// A name for logs and errors.
    public static func name(_ request: UInt) -> String {
        names.first(where: { $0.0 == request })?.1 ?? "ioctl 0x" + String(request, radix: 16)
    }

    static let names: [(UInt, String)] = [
        (getFeatures, "VHOST_GET_FEATURES"), (setFeatures, "VHOST_SET_FEATURES"),
        (setOwner, "VHOST_SET_OWNER"), (resetOwner, "VHOST_RESET_OWNER"),
        (setMemTable, "VHOST_SET_MEM_TABLE"), (setVringNum, "VHOST_SET_VRING_NUM"),
        (setVringAddr, "VHOST_SET_VRING_ADDR"), (setVringBase, "VHOST_SET_VRING_BASE"),
        (getVringBase, "VHOST_GET_VRING_BASE"), (setVringKick, "VHOST_SET_VRING_KICK"),
        (setVringCall, "VHOST_SET_VRING_CALL"), (setBackendFeatures, "VHOST_SET_BACKEND_FEATURES"),
        (getBackendFeatures, "VHOST_GET_BACKEND_FEATURES"), (netSetBackend, "VHOST_NET_SET_BACKEND"),
        (vdpaGetDeviceID, "VHOST_VDPA_GET_DEVICE_ID"), (vdpaGetStatus, "VHOST_VDPA_GET_STATUS"),
        (vdpaSetStatus, "VHOST_VDPA_SET_STATUS"), (vdpaGetConfig, "VHOST_VDPA_GET_CONFIG"),
        (vdpaSetConfig, "VHOST_VDPA_SET_CONFIG"), (vdpaSetVringEnable, "VHOST_VDPA_SET_VRING_ENABLE"),
        (vdpaGetVringNum, "VHOST_VDPA_GET_VRING_NUM"), (vdpaGetIovaRange, "VHOST_VDPA_GET_IOVA_RANGE"),
        (vdpaGetConfigSize, "VHOST_VDPA_GET_CONFIG_SIZE"), (vdpaGetVqsCount, "VHOST_VDPA_GET_VQS_COUNT"),
        (tunSetIff, "TUNSETIFF"), (tunGetIff, "TUNGETIFF"), (tunGetFeatures, "TUNGETFEATURES"),
        (tunSetOffload, "TUNSETOFFLOAD"), (tunSetSndbuf, "TUNSETSNDBUF"),
        (tunGetVnetHdrSz, "TUNGETVNETHDRSZ"), (tunSetVnetHdrSz, "TUNSETVNETHDRSZ"),
        (siocSifHwaddr, "SIOCSIFHWADDR"),
    ]
}

/// Feature bits the kernel transports read or add (besides the virtio ones in `Virtio`).
public enum VhostKernelFeatureBits {
    /// VIRTIO_F_ACCESS_PLATFORM (bit 33): vhost-vdpa needs it, vhost-net must not see it.
    public static let accessPlatform: UInt64 = 1 << 33
    /// Bit 27 as vhost-net reads it (VHOST_NET_F_VIRTIO_NET_HDR): vhost-net would strip and
    /// add the virtio-net header itself, and the tap would carry none.
    public static let vhostNetVirtioNetHeader: UInt64 = 1 << UInt64(FERRY_VHOST_NET_F_VIRTIO_NET_HDR)
    /// VIRTIO_NET_F_MQ (bit 22).
    public static let mq: UInt64 = 1 << 22
    /// VIRTIO_NET_F_MRG_RXBUF (bit 15).
    public static let mrgRxbuf: UInt64 = 1 << 15
    /// VIRTIO_F_VERSION_1 (bit 32).
    public static let version1: UInt64 = 1 << 32
    /// The guest offloads a tap with a virtio-net header provides although vhost-net does not
    /// list them: GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN, GUEST_UFO (bits 1, 7-10).
    public static let tapGuestOffloads: UInt64 = (1 << 1) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10)
    /// The host offloads likewise: CSUM, HOST_TSO4, HOST_TSO6 (bits 0, 11, 12).
    public static let tapHostOffloads: UInt64 = (1 << 0) | (1 << 11) | (1 << 12)
}

/// vhost backend features (`VHOST_BACKEND_F_*`), the vhost-vdpa counterpart of vhost-user's
/// protocol features.
public struct VhostBackendFeatures: OptionSet, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// IOTLB messages are `struct vhost_msg_v2` (with an address-space id).
    public static let iotlbMessageV2 = VhostBackendFeatures(rawValue: 1 << UInt64(FERRY_VHOST_BACKEND_F_IOTLB_MSG_V2))
    /// BATCH_BEGIN / BATCH_END bracket a set of updates, applied at once.
    public static let iotlbBatch = VhostBackendFeatures(rawValue: 1 << UInt64(FERRY_VHOST_BACKEND_F_IOTLB_BATCH))

    /// What Ferry uses, as DPDK's `VHOST_VDPA_SUPPORTED_BACKEND_FEATURES`.
    public static let ferrySupported: VhostBackendFeatures = [.iotlbMessageV2, .iotlbBatch]
}
