import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// The listening side of server mode (`server=1`): Ferry binds the socket and the vhost
/// backend connects. The listener outlives each connection, so a backend that quits and comes
/// back is accepted again (DPDK's `vhost_user_server_reconnect`).
///
/// Unlike DPDK, which fails on an existing path ("remove it and try again"), a stale socket
/// file left by a crashed run is removed first, but only when nobody accepts on it. Anything
/// at the path that is not a socket is left alone and refused.
public final class VhostUserListener {
    public let path: String
    /// The listening descriptor (non-blocking), or -1 once closed. Readable when a backend
    /// is waiting to be accepted, so a control loop can poll it.
    public private(set) var fileDescriptor: Int32
    /// The identity of the socket file this listener created, so `close` unlinks only its own.
    private var boundFile: (dev: UInt64, ino: UInt64)?

    public init(path: String, backlog: Int32 = 1) throws {
        self.path = path
        self.fileDescriptor = -1
        try Self.removeStaleSocket(at: path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VhostError.io(path: path, operation: "socket", errno: errno) }
        do {
            let rc = try UnixSocketAddress.with(path: path) { addr, len in bind(fd, addr, len) }
            if rc != 0 { throw VhostError.io(path: path, operation: "bind", errno: errno) }
            if listen(fd, backlog) != 0 { throw VhostError.io(path: path, operation: "listen", errno: errno) }
            let fl = fcntl(fd, F_GETFL)
            if fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 {
                throw VhostError.io(path: path, operation: "fcntl O_NONBLOCK", errno: errno)
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
        fileDescriptor = fd
        var st = stat()
        if lstat(path, &st) == 0 { boundFile = (UInt64(st.st_dev), UInt64(st.st_ino)) }
    }

    deinit { close() }

    /// Waits up to `timeoutMs` (negative: forever) for a backend to connect.
    public func accept(timeoutMs: Int) throws -> VhostUserSocket {
        let deadline = Deadline(timeoutMs: timeoutMs)
        while true {
            guard fileDescriptor >= 0 else { throw VhostError.closed(path: path) }
            // accept4 is GNU-only and not visible to Swift; the adopting init sets
            // FD_CLOEXEC and O_NONBLOCK right after.
            let fd = Glibc.accept(fileDescriptor, nil, nil)
            if fd >= 0 { return VhostUserSocket(adopting: fd, path: path) }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED:
                guard let ms = deadline.remainingMs() else {
                    throw VhostError.timeout(path: path, what: "a vhost backend to connect")
                }
                var p = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
                let r = poll(&p, 1, ms)
                if r < 0 && errno != EINTR { throw VhostError.io(path: path, operation: "poll", errno: errno) }
                if r == 0 && ms >= 0 && deadline.remainingMs() == nil {
                    throw VhostError.timeout(path: path, what: "a vhost backend to connect")
                }
            default:
                throw VhostError.io(path: path, operation: "accept", errno: e)
            }
        }
    }

    /// Stops listening and removes the socket file if it is still the one bound here.
    /// Idempotent.
    public func close() {
        guard fileDescriptor >= 0 else { return }
        Glibc.close(fileDescriptor)
        fileDescriptor = -1
        var st = stat()
        if let bound = boundFile, lstat(path, &st) == 0,
           UInt64(st.st_dev) == bound.dev, UInt64(st.st_ino) == bound.ino {
            unlink(path)
        }
        boundFile = nil
    }

    /// Unlinks a socket file nobody accepts on. A live listener is EADDRINUSE; a non-socket
    /// is EEXIST.
    private static func removeStaleSocket(at path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }  // nothing there
        guard st.st_mode & S_IFMT == S_IFSOCK else {
            throw VhostError.io(path: path, operation: "bind (the path exists and is not a socket)", errno: EEXIST)
        }
        if let probe = try? VhostUserSocket.connect(path: path) {
            probe.close()
            throw VhostError.io(path: path, operation: "bind (another process is listening there)", errno: EADDRINUSE)
        }
        if unlink(path) != 0 && errno != ENOENT {
            throw VhostError.io(path: path, operation: "unlink stale socket", errno: errno)
        }
    }
}
