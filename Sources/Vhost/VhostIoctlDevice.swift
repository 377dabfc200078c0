import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// What the ioctl transports need from an open character device (/dev/vhost-net,
/// /dev/vhost-vdpa-N, /dev/net/tun): ioctls, and for vDPA `write()` of IOTLB messages.
///
/// It is a protocol so host tests can stand in a recording double for a device the host does
/// not have. Control path only.
public protocol VhostIoctlDevice: AnyObject {
    /// The descriptor, for handing to another kernel object (a tap fd to VHOST_NET_SET_BACKEND);
    /// -1 once closed.
    var fileDescriptor: Int32 { get }
    /// ioctl(2) with a pointer argument. Returns 0, or the errno value.
    func ioctl(_ request: UInt, _ argument: UnsafeMutableRawPointer?) -> Int32
    /// ioctl(2) with an integer argument passed by value. Returns 0, or the errno value.
    func ioctl(_ request: UInt, value: UInt) -> Int32
    /// write(2) of one whole message. Returns 0, or the errno value (EIO for a short write).
    func write(_ bytes: UnsafeRawBufferPointer) -> Int32
    /// Closes the descriptor. Idempotent.
    func close()
}

/// A real character device opened read-write.
public final class VhostFileDevice: VhostIoctlDevice {
    public let path: String
    public private(set) var fileDescriptor: Int32

    /// Opens `path` O_RDWR|O_CLOEXEC (plus `extraFlags`). A missing device is
    /// `backendMissing`, so the operator learns the module is not loaded rather than an errno.
    public init(path: String, extraFlags: Int32 = 0) throws {
        self.path = path
        var fd: Int32
        repeat { fd = open(path, O_RDWR | O_CLOEXEC | extraFlags) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT || e == ENODEV || e == ENXIO { throw VhostError.backendMissing(path: path, errno: e) }
            throw VhostError.io(path: path, operation: "open", errno: e)
        }
        fileDescriptor = fd
    }

    deinit { close() }

    public func ioctl(_ request: UInt, _ argument: UnsafeMutableRawPointer?) -> Int32 {
        guard fileDescriptor >= 0 else { return EBADF }
        return ferry_ioctl(fileDescriptor, request, argument) < 0 ? errno : 0
    }

    public func ioctl(_ request: UInt, value: UInt) -> Int32 {
        guard fileDescriptor >= 0 else { return EBADF }
        return ferry_ioctl_value(fileDescriptor, request, value) < 0 ? errno : 0
    }

    public func write(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        guard fileDescriptor >= 0 else { return EBADF }
        var n: Int
        repeat { n = Glibc.write(fileDescriptor, bytes.baseAddress, bytes.count) } while n < 0 && errno == EINTR
        if n < 0 { return errno }
        return n == bytes.count ? 0 : EIO
    }

    public func close() {
        guard fileDescriptor >= 0 else { return }
        Glibc.close(fileDescriptor)
        fileDescriptor = -1
    }
}
