/// Numbers of the vhost-user protocol, as QEMU's `docs/interop/vhost-user.rst` defines them.
///
/// Only the front-end → back-end requests live here (the back-end's own channel,
/// BACKEND_REQ, is never negotiated by Ferry, as it is not by DPDK's virtio-user).

/// A front-end request type (the header's `request` field). Replies reuse the request's code.
public enum VhostUserRequest: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFd = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRarp = 19
    case netSetMtu = 20
    /// Formerly SET_SLAVE_REQ_FD.
    case setBackendReqFd = 21
    case iotlbMsg = 22
    case setVringEndian = 23
    case getConfig = 24
    case setConfig = 25
    case createCryptoSession = 26
    case closeCryptoSession = 27
    case postcopyAdvise = 28
    case postcopyListen = 29
    case postcopyEnd = 30
    case getInflightFd = 31
    case setInflightFd = 32
    case gpuSetSocket = 33
    case resetDevice = 34
    /// In-band kick (INBAND_NOTIFICATIONS); reserved in some QEMU versions.
    case vringKick = 35
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40
    case getSharedObject = 41
    case setDeviceStateFd = 42
    case checkDeviceState = 43

    /// The spec's name, for logs and error messages ("SET_MEM_TABLE").
    public var description: String {
        switch self {
        case .getFeatures: return "GET_FEATURES"
        case .setFeatures: return "SET_FEATURES"
        case .setOwner: return "SET_OWNER"
        case .resetOwner: return "RESET_OWNER"
        case .setMemTable: return "SET_MEM_TABLE"
        case .setLogBase: return "SET_LOG_BASE"
        case .setLogFd: return "SET_LOG_FD"
        case .setVringNum: return "SET_VRING_NUM"
        case .setVringAddr: return "SET_VRING_ADDR"
        case .setVringBase: return "SET_VRING_BASE"
        case .getVringBase: return "GET_VRING_BASE"
        case .setVringKick: return "SET_VRING_KICK"
        case .setVringCall: return "SET_VRING_CALL"
        case .setVringErr: return "SET_VRING_ERR"
        case .getProtocolFeatures: return "GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: return "SET_PROTOCOL_FEATURES"
        case .getQueueNum: return "GET_QUEUE_NUM"
        case .setVringEnable: return "SET_VRING_ENABLE"
        case .sendRarp: return "SEND_RARP"
        case .netSetMtu: return "NET_SET_MTU"
        case .setBackendReqFd: return "SET_BACKEND_REQ_FD"
        case .iotlbMsg: return "IOTLB_MSG"
        case .setVringEndian: return "SET_VRING_ENDIAN"
        case .getConfig: return "GET_CONFIG"
        case .setConfig: return "SET_CONFIG"
        case .createCryptoSession: return "CREATE_CRYPTO_SESSION"
        case .closeCryptoSession: return "CLOSE_CRYPTO_SESSION"
        case .postcopyAdvise: return "POSTCOPY_ADVISE"
        case .postcopyListen: return "POSTCOPY_LISTEN"
        case .postcopyEnd: return "POSTCOPY_END"
        case .getInflightFd: return "GET_INFLIGHT_FD"
        case .setInflightFd: return "SET_INFLIGHT_FD"
        case .gpuSetSocket: return "GPU_SET_SOCKET"
        case .resetDevice: return "RESET_DEVICE"
        case .vringKick: return "VRING_KICK"
        case .getMaxMemSlots: return "GET_MAX_MEM_SLOTS"
        case .addMemReg: return "ADD_MEM_REG"
        case .remMemReg: return "REM_MEM_REG"
        case .setStatus: return "SET_STATUS"
        case .getStatus: return "GET_STATUS"
        case .getSharedObject: return "GET_SHARED_OBJECT"
        case .setDeviceStateFd: return "SET_DEVICE_STATE_FD"
        case .checkDeviceState: return "CHECK_DEVICE_STATE"
        }
    }
}

/// The header's `flags` field: the low two bits are the protocol version (1), bit 2 marks a
/// reply and bit 3 asks for a REPLY_ACK.
public struct VhostUserHeaderFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Protocol version 1, the only one defined.
    public static let version1 = VhostUserHeaderFlags(rawValue: 0x1)
    /// Set on every message the back-end sends in answer.
    public static let reply = VhostUserHeaderFlags(rawValue: 0x4)
    /// The front-end wants a u64 ack (0 = success) even for a request without a reply;
    /// only meaningful once REPLY_ACK is negotiated.
    public static let needReply = VhostUserHeaderFlags(rawValue: 0x8)

    /// The bits that hold the version number.
    public static let versionMask: UInt32 = 0x3
    /// The version this implementation speaks.
    public static let currentVersion: UInt32 = 0x1

    /// The version number in the low two bits.
    public var version: UInt32 { rawValue & Self.versionMask }
}

