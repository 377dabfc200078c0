#if canImport(Glibc)
import Glibc
#endif

/// Which vhost transport a `path=` names, decided as DPDK's `virtio_user_backend_type` does
/// (drivers/net/virtio/virtio_user_ethdev.c): from what is at the path, not from its name.
public enum VhostBackendKind: Equatable, Sendable, CustomStringConvertible {
    /// A unix socket, or nothing yet (server mode creates it; a client waits for it).
    case vhostUser
    /// A misc character device: /dev/vhost-net.
    case vhostKernel
    /// A character device whose major is registered as "vhost-vdpa": /dev/vhost-vdpa-N.
    case vhostVdpa

    public var description: String {
        switch self {
        case .vhostUser: return "vhost-user"
        case .vhostKernel: return "vhost-kernel"
        case .vhostVdpa: return "vhost-vdpa"
        }
    }

    /// The misc character device major (`MISC_MAJOR`).
    public static let miscMajor: UInt32 = 10

    /// Classifies `path`. `procDevices` is the /proc/devices text (read when the path is a
    /// character device that is not misc); tests pass their own.
    public static func detect(path: String, procDevices: String? = nil) throws -> VhostBackendKind {
        var st = stat()
        if stat(path, &st) != 0 {
            let e = errno
            if e == ENOENT { return .vhostUser }
            throw VhostBackendKindError.unreadable(path: path, errno: e)
        }
        let type = st.st_mode & S_IFMT
        if type == S_IFSOCK { return .vhostUser }
        guard type == S_IFCHR else {
            throw VhostBackendKindError.unrecognised(path: path, what: type == S_IFDIR ? "a directory"
                                                         : type == S_IFREG ? "a regular file" : "not a socket or device")
        }
        let major = deviceMajor(UInt64(st.st_rdev))
        if major == miscMajor { return .vhostKernel }
        let text = procDevices ?? readSmallFile("/proc/devices")
        if let text, let vdpa = vdpaMajor(procDevices: text), vdpa == major { return .vhostVdpa }
        throw VhostBackendKindError.unrecognised(path: path, what: "a character device with major \(major), neither misc nor vhost-vdpa")
    }

    /// The major number of a Linux `dev_t` (glibc's `gnu_dev_major`).
    public static func deviceMajor(_ dev: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff)))
    }

    /// The major registered as "vhost-vdpa" among the character devices of /proc/devices.
    /// Block devices are not considered: a block major of the same name would be meaningless.
    public static func vdpaMajor(procDevices text: String) -> UInt32? {
        var inCharacterSection = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.hasPrefix("Character devices:") { inCharacterSection = true; continue }
            if trimmed.hasPrefix("Block devices:") { inCharacterSection = false; continue }
            guard inCharacterSection else { continue }
            let fields = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2, fields[1] == "vhost-vdpa", let major = UInt32(fields[0]) {
                return major
            }
        }
        return nil
    }

    /// Reads a small text file (procfs reports size 0, so read until EOF, bounded).
    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Why a path cannot be a vhost backend; every message names the path.
public enum VhostBackendKindError: Error, Equatable, CustomStringConvertible {
    /// stat failed for a reason other than "does not exist".
    case unreadable(path: String, errno: Int32)
    /// Something is there, but not a socket, misc device or vhost-vdpa device.
    case unrecognised(path: String, what: String)

    public var description: String {
        switch self {
        case let .unreadable(path, errno):
            return "\(path): cannot inspect the vhost backend path (\(String(cString: strerror(errno))))"
        case let .unrecognised(path, what):
            return "\(path): not a vhost backend (\(what)); expected a vhost-user socket, /dev/vhost-net or /dev/vhost-vdpa-N"
        }
    }
}
