import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// The ioctl core vhost-net and vhost-vdpa share: each vhost call as one ioctl on one device,
/// with the argument struct the kernel expects and the failure named after the ioctl.
///
/// Ring indices here are the device's own: for vhost-net 0 (RX) or 1 (TX) of that fd's queue
/// pair, for vhost-vdpa the global virtqueue index. The backends map the protocol's global
/// vring index onto them.
///
/// Replies are untrusted like any backend's: values are returned as read, and the callers
/// check them (device id, ring index, config length). Control path only.
public struct VhostIoctlChannel {
    public let device: any VhostIoctlDevice
    /// The device path, for error messages.
    public let path: String

    public init(device: any VhostIoctlDevice, path: String) {
        self.device = device
        self.path = path
    }

    // MARK: Primitives

    /// An ioctl whose argument is `value` in place; returns the value as the kernel left it.
    // SAFETY: the kernel reads or writes exactly the argument size the request encodes (or
    // sizeof(struct ifreq) for the tun/SIOC requests); every caller passes the UAPI type of
    // that size (CFerry's mirrors are size-checked against the headers in shim.c), so the
    // kernel stays inside `v`.
    @discardableResult
    func call<T>(_ request: UInt, _ value: T, _ detail: String = "") throws -> T {
        var v = value
        let e = withUnsafeMutableBytes(of: &v) { device.ioctl(request, $0.baseAddress) }
        guard e == 0 else { throw failure(request, e, detail) }
        return v
    }

    /// An ioctl whose argument is a byte buffer (variable-length structs); the buffer holds the
    /// kernel's answer afterwards.
    // SAFETY: the buffers come from `VhostIoctlEncoding`, sized as their headers say (nregions
    // regions after `struct vhost_memory`; `len` bytes after `struct vhost_vdpa_config`),
    // which is exactly what the kernel copies.
    func call(_ request: UInt, bytes: inout [UInt8], _ detail: String = "") throws {
        let e = bytes.withUnsafeMutableBytes { device.ioctl(request, $0.baseAddress) }
        guard e == 0 else { throw failure(request, e, detail) }
    }

    func failure(_ request: UInt, _ e: Int32, _ detail: String) -> VhostError {
        .io(path: path, operation: VhostIoctl.name(request) + (detail.isEmpty ? "" : " (\(detail))"), errno: e)
    }

    // MARK: Owner and features

    public func setOwner() throws {
        let e = device.ioctl(VhostIoctl.setOwner, nil)
        guard e == 0 else { throw failure(VhostIoctl.setOwner, e, "") }
    }

    public func getFeatures() throws -> UInt64 {
        try call(VhostIoctl.getFeatures, UInt64(0))
    }

    public func setFeatures(_ features: UInt64) throws {
        try call(VhostIoctl.setFeatures, features, "0x" + String(features, radix: 16))
    }

    public func getBackendFeatures() throws -> UInt64 {
        try call(VhostIoctl.getBackendFeatures, UInt64(0))
    }

    public func setBackendFeatures(_ features: UInt64) throws {
        try call(VhostIoctl.setBackendFeatures, features, "0x" + String(features, radix: 16))
    }

    /// VHOST_SET_MEM_TABLE (vhost-net; vhost-vdpa maps memory with IOTLB messages instead).
    public func setMemoryTable(_ regions: [VhostMemoryRegion]) throws {
        var bytes = VhostIoctlEncoding.memoryTable(regions)
        try call(VhostIoctl.setMemTable, bytes: &bytes, "\(regions.count) region(s)")
    }

    // MARK: Vrings

    public func setVringNum(index: UInt32, num: UInt32) throws {
        try call(VhostIoctl.setVringNum, ferry_vhost_vring_state(index: index, num: num), "ring \(index), \(num)")
    }

    public func setVringBase(index: UInt32, num: UInt32) throws {
        try call(VhostIoctl.setVringBase, ferry_vhost_vring_state(index: index, num: num), "ring \(index), \(num)")
    }

    /// Stops the ring and returns the device's next avail index.
    public func getVringBase(index: UInt32) throws -> UInt32 {
        let state = try call(VhostIoctl.getVringBase, ferry_vhost_vring_state(index: index, num: 0), "ring \(index)")
        return state.num
    }

