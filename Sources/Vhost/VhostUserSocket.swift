import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// One connected vhost-user stream: moves encoded messages and their file descriptors.
///
/// The socket is non-blocking and every wait goes through `poll` with a deadline, so a
/// backend that stops reading or never answers yields `VhostError.timeout` instead of a hung
/// control thread. A timeout can leave half a message in the stream; the owner must then
/// drop the connection (vhost-user.rst: a front-end that "receives a wrong reply … will close
/// the connection").
///
/// Not thread-safe: one thread talks on it. `shutdown()` may be called from another thread
/// to wake a blocked `receive`.
public final class VhostUserSocket {
    /// The socket path, for error messages.
    public let path: String
    /// The connected descriptor, or -1 once closed.
    public private(set) var fileDescriptor: Int32

    /// How long a reply may take by default. DPDK blocks forever; Ferry does not.
    public static let defaultTimeoutMs = 5000

    /// Takes ownership of a connected stream socket (from `accept`, `socketpair` or
    /// `connect`) and makes it non-blocking and close-on-exec.
    public init(adopting fd: Int32, path: String) {
        self.path = path
        self.fileDescriptor = fd
        if fd >= 0 {
            let fl = fcntl(fd, F_GETFL)
            if fl >= 0 { _ = fcntl(fd, F_SETFL, fl | O_NONBLOCK) }
            let fdfl = fcntl(fd, F_GETFD)
            if fdfl >= 0 { _ = fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) }
        }
    }

    deinit { close() }

    /// Connects to a vhost-user backend listening at `path` (client mode). Nothing there, or
    /// nothing accepting, is `backendMissing` naming the path.
    public static func connect(path: String) throws -> VhostUserSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VhostError.io(path: path, operation: "socket", errno: errno) }
        let rc: Int32
        do {
            rc = try UnixSocketAddress.with(path: path) { addr, len in Glibc.connect(fd, addr, len) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            if e == ENOENT || e == ECONNREFUSED {
                throw VhostError.backendMissing(path: path, errno: e)
            }
            throw VhostError.io(path: path, operation: "connect", errno: e)
        }
        return VhostUserSocket(adopting: fd, path: path)
    }

    // MARK: Sending

    /// Sends one message; `fds` (at most 8) ride as SCM_RIGHTS on its first byte. The
    /// descriptors stay owned by the caller (the kernel duplicates them for the peer).
    public func send(_ message: VhostUserMessage, fds: [Int32] = [], timeoutMs: Int = defaultTimeoutMs) throws {
        try sendBytes(message.encode(), fds: fds, timeoutMs: timeoutMs, what: "\(message.request)")
    }

    /// Sends pre-encoded bytes (used by tests and hostile doubles to send malformed messages).
    public func sendBytes(_ bytes: [UInt8], fds: [Int32] = [], timeoutMs: Int = defaultTimeoutMs,
                          what: String = "message") throws {
        guard fileDescriptor >= 0 else { throw VhostError.closed(path: path) }
        guard fds.count <= Int(FERRY_MAX_FDS) else {
            throw VhostError.io(path: path, operation: "send \(what) with \(fds.count) fds", errno: EINVAL)
        }
        let deadline = Deadline(timeoutMs: timeoutMs)
        var sent = 0
        while sent < bytes.count {
            let fd = fileDescriptor
            let r: Int = bytes.withUnsafeBytes { buf in
                fds.withUnsafeBufferPointer { f in
                    // SAFETY: `buf` is valid for bytes.count bytes and sent < bytes.count; the
                    // fd array is only passed with the first chunk, so the peer gets them once.
                    let first = sent == 0
                    return ferry_send_with_fds(fd, buf.baseAddress! + sent, bytes.count - sent,
                                               first ? f.baseAddress : nil, first ? Int32(f.count) : 0)
                }
            }
            if r >= 0 {
                sent += r
                continue
            }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK:
                try waitFor(Int16(POLLOUT), deadline: deadline, what: "room to send \(what)")
            case EPIPE, ECONNRESET, ENOTCONN:
                throw VhostError.closed(path: path)
            default:
                throw VhostError.io(path: path, operation: "send \(what)", errno: e)
            }
        }
    }

    // MARK: Receiving

    /// Receives one message: exactly 12 header bytes, then exactly `size` payload bytes
    /// (refused above `VhostUserConstants.maxPayloadSize` before reading it), with every
    /// descriptor that arrived alongside, in order. The caller owns the returned fds.
    ///
    /// - Throws: `timeout` when nothing complete arrives within `timeoutMs` (negative waits
    ///   forever), `closed` at EOF, `protocolViolation` for a malformed message.
    ///
    /// `expectingReply` is passed to the codec: a front-end sets it, so a message without the
    /// REPLY flag is refused as such.
    public func receive(timeoutMs: Int = defaultTimeoutMs, waitingFor what: String = "a message",
                        expectingReply: Bool? = nil) throws -> (VhostUserMessage, [Int32]) {
        guard fileDescriptor >= 0 else { throw VhostError.closed(path: path) }
        let deadline = Deadline(timeoutMs: timeoutMs)
        var fds: [Int32] = []
        do {
            let headerBytes = try readExactly(VhostUserConstants.headerSize, deadline: deadline, fds: &fds, what: what)
            let header: VhostUserHeader
            do { header = try VhostUserHeader(decoding: headerBytes) } catch let e as VhostUserCodecError {
                throw e.violation(path: path)
            }
            let payload = try readExactly(Int(header.size), deadline: deadline, fds: &fds, what: what)
            do {
                return (try VhostUserMessage.decode(header: header, payload: payload,
                                                    expectingReply: expectingReply), fds)
            } catch let e as VhostUserCodecError {
                throw e.violation(path: path)
            }
        } catch {
            for f in fds { Glibc.close(f) }
            throw error
        }
    }

    /// Waits until a message (or EOF) is readable. False on timeout.
    public func waitReadable(timeoutMs: Int) throws -> Bool {
        guard fileDescriptor >= 0 else { throw VhostError.closed(path: path) }
        do {
            try waitFor(Int16(POLLIN), deadline: Deadline(timeoutMs: timeoutMs), what: "")
            return true
        } catch VhostError.timeout {
            return false
        }
    }

    private func readExactly(_ count: Int, deadline: Deadline, fds: inout [Int32], what: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        var incoming = [Int32](repeating: -1, count: Int(FERRY_MAX_FDS))
        while got < count {
            var n: Int32 = 0
            let fd = fileDescriptor
            let r: Int = buffer.withUnsafeMutableBytes { buf in
                incoming.withUnsafeMutableBufferPointer { f in
                    // SAFETY: writes at most count - got bytes into a buffer of count bytes,
                    // and at most FERRY_MAX_FDS descriptors into an array of that length.
                    ferry_recv_with_fds(fd, buf.baseAddress! + got, count - got, f.baseAddress,
                                        FERRY_MAX_FDS, &n, 0)
                }
            }
            if r > 0 {
                got += r
                fds.append(contentsOf: incoming[0..<Int(n)])
                if fds.count > Int(FERRY_MAX_FDS) {
                    throw VhostError.protocolViolation(path: path, detail: "\(fds.count) file descriptors with one message")
                }
                continue
            }
            if r == 0 { throw VhostError.closed(path: path) }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK:
                try waitFor(Int16(POLLIN), deadline: deadline, what: what)
            case ECONNRESET, ENOTCONN, EPIPE:
                throw VhostError.closed(path: path)
            case EMSGSIZE:
                throw VhostError.protocolViolation(path: path, detail: "more than \(FERRY_MAX_FDS) file descriptors with one message")
            default:
                throw VhostError.io(path: path, operation: "receive \(what)", errno: e)
            }
        }
        return buffer
    }

    private func waitFor(_ events: Int16, deadline: Deadline, what: String) throws {
        while true {
            guard let ms = deadline.remainingMs() else { throw VhostError.timeout(path: path, what: what) }
            var p = pollfd(fd: fileDescriptor, events: events, revents: 0)
            let r = poll(&p, 1, ms)
            if r > 0 { return }  // readable, writable, or HUP/ERR: the next call reports which
            if r == 0 {
                if ms < 0 { continue }
                throw VhostError.timeout(path: path, what: what)
            }
            let e = errno
            if e == EINTR { continue }
            throw VhostError.io(path: path, operation: "poll", errno: e)
        }
    }

    // MARK: State

    /// True once the peer has closed (a zero-byte peek) or the socket is closed here.
    public func isPeerClosed() -> Bool {
        fileDescriptor < 0 || ferry_socket_peer_closed(fileDescriptor) != 0
    }

    /// Shuts both directions down without releasing the descriptor: wakes a thread blocked
    /// in `receive` (it sees EOF) while that thread still owns the fd.
    public func shutdown() {
        if fileDescriptor >= 0 { _ = Glibc.shutdown(fileDescriptor, Int32(SHUT_RDWR)) }
    }

    /// Closes the connection. Idempotent.
    public func close() {
        if fileDescriptor >= 0 {
            Glibc.close(fileDescriptor)
            fileDescriptor = -1
        }
    }
}

