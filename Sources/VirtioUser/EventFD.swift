import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd used as a vring's kick or call notifier.
///
/// DPDK creates real eventfds for every vring even when polling, because some backends take
/// the presence of kick and call fds as a sign the driver is alive (seed,
/// `virtio_user_dev_init_notify`). Ferry does the same.
public struct EventFD: Sendable {
    public let fd: Int32

    public static func make() throws -> EventFD {
        let fd = ferry_eventfd(0, FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK)
        guard fd >= 0 else { throw EventFDError.create(errno: errno) }
        return EventFD(fd: fd)
    }

    /// Adds 1 to the counter: a kick. Never blocks; a full counter (EAGAIN) already means
    /// "notified", so the error is ignored.
    @inlinable
    public func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
    }

    /// Reads and clears the counter; nil when it was zero.
    public func drain() -> UInt64? {
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) }
        return n == 8 ? value : nil
    }

    public func close() { Glibc.close(fd) }
}

public enum EventFDError: Error, CustomStringConvertible {
    case create(errno: Int32)
    public var description: String { "eventfd: \(String(cString: strerror({ if case let .create(e) = self { return e }; return 0 }())))" }
}
