#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why spawning or controlling a helper process failed.
public struct ProcessSpawnError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A child process started with `posix_spawn`, for test peers such as dpdk-testpmd.
///
/// Why not Foundation's `Process`: we need three things it does not give us on Linux:
/// - stdin is one end of a socketpair that only this object holds, so the child sees EOF (and
///   testpmd quits) the moment the test process dies, however it dies;
/// - descriptors the test process has open (vhost sockets, eventfds, memfds of the code under
///   test) must not leak into the peer, or closing them in the test would not be seen by the
///   peer; `posix_spawn_file_actions_addclosefrom_np` closes everything above 2;
/// - signal dispositions and the mask are reset, so a SIG_IGN inherited from the runner cannot
///   make the peer unkillable by SIGINT.
///
/// Every live child is also recorded in `ProcessReaper`, whose `atexit` handler kills it.
public final class SpawnedProcess {
    public let pid: pid_t
    public let executable: String
    /// Our end of the child's stdin, or -1 once closed.
    private var stdinFd: Int32
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments` (argv[1...]); stdout and stderr are appended to
    /// `logPath` (created or truncated).
    public init(executable: String, arguments: [String], logPath: String) throws {
        var pair: [Int32] = [-1, -1]
        let sockType = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, sockType, 0, &pair) == 0 else {
            throw ProcessSpawnError("socketpair for stdin failed: \(ProcessSpawn.errnoString())")
        }
        let logFd = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard logFd >= 0 else {
            let reason = ProcessSpawn.errnoString()
            close(pair[0]); close(pair[1])
            throw ProcessSpawnError("cannot open log \(logPath): \(reason)")
        }
        defer { close(logFd); close(pair[1]) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pair[1], 0)
        posix_spawn_file_actions_adddup2(&actions, logFd, 1)
        posix_spawn_file_actions_adddup2(&actions, logFd, 2)
        if let closeFrom = ProcessSpawn.addCloseFrom {
            _ = closeFrom(&actions, 3)
        } else {
            ProcessSpawn.markDescriptorsCloseOnExec(from: 3)
        }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2] {
            sigaddset(&defaults, sig)
        }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attr, &emptyMask)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var child: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { buf in
            posix_spawn(&child, executable, &actions, &attr, buf.baseAddress!, environ)
        }
        guard rc == 0 else {
            close(pair[0])
            throw ProcessSpawnError("posix_spawn \(executable) failed: \(String(cString: strerror(rc)))")
        }
        self.pid = child
        self.executable = executable
        self.stdinFd = pair[0]
        ProcessReaper.shared.register(child)
    }

    deinit {
        if exitStatus == nil { kill() }
        closeStdin()
    }

    /// Writes `text` to the child's stdin. MSG_NOSIGNAL: a dead child must not SIGPIPE the runner.
    public func writeStdin(_ text: String) throws {
        guard stdinFd >= 0 else { throw ProcessSpawnError("stdin of \(executable) is closed") }
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                send(stdinFd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw ProcessSpawnError("write to stdin of \(executable) failed: \(ProcessSpawn.errnoString())")
            }
            offset += n
        }
        bytes.removeAll()
    }

    /// Closing stdin is an orderly stop request for programs that quit at EOF.
    public func closeStdin() {
        if stdinFd >= 0 { close(stdinFd); stdinFd = -1 }
    }

    /// The wait status once the child has been reaped.
    public var waitStatus: Int32? { exitStatus }

    /// True until the child has exited and been reaped.
    public var isRunning: Bool {
        if exitStatus != nil { return false }
        return !reap(blocking: false)
    }

    @discardableResult
    public func signal(_ sig: Int32) -> Bool {
        guard isRunning else { return false }
        return Glibc.kill(pid, sig) == 0
    }

    /// Polls until the child exits or `timeoutMs` passes; true when it exited.
    public func waitForExit(timeoutMs: Int) -> Bool {
        let deadline = ProcessSpawn.nowMs() + timeoutMs
        while true {
            if !isRunning { return true }
            if ProcessSpawn.nowMs() >= deadline { return false }
            ProcessSpawn.sleepMs(10)
        }
    }

    /// SIGKILL and reap. Safe to call more than once.
    public func kill() {
        if exitStatus == nil {
            _ = Glibc.kill(pid, SIGKILL)
            _ = reap(blocking: true)
        }
    }

    /// Asks politely with `sig`, then SIGKILLs after `graceMs`. Returns true when the polite
    /// signal was enough.
    @discardableResult
    public func terminate(with sig: Int32 = SIGINT, graceMs: Int) -> Bool {
        guard isRunning else { return true }
        _ = Glibc.kill(pid, sig)
        if waitForExit(timeoutMs: graceMs) { return true }
        kill()
        return false
    }

    private func reap(blocking: Bool) -> Bool {
        if exitStatus != nil { return true }
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, blocking ? 0 : WNOHANG)
            if r == pid {
                exitStatus = status
                ProcessReaper.shared.unregister(pid)
                return true
            }
            if r == 0 { return false }
            if errno == EINTR { continue }
            // ECHILD: somebody else reaped it; treat as gone.
            exitStatus = -1
            ProcessReaper.shared.unregister(pid)
            return true
        }
    }
}

/// Kills every still-registered child when the test process exits normally (XCTest on Linux
/// ends with `exit`). Abnormal deaths are covered by stdin EOF, see `SpawnedProcess`.
final class ProcessReaper: @unchecked Sendable {
    static let shared = ProcessReaper()
    private var lock = pthread_mutex_t()
    private var pids: Set<pid_t> = []

    private init() {
        pthread_mutex_init(&lock, nil)
        atexit {
            ProcessReaper.shared.killAll()
        }
    }

    func register(_ pid: pid_t) {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        pids.insert(pid)
    }

    func unregister(_ pid: pid_t) {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        pids.remove(pid)
    }

    func killAll() {
        pthread_mutex_lock(&lock)
        let all = pids
        pids.removeAll()
        pthread_mutex_unlock(&lock)
        for pid in all {
            _ = kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
    }
}

/// Small POSIX helpers shared by the process harnesses.
public enum ProcessSpawn {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// glibc >= 2.34 has `posix_spawn_file_actions_addclosefrom_np`, but Swift's Glibc module
    /// does not declare it (it sits behind _GNU_SOURCE), so it is looked up at run time.
    static let addCloseFrom: AddCloseFrom? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            return nil
        }
        return unsafeBitCast(sym, to: AddCloseFrom.self)
    }()

    /// Fallback for older libcs: set FD_CLOEXEC on every descriptor >= `from` listed in
    /// /proc/self/fd, so none of them reaches the child.
    static func markDescriptorsCloseOnExec(from: Int32) {
        guard let dir = opendir("/proc/self/fd") else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let fd = Int32(name), fd >= from {
                let flags = fcntl(fd, F_GETFD)
                if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
            }
        }
    }

    public static func errnoString() -> String { String(cString: strerror(errno)) }

    /// Monotonic milliseconds.
    public static func nowMs() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }

    public static func sleepMs(_ ms: Int) {
        var request = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    /// Whole file as text (lossy UTF-8), or nil when it cannot be opened.
    public static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; break }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// First executable named `name` in $PATH, then in `fallbackDirs`.
    public static func which(_ name: String, fallbackDirs: [String] = ["/usr/bin", "/usr/local/bin"]) -> String? {
        var dirs: [String] = []
        if let path = getenv("PATH") {
            dirs = String(cString: path).split(separator: ":").map(String.init)
        }
        for dir in dirs + fallbackDirs where !dir.isEmpty {
            let candidate = dir.hasSuffix("/") ? dir + name : dir + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Creates a fresh directory `/tmp/<prefix>XXXXXX`. Short on purpose: AF_UNIX paths are
    /// limited to 107 bytes.
    public static func makeTemporaryDirectory(prefix: String = "ferry-") throws -> String {
        var template = Array("/tmp/\(prefix)XXXXXX".utf8CString)
        let ok = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard ok else { throw ProcessSpawnError("mkdtemp failed: \(errnoString())") }
        return String(cString: template)
    }

    /// Removes a work directory made by `makeTemporaryDirectory`: the entries directly in it
    /// (logs, sockets), then the directory. Subdirectories are left alone (and so is the dir).
    public static func removeDirectory(_ path: String) {
        guard let dir = opendir(path) else { return }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names {
            let full = path + "/" + name
            var st = stat()
            if lstat(full, &st) == 0 && (st.st_mode & S_IFMT) != S_IFDIR { unlink(full) }
        }
        rmdir(path)
    }

    /// Removes `path` when it is a socket (stale vhost-user sockets); leaves anything else.
    public static func removeSocketFile(_ path: String) {
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK {
            unlink(path)
        }
    }

    public static func isSocketFile(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
    }

    /// True when some process listens on the AF_UNIX `path` (the __SO_ACCEPTCON flag, 0x10000,
    /// in /proc/net/unix). A socket file exists from bind(); this tells that listen() happened.
    public static func isListening(unixPath path: String) -> Bool {
        guard let table = readFile("/proc/net/unix") else { return isSocketFile(path) }
        for line in table.split(separator: "\n") {
            // Num RefCount Protocol Flags Type St Inode Path
            guard line.hasSuffix(" " + path) else { continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8 else { continue }
            if let flags = UInt32(fields[3], radix: 16), flags & 0x10000 != 0 { return true }
        }
        return false
    }
}