/// A monotonic deadline for poll loops.
struct Deadline {
    /// nil: wait forever.
    private let end: UInt64?

    init(timeoutMs: Int) {
        end = timeoutMs < 0 ? nil : ferry_monotonic_ns() + UInt64(min(timeoutMs, Int(Int32.max))) * 1_000_000
    }

    /// Milliseconds left for poll (-1 = forever, rounded up so a wait never ends early), or
    /// nil once the deadline has passed.
    func remainingMs() -> Int32? {
        guard let end else { return -1 }
        let now = ferry_monotonic_ns()
        if now >= end { return nil }
        let ms = (end - now + 999_999) / 1_000_000
        return Int32(min(ms, UInt64(Int32.max)))
    }
}

/// Building a `sockaddr_un` from a path.
enum UnixSocketAddress {
    /// Calls `body` with the address of `path`. Paths that do not fit `sun_path` (107 bytes
    /// and a NUL) or contain a NUL are refused with ENAMETOOLONG / EINVAL.
    static func with<R>(path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws -> R {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, !bytes.contains(0) else {
            throw VhostError.io(path: path, operation: "socket address", errno: EINVAL)
        }
        guard bytes.count < capacity else {
            throw VhostError.io(path: path, operation: "socket address (\(bytes.count) bytes, limit \(capacity - 1))",
                                errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &addr) { p in
            // SAFETY: sockaddr_un begins with the sockaddr fields; the kernel reads `len` bytes.
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
}
