/// Virtio feature bits (virtio 1.2 §6 for the reserved bits, §5.1.3 for the network device).
///
/// The raw value is the 64-bit word exchanged with GET_FEATURES / SET_FEATURES. Names follow
/// the spec's `VIRTIO_NET_F_*` / `VIRTIO_F_*` / `VIRTIO_RING_F_*` constants, as DPDK spells them,
/// so negotiation code reads like `virtio_user_dev.c`.
public struct VirtioFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The single feature with bit number `bit` (0...63).
    @inlinable
    public init(bit: Int) {
        precondition(bit >= 0 && bit < 64, "feature bit out of range")
        self.rawValue = 1 << UInt64(bit)
    }

    // ---- network device (virtio 1.2 §5.1.3) --------------------------------------------------
    public static let csum = VirtioFeatures(bit: 0)
    public static let guestCsum = VirtioFeatures(bit: 1)
    public static let ctrlGuestOffloads = VirtioFeatures(bit: 2)
    public static let mtu = VirtioFeatures(bit: 3)
    public static let mac = VirtioFeatures(bit: 5)
    public static let guestTso4 = VirtioFeatures(bit: 7)
    public static let guestTso6 = VirtioFeatures(bit: 8)
    public static let guestEcn = VirtioFeatures(bit: 9)
    public static let guestUfo = VirtioFeatures(bit: 10)
    public static let hostTso4 = VirtioFeatures(bit: 11)
    public static let hostTso6 = VirtioFeatures(bit: 12)
    public static let hostEcn = VirtioFeatures(bit: 13)
    public static let hostUfo = VirtioFeatures(bit: 14)
    public static let mrgRxbuf = VirtioFeatures(bit: 15)
    public static let status = VirtioFeatures(bit: 16)
    public static let ctrlVq = VirtioFeatures(bit: 17)
    public static let ctrlRx = VirtioFeatures(bit: 18)
    public static let ctrlVlan = VirtioFeatures(bit: 19)
    public static let guestAnnounce = VirtioFeatures(bit: 21)
    public static let mq = VirtioFeatures(bit: 22)
    public static let ctrlMacAddr = VirtioFeatures(bit: 23)

    // ---- device-independent (virtio 1.2 §6) ---------------------------------------------------
    /// Legacy only: notify when the avail ring empties.
    public static let notifyOnEmpty = VirtioFeatures(bit: 24)
    /// Legacy only: the header may share a descriptor with the data.
    public static let anyLayout = VirtioFeatures(bit: 27)
    public static let ringIndirectDesc = VirtioFeatures(bit: 28)
    public static let ringEventIdx = VirtioFeatures(bit: 29)
    public static let version1 = VirtioFeatures(bit: 32)
    public static let accessPlatform = VirtioFeatures(bit: 33)
    public static let ringPacked = VirtioFeatures(bit: 34)
    public static let inOrder = VirtioFeatures(bit: 35)

    /// What virtio-user can drive, before the transport adds its own bits: exactly the seed's
    /// `VIRTIO_USER_SUPPORTED_FEATURES` (virtio_user_dev.c, line 583).
    public static let virtioUserSupported: VirtioFeatures = [
        .mac, .status, .mq, .ctrlMacAddr, .ctrlVq, .ctrlRx, .ctrlVlan, .csum,
        .hostTso4, .hostTso6, .mrgRxbuf, .ringIndirectDesc, .guestCsum,
        .guestTso4, .guestTso6, .inOrder, .version1, .ringPacked,
    ]

    /// Spec names by bit number, for logs. Bits not listed print as hex.
    static let names: [(bit: Int, name: String)] = [
        (0, "CSUM"), (1, "GUEST_CSUM"), (2, "CTRL_GUEST_OFFLOADS"), (3, "MTU"), (5, "MAC"),
        (7, "GUEST_TSO4"), (8, "GUEST_TSO6"), (9, "GUEST_ECN"), (10, "GUEST_UFO"),
        (11, "HOST_TSO4"), (12, "HOST_TSO6"), (13, "HOST_ECN"), (14, "HOST_UFO"),
        (15, "MRG_RXBUF"), (16, "STATUS"), (17, "CTRL_VQ"), (18, "CTRL_RX"), (19, "CTRL_VLAN"),
        (21, "GUEST_ANNOUNCE"), (22, "MQ"), (23, "CTRL_MAC_ADDR"), (24, "NOTIFY_ON_EMPTY"),
        (27, "ANY_LAYOUT"), (28, "INDIRECT_DESC"), (29, "EVENT_IDX"), (32, "VERSION_1"),
        (33, "ACCESS_PLATFORM"), (34, "RING_PACKED"), (35, "IN_ORDER"),
    ]

    /// Known names in ascending bit order, then any unknown bits as one hex value, joined by
    /// `|`: `"MRG_RXBUF|VERSION_1|0x40000000"`. The empty set prints as `"0x0"`.
    public var description: String {
        var parts: [String] = []
        var rest = rawValue
        for (bit, name) in Self.names where rawValue & (1 << UInt64(bit)) != 0 {
            parts.append(name)
            rest &= ~(1 << UInt64(bit))
        }
        if rest != 0 || parts.isEmpty {
            parts.append("0x" + String(rest, radix: 16))
        }
        return parts.joined(separator: "|")
    }
}