    public func setVringAddr(index: UInt32, _ addr: VhostVringAddr) throws {
        try call(VhostIoctl.setVringAddr,
                 ferry_vhost_vring_addr(index: index, flags: addr.flags, desc_user_addr: addr.descUserAddr,
                                        used_user_addr: addr.usedUserAddr, avail_user_addr: addr.availUserAddr,
                                        log_guest_addr: addr.logGuestAddr),
                 "ring \(index)")
    }

    /// `fd` -1 unbinds (VHOST_FILE_UNBIND).
    public func setVringKick(index: UInt32, fd: Int32) throws {
        try call(VhostIoctl.setVringKick, ferry_vhost_vring_file(index: index, fd: fd), "ring \(index)")
    }

    /// `fd` -1 unbinds (VHOST_FILE_UNBIND).
    public func setVringCall(index: UInt32, fd: Int32) throws {
        try call(VhostIoctl.setVringCall, ferry_vhost_vring_file(index: index, fd: fd), "ring \(index)")
    }

    // MARK: vhost-net

    /// Attaches the socket (a tap fd) behind ring `index`, or detaches it with `fd` -1.
    public func netSetBackend(index: UInt32, fd: Int32) throws {
        try call(VhostIoctl.netSetBackend, ferry_vhost_vring_file(index: index, fd: fd), "ring \(index), fd \(fd)")
    }

    // MARK: vhost-vdpa

    public func vdpaGetDeviceID() throws -> UInt32 {
        try call(VhostIoctl.vdpaGetDeviceID, UInt32(0))
    }

    public func vdpaGetStatus() throws -> UInt8 {
        try call(VhostIoctl.vdpaGetStatus, UInt8(0))
    }

    public func vdpaSetStatus(_ status: UInt8) throws {
        try call(VhostIoctl.vdpaSetStatus, status, "0x" + String(status, radix: 16))
    }

    /// Reads `size` bytes of config space at `offset`.
    public func vdpaGetConfig(offset: UInt32, size: Int) throws -> [UInt8] {
        var bytes = VhostIoctlEncoding.vdpaConfig(offset: offset, length: size)
        try call(VhostIoctl.vdpaGetConfig, bytes: &bytes, "offset \(offset), \(size) bytes")
        return Array(bytes[VhostIoctlEncoding.vdpaConfigHeaderSize...])
    }

    public func vdpaSetConfig(offset: UInt32, bytes payload: [UInt8]) throws {
        var bytes = VhostIoctlEncoding.vdpaConfig(offset: offset, length: payload.count, payload: payload)
        try call(VhostIoctl.vdpaSetConfig, bytes: &bytes, "offset \(offset), \(payload.count) bytes")
    }

    public func vdpaSetVringEnable(index: UInt32, enable: Bool) throws {
        try call(VhostIoctl.vdpaSetVringEnable, ferry_vhost_vring_state(index: index, num: enable ? 1 : 0),
                 "ring \(index), \(enable ? "on" : "off")")
    }

    /// The largest ring the device accepts.
    public func vdpaGetVringNum() throws -> UInt16 {
        try call(VhostIoctl.vdpaGetVringNum, UInt16(0))
    }

    public func vdpaGetIovaRange() throws -> (first: UInt64, last: UInt64) {
        let r = try call(VhostIoctl.vdpaGetIovaRange, ferry_vhost_vdpa_iova_range(first: 0, last: 0))
        return (r.first, r.last)
    }

    public func vdpaGetConfigSize() throws -> UInt32 {
        try call(VhostIoctl.vdpaGetConfigSize, UInt32(0))
    }

    public func vdpaGetVqsCount() throws -> UInt32 {
        try call(VhostIoctl.vdpaGetVqsCount, UInt32(0))
    }

    /// Writes one IOTLB message; vhost-vdpa applies it (or queues it inside a batch).
    public func writeIotlb(_ message: VhostIotlbMessage) throws {
        let bytes = message.encoded
        let e = bytes.withUnsafeBytes { device.write($0) }
        guard e == 0 else {
            throw VhostError.io(path: path, operation: "IOTLB \(message.kind) write (iova 0x\(String(message.iova, radix: 16)), size 0x\(String(message.size, radix: 16)))",
                                errno: e)
        }
    }
}