/// Protocol feature bits (GET/SET_PROTOCOL_FEATURES), valid once the device offers
/// `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30) in GET_FEATURES.
public struct VhostUserProtocolFeatures: OptionSet, Sendable, Hashable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let mq = VhostUserProtocolFeatures(bit: 0)
    public static let logShmfd = VhostUserProtocolFeatures(bit: 1)
    public static let rarp = VhostUserProtocolFeatures(bit: 2)
    public static let replyAck = VhostUserProtocolFeatures(bit: 3)
    public static let mtu = VhostUserProtocolFeatures(bit: 4)
    /// Formerly SLAVE_REQ.
    public static let backendReq = VhostUserProtocolFeatures(bit: 5)
    public static let crossEndian = VhostUserProtocolFeatures(bit: 6)
    public static let cryptoSession = VhostUserProtocolFeatures(bit: 7)
    public static let pagefault = VhostUserProtocolFeatures(bit: 8)
    public static let config = VhostUserProtocolFeatures(bit: 9)
    public static let backendSendFd = VhostUserProtocolFeatures(bit: 10)
    public static let hostNotifier = VhostUserProtocolFeatures(bit: 11)
    public static let inflightShmfd = VhostUserProtocolFeatures(bit: 12)
    public static let resetDevice = VhostUserProtocolFeatures(bit: 13)
    public static let inbandNotifications = VhostUserProtocolFeatures(bit: 14)
    public static let configureMemSlots = VhostUserProtocolFeatures(bit: 15)
    public static let status = VhostUserProtocolFeatures(bit: 16)
    public static let xenMmap = VhostUserProtocolFeatures(bit: 17)
    public static let sharedObject = VhostUserProtocolFeatures(bit: 18)
    public static let deviceState = VhostUserProtocolFeatures(bit: 19)

    /// What DPDK's virtio-user front-end accepts (`VHOST_USER_SUPPORTED_PROTOCOL_FEATURES` in
    /// drivers/net/virtio/virtio_user/vhost_user.c): the offer is masked to this before
    /// SET_PROTOCOL_FEATURES. Ferry asks for the same, so backends see a familiar peer.
    public static let dpdkFrontend: VhostUserProtocolFeatures = [.mq, .replyAck, .status]

    @inline(__always) init(bit: Int) { self.rawValue = 1 << UInt64(bit) }
}

/// Constants of the vhost-user protocol that are not request numbers or flags.
public enum VhostUserConstants {
    /// Feature bit 30 in GET_FEATURES/SET_FEATURES: the device speaks protocol features.
    /// It is the reserved "UNUSED" virtio bit (virtio 1.2 §6.3), so no virtio driver sees it.
    public static let protocolFeaturesBit: UInt64 = 30
    /// `1 << VHOST_USER_F_PROTOCOL_FEATURES`.
    public static let protocolFeaturesMask: UInt64 = 1 << protocolFeaturesBit
    /// At most this many regions (and so fds) in one SET_MEM_TABLE.
    public static let memoryMaxRegions = 8
    /// The header is `{u32 request; u32 flags; u32 size}`.
    public static let headerSize = 12
    /// `VHOST_USER_MAX_CONFIG_SIZE`: the largest config-space access.
    public static let maxConfigSize = 256
    /// Bytes of the GET/SET_CONFIG header before the config bytes (offset, size, flags).
    public static let configHeaderSize = 12
    /// The largest payload Ferry accepts on the wire. Every message it handles fits well
    /// inside (a full memory table is 264 bytes, a full config 268); anything bigger is a
    /// broken or hostile peer and is refused before any allocation.
    public static let maxPayloadSize = 4096
    /// In the u64 of SET_VRING_KICK/CALL/ERR: the ring index occupies the low byte…
    public static let vringIndexMask: UInt64 = 0xff
    /// …and bit 8 says no fd travels with the message (polling mode for that ring).
    public static let vringNoFdMask: UInt64 = 1 << 8
    /// `VIRTIO_NET_F_MQ`, which vhost-user cannot carry without the MQ protocol feature.
    /// Kept here so the transport does not depend on the Virtio feature set.
    public static let virtioNetFeatureMQ: UInt64 = 1 << 22
    /// `VIRTIO_CONFIG_S_FEATURES_OK` (virtio 1.2 §2.1): before it, the back-end's protocol
    /// features are not known, so DPDK does not send SET/GET_STATUS.
    public static let statusFeaturesOK: UInt8 = 0x08
}
