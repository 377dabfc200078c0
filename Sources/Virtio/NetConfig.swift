/// Field offsets in `struct virtio_net_config` (virtio 1.2 §5.1.4), the network device's
/// config space, read with GET_CONFIG (vhost-user, vhost-vdpa). All fields are little-endian.
/// A field exists only when its feature is negotiated: `mac` with MAC, `status` with STATUS,
/// `maxVirtqueuePairs` with MQ, `mtu` with MTU.
public enum VirtioNetConfig {
    public static let macOffset = 0
    public static let macLength = 6
    /// u16: link state bits below.
    public static let statusOffset = 6
    /// u16: how many RX/TX queue pairs the device has (1...0x8000).
    public static let maxVirtqueuePairsOffset = 8
    /// u16: the largest MTU the driver should use.
    public static let mtuOffset = 10
    /// u32: link speed in Mbit/s (needs SPEED_DUPLEX).
    public static let speedOffset = 12
    /// u8: 0 half, 1 full, 0xff unknown (needs SPEED_DUPLEX).
    public static let duplexOffset = 16

    /// `status`: the link is up.
    public static let statusLinkUp: UInt16 = 1
    /// `status`: the device asks the driver to send gratuitous packets (GUEST_ANNOUNCE).
    public static let statusAnnounce: UInt16 = 2
}
