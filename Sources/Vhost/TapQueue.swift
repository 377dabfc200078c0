import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// One queue of a tap interface: an fd of /dev/net/tun attached to the interface with
/// TUNSETIFF. vhost-net moves frames between this fd and Ferry's rings once the fd is given to
/// it with VHOST_NET_SET_BACKEND.
///
/// Opened as DPDK's virtio-user does (drivers/net/virtio/virtio_user/vhost_kernel_tap.c):
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, plus IFF_NAPI when tun offers it, plus IFF_MULTI_QUEUE
/// when the port has more than one queue pair (every pair then opens its own queue of the same
/// interface). Each frame on the fd carries a virtio-net header, which Ferry's rings carry too,
/// so vhost-net copies it through untouched.
public final class TapQueue {
    public static let tunPath = "/dev/net/tun"
    /// The name DPDK uses when `iface` is not given: the kernel picks tap0, tap1, ...
    public static let defaultNamePattern = "tap%d"

    public let device: any VhostIoctlDevice
    /// The interface name the kernel gave (the pattern resolved).
    public let name: String
    /// The flags the queue was attached with (IFF_*).
    public let flags: Int16

    public var fileDescriptor: Int32 { device.fileDescriptor }
    public var isMultiQueue: Bool { flags & Int16(FERRY_IFF_MULTI_QUEUE) != 0 }
    public var hasVnetHeader: Bool { flags & Int16(FERRY_IFF_VNET_HDR) != 0 }

    init(device: any VhostIoctlDevice, name: String, flags: Int16) {
        self.device = device
        self.name = name
        self.flags = flags
    }

    deinit { device.close() }

    /// Opens /dev/net/tun and attaches to (or creates) interface `name`.
    public static func open(name: String, multiQueue: Bool, tunPath: String = TapQueue.tunPath) throws -> TapQueue {
        let device = try VhostFileDevice(path: tunPath, extraFlags: O_NONBLOCK)
        do {
            return try attach(device: device, name: name, multiQueue: multiQueue, path: tunPath)
        } catch {
            device.close()
            throw error
        }
    }

    /// TUNGETFEATURES, then TUNSETIFF with the flags above, then TUNGETIFF for the name the
    /// kernel chose. Split from `open` so tests can drive it with a recording device.
    static func attach(device: any VhostIoctlDevice, name: String, multiQueue: Bool, path: String) throws -> TapQueue {
        try validate(name: name, path: path)
        let channel = VhostIoctlChannel(device: device, path: path)
        let offered = try channel.call(VhostIoctl.tunGetFeatures, UInt32(0))
        guard offered & UInt32(FERRY_IFF_VNET_HDR) != 0 else {
            throw VhostError.notSupported(path: path, what: "IFF_VNET_HDR (tun cannot carry a virtio-net header)")
        }
        if multiQueue && offered & UInt32(FERRY_IFF_MULTI_QUEUE) == 0 {
            throw VhostError.notSupported(path: path, what: "IFF_MULTI_QUEUE (needed for more than one queue pair)")
        }
        var flags = Int16(FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR)
        if offered & UInt32(FERRY_IFF_NAPI) != 0 { flags |= Int16(FERRY_IFF_NAPI) }
        if multiQueue { flags |= Int16(FERRY_IFF_MULTI_QUEUE) }
        var request = ferry_ifreq_flags()
        setName(&request.name, name)
        request.flags = flags
        try channel.call(VhostIoctl.tunSetIff, request, "interface \(name), flags 0x\(String(UInt16(bitPattern: flags), radix: 16))")
        let reply = try channel.call(VhostIoctl.tunGetIff, ferry_ifreq_flags())
        let resolved = readName(reply.name)
        guard !resolved.isEmpty else {
            throw VhostError.protocolViolation(path: path, detail: "TUNGETIFF returned no interface name")
        }
        return TapQueue(device: device, name: resolved, flags: reply.flags)
    }

