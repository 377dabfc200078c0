/// The network control queue's messages (virtio 1.2 §5.1.6.5).
///
/// A command is a readable buffer `{u8 class; u8 command; data...}` followed by a writable
/// one-byte ack. virtio-user emulates the control queue the driver sees (DPDK's
/// `virtio_user_handle_cq`), so both sides of this codec run in Ferry. Control path only.
public enum VirtioNetControl {
    /// Command classes and their commands.
    public enum Rx {
        public static let `class`: UInt8 = 0
        public static let promisc: UInt8 = 0
        public static let allMulti: UInt8 = 1
        public static let allUni: UInt8 = 2
        public static let noMulti: UInt8 = 3
        public static let noUni: UInt8 = 4
        public static let noBroadcast: UInt8 = 5
    }
    public enum Mac {
        public static let `class`: UInt8 = 1
        public static let tableSet: UInt8 = 0
        public static let addrSet: UInt8 = 1
    }
    public enum Vlan {
        public static let `class`: UInt8 = 2
        public static let add: UInt8 = 0
        public static let del: UInt8 = 1
    }
    public enum Announce {
        public static let `class`: UInt8 = 3
        public static let ack: UInt8 = 0
    }
    public enum Mq {
        public static let `class`: UInt8 = 4
        public static let vqPairsSet: UInt8 = 0
        /// The bounds on `virtqueue_pairs` (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN/MAX).
        public static let vqPairsMin: UInt16 = 1
        public static let vqPairsMax: UInt16 = 0x8000
    }

    /// The ack byte the device writes back.
    public static let ackOK: UInt8 = 0
    public static let ackErr: UInt8 = 1

    /// Size of `{class, command}`.
    public static let headerSize = 2
    /// Size of the ack.
    public static let ackSize = 1
}

/// One control-queue command: header plus command-specific data.
public struct VirtioNetControlCommand: Equatable, Sendable {
    public var `class`: UInt8
    public var command: UInt8
    public var data: [UInt8]

    public init(class: UInt8, command: UInt8, data: [UInt8] = []) {
        self.class = `class`
        self.command = command
        self.data = data
    }

    /// Parses `{class, command, data...}`; nil when shorter than the header. The data is not
    /// validated here: see the typed accessors (`mqPairs`, `macAddress`, ...).
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= VirtioNetControl.headerSize else { return nil }
        self.init(class: bytes[0], command: bytes[1], data: Array(bytes[2...]))
    }

    /// The two header bytes, as the first (readable) buffer of the command.
    public var encodedHeader: [UInt8] { [self.class, command] }

    /// Header followed by data.
    public var encoded: [UInt8] { encodedHeader + data }

    // ---- builders -----------------------------------------------------------------------------

    /// MQ_VQ_PAIRS_SET: the number of queue pairs the driver uses (little-endian u16).
    public static func mqPairsSet(_ pairs: UInt16) -> VirtioNetControlCommand {
        VirtioNetControlCommand(class: VirtioNetControl.Mq.class,
                                command: VirtioNetControl.Mq.vqPairsSet, data: le16(pairs))
    }

    /// MAC_ADDR_SET: the 6-byte default MAC.
    public static func macAddrSet(_ mac: [UInt8]) -> VirtioNetControlCommand {
        VirtioNetControlCommand(class: VirtioNetControl.Mac.class,
                                command: VirtioNetControl.Mac.addrSet, data: mac)
    }

    /// MAC_TABLE_SET: two `{le32 entries; u8 macs[entries][6]}` tables, unicast then multicast.
    public static func macTableSet(unicast: [[UInt8]], multicast: [[UInt8]]) -> VirtioNetControlCommand {
        var data: [UInt8] = []
        for table in [unicast, multicast] {
            data += le32(UInt32(table.count))
            for mac in table { data += mac }
        }
        return VirtioNetControlCommand(class: VirtioNetControl.Mac.class,
                                       command: VirtioNetControl.Mac.tableSet, data: data)
    }

    /// An RX-mode command (`VirtioNetControl.Rx.promisc`, ...) switched on or off (one byte).
    public static func rxMode(_ command: UInt8, on: Bool) -> VirtioNetControlCommand {
        VirtioNetControlCommand(class: VirtioNetControl.Rx.class, command: command, data: [on ? 1 : 0])
    }

    /// VLAN_ADD: accept frames of this VLAN id (little-endian u16).
    public static func vlanAdd(_ vid: UInt16) -> VirtioNetControlCommand {
        VirtioNetControlCommand(class: VirtioNetControl.Vlan.class,
                                command: VirtioNetControl.Vlan.add, data: le16(vid))
    }

    /// VLAN_DEL: stop accepting frames of this VLAN id.
    public static func vlanDel(_ vid: UInt16) -> VirtioNetControlCommand {
        VirtioNetControlCommand(class: VirtioNetControl.Vlan.class,
                                command: VirtioNetControl.Vlan.del, data: le16(vid))
    }

    /// ANNOUNCE_ACK: the driver sent its gratuitous packets.
    public static var announceAck: VirtioNetControlCommand {
        VirtioNetControlCommand(class: VirtioNetControl.Announce.class,
                                command: VirtioNetControl.Announce.ack)
    }

    // ---- typed accessors (for the side that handles commands) --------------------------------

    /// For MQ_VQ_PAIRS_SET: the requested pair count, or nil when the command is something else,
    /// the data is not exactly two bytes, or the count is outside 1...0x8000 (§5.1.6.5.5).
    public var mqPairs: UInt16? {
        guard self.class == VirtioNetControl.Mq.class, command == VirtioNetControl.Mq.vqPairsSet,
              data.count == 2 else { return nil }
        let pairs = UInt16(data[0]) | UInt16(data[1]) << 8
        guard pairs >= VirtioNetControl.Mq.vqPairsMin, pairs <= VirtioNetControl.Mq.vqPairsMax else {
            return nil
        }
        return pairs
    }

    /// For MAC_ADDR_SET: the 6-byte MAC, or nil when malformed.
    public var macAddress: [UInt8]? {
        guard self.class == VirtioNetControl.Mac.class, command == VirtioNetControl.Mac.addrSet,
              data.count == VirtioNetConfig.macLength else { return nil }
        return data
    }

    /// For VLAN_ADD/VLAN_DEL: the VLAN id (0...4095), or nil when malformed.
    public var vlanID: UInt16? {
        guard self.class == VirtioNetControl.Vlan.class, data.count == 2 else { return nil }
        let vid = UInt16(data[0]) | UInt16(data[1]) << 8
        return vid < 4096 ? vid : nil
    }

    /// For RX-mode commands: on or off, or nil when malformed.
    public var rxModeOn: Bool? {
        guard self.class == VirtioNetControl.Rx.class, command <= VirtioNetControl.Rx.noBroadcast,
              data.count == 1 else { return nil }
        return data[0] != 0
    }

    private static func le16(_ v: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
    private static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}