    /// Interface names are at most IFNAMSIZ-1 bytes, and may not contain '/' or whitespace
    /// (the kernel's `dev_valid_name`); checked here so the error names the cause.
    static func validate(name: String, path: String) throws {
        let bytes = Array(name.utf8)
        let bad = bytes.isEmpty || bytes.count >= Int(FERRY_IFNAMSIZ) || name == "." || name == ".."
            || bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 })
        if bad {
            throw VhostError.io(path: path, operation: "TUNSETIFF (invalid interface name '\(name)': 1-\(FERRY_IFNAMSIZ - 1) bytes, no '/', ':' or spaces)",
                                errno: EINVAL)
        }
    }

    // MARK: Per-queue settings

    /// TUNSETVNETHDRSZ: 12 with VERSION_1 or MRG_RXBUF, else 10 (virtio 1.2 §5.1.6).
    public func setVnetHeaderSize(_ size: Int32) throws {
        try VhostIoctlChannel(device: device, path: label).call(VhostIoctl.tunSetVnetHdrSz, size, "\(size)")
    }

    /// TUNSETSNDBUF: DPDK sets INT_MAX so the tap never throttles vhost-net's TX.
    public func setSendBuffer(_ size: Int32) throws {
        try VhostIoctlChannel(device: device, path: label).call(VhostIoctl.tunSetSndbuf, size, "\(size)")
    }

    /// TUNSETOFFLOAD with TUN_F_* flags (passed by value).
    public func setOffload(_ offload: UInt32) throws {
        let e = device.ioctl(VhostIoctl.tunSetOffload, value: UInt(offload))
        guard e == 0 else {
            throw VhostError.io(path: label, operation: "TUNSETOFFLOAD (0x\(String(offload, radix: 16)))", errno: e)
        }
    }

    /// SIOCSIFHWADDR on the tap fd: the interface's MAC.
    public func setMAC(_ mac: [UInt8]) throws {
        guard mac.count == 6 else {
            throw VhostError.io(path: label, operation: "SIOCSIFHWADDR (\(mac.count)-byte MAC)", errno: EINVAL)
        }
        var request = ferry_ifreq_hwaddr()
        Self.setName(&request.name, name)
        request.family = UInt16(FERRY_ARPHRD_ETHER)
        withUnsafeMutableBytes(of: &request.data) { data in
            for i in 0..<6 { data[i] = mac[i] }
        }
        try VhostIoctlChannel(device: device, path: label).call(VhostIoctl.siocSifHwaddr, request)
    }

    /// TUN_F_* offloads for the negotiated guest offloads, as DPDK's
    /// `vhost_kernel_tap_set_offload`: nothing unless GUEST_CSUM.
    public static func offloadFlags(features: UInt64) -> UInt32 {
        func has(_ bit: UInt64) -> Bool { features & (1 << bit) != 0 }
        guard has(1) else { return 0 } // GUEST_CSUM
        var offload = UInt32(FERRY_TUN_F_CSUM)
        if has(7) { offload |= UInt32(FERRY_TUN_F_TSO4) }
        if has(8) { offload |= UInt32(FERRY_TUN_F_TSO6) }
        if (has(7) || has(8)) && has(9) { offload |= UInt32(FERRY_TUN_F_TSO_ECN) }
        if has(10) { offload |= UInt32(FERRY_TUN_F_UFO) }
        return offload
    }

    func close() { device.close() }

    private var label: String { "\(Self.tunPath) (\(name))" }

    // SAFETY: writes at most IFNAMSIZ-1 bytes into the 16-byte tuple and leaves a NUL after them.
    static func setName(_ field: inout (CChar, CChar, CChar, CChar, CChar, CChar, CChar, CChar,
                                         CChar, CChar, CChar, CChar, CChar, CChar, CChar, CChar), _ name: String) {
        let bytes = Array(name.utf8.prefix(Int(FERRY_IFNAMSIZ) - 1))
        withUnsafeMutableBytes(of: &field) { raw in
            for i in 0..<raw.count { raw[i] = i < bytes.count ? bytes[i] : 0 }
        }
    }

    // SAFETY: reads the 16-byte tuple only, stopping at the first NUL or its end.
    static func readName(_ field: (CChar, CChar, CChar, CChar, CChar, CChar, CChar, CChar,
                                   CChar, CChar, CChar, CChar, CChar, CChar, CChar, CChar)) -> String {
        withUnsafeBytes(of: field) { raw in
            let end = raw.firstIndex(of: 0) ?? raw.count
            return String(decoding: raw[..<end], as: UTF8.self)
        }
    }
}
