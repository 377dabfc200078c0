import CFerry
import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// The memory Ferry shares with its backends: rings and packet buffers in memfd segments.
///
/// Each segment is hugepage-backed (MFD_HUGETLB, 2 MiB pages) when the kernel has pages
/// reserved, else a plain memfd with one warning line. The kernel accepts
/// `memfd_create(MFD_HUGETLB)` even with no pages reserved; the failure only shows at `mmap`
/// (ENOMEM), so that is where we fall back.
///
/// Ferry's addresses are its own virtual addresses, as in DPDK's virtio-user: each segment is
/// announced with `guestPhysAddr == userAddr`. A virtual range is reserved up front and
/// segments are mapped back to back inside it, so memory can grow at run time (`grow`) while
/// staying contiguous: a buffer's address is still `base + index × stride`. Each segment is
/// one SET_MEM_TABLE region; `maxSegments` keeps under the backend's limit (8 for vhost-user).
///
/// Carving is a bump allocator: everything is laid out at start-up or when memory grows, and
/// never freed piecemeal, so there is no allocator on the datapath.
public final class SharedMemory: @unchecked Sendable {
    public static let hugepageSize = 2 * 1024 * 1024

    /// Start of the reserved range; the first segment starts here.
    public let base: UnsafeMutableRawPointer
    /// Bytes mapped so far (all segments).
    public private(set) var size: Int
    /// Bytes reserved: how far `grow` can go.
    public let reservedSize: Int
    public let maxSegments: Int
    public private(set) var isHugepageBacked: Bool
    private var segments: [(offset: Int, size: Int, fd: Int32)] = []
    private let reservation: UnsafeMutableRawPointer
    private let reservationSize: Int
    private let name: String
    /// The MFD_HUGE_* size flag. Tests pick a page size the machine has none of, to take the
    /// fallback path.
    let hugepageSizeFlag: UInt32
    private var used = 0

    /// The first segment's descriptor (tests and single-region callers).
    public var fd: Int32 { segments[0].fd }

    /// Maps at least `size` bytes (rounded up to 2 MiB), reserving room to grow to
    /// `reserve` bytes in at most `maxSegments` segments.
    public convenience init(size requested: Int, reserve: Int? = nil, maxSegments: Int = 8, name: String = "ferry") throws {
        try self.init(size: requested, reserve: reserve, maxSegments: maxSegments, name: name,
                      hugepageSizeFlag: UInt32(FERRY_MFD_HUGE_2MB))
    }

    init(size requested: Int, reserve: Int?, maxSegments: Int, name: String, hugepageSizeFlag: UInt32) throws {
        self.hugepageSizeFlag = hugepageSizeFlag
        let size = Self.roundUp(max(requested, 1))
        let reserved = max(size, Self.roundUp(reserve ?? size * 4))
        self.name = name
        self.maxSegments = maxSegments
        reservedSize = reserved
        // PROT_NONE reservation, with one extra hugepage so the start can be 2 MiB aligned
        // (MAP_FIXED hugetlb mappings need aligned addresses).
        reservationSize = reserved + Self.hugepageSize
        let r = mmap(nil, reservationSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let r, r != MAP_FAILED else { throw SharedMemoryError.mapFailed(size: reservationSize, errno: errno) }
        reservation = r
        let aligned = (UInt(bitPattern: r) + UInt(Self.hugepageSize) - 1) & ~UInt(Self.hugepageSize - 1)
        base = UnsafeMutableRawPointer(bitPattern: aligned)!
        self.size = 0
        isHugepageBacked = true
        do {
            try mapSegment(bytes: size)
        } catch {
            munmap(reservation, reservationSize)
            throw error
        }
    }

    deinit {
        for s in segments { Glibc.close(s.fd) }
        munmap(reservation, reservationSize)
    }

    /// The regions SET_MEM_TABLE sends: one per segment.
    public var regions: [VhostMemoryRegion] {
        segments.map { s in
            let address = UInt64(UInt(bitPattern: base + s.offset))
            return VhostMemoryRegion(guestPhysAddr: address, memorySize: UInt64(s.size),
                                     userAddr: address, mmapOffset: 0, fd: s.fd)
        }
    }

    /// Bytes still free for `allocate` without growing.
    public var remaining: Int { size - used }

    /// Carves `bytes` zeroed bytes aligned to `alignment` (a power of two).
    public func allocate(bytes: Int, alignment: Int = 64) throws -> UnsafeMutableRawPointer {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0)
        let start = (used + alignment - 1) & ~(alignment - 1)
        guard bytes >= 0, start + bytes <= size else {
            throw SharedMemoryError.exhausted(requested: bytes, remaining: size - used)
        }
        used = start + bytes
        // SAFETY: start + bytes <= size, so the range lies inside the mapped segments. memfd
        // pages start zeroed, and nothing has been carved twice, so no memset is needed.
        return base + start
    }

    /// Carves everything that is left (for the buffer pool, which grows in place).
    public func allocateRest(alignment: Int = 64) throws -> (UnsafeMutableRawPointer, Int) {
        let start = (used + alignment - 1) & ~(alignment - 1)
        let p = try allocate(bytes: max(0, size - start), alignment: alignment)
        return (p, size - start)
    }

    /// Maps a new segment of at least `bytes` right after the last one. Returns where it
    /// starts and how long it is; the caller carves it (`allocate`) or extends a pool into
    /// it. The backend must be sent the new table (SET_MEM_TABLE) before it sees any address
    /// inside.
    @discardableResult
    public func grow(bytes: Int) throws -> (UnsafeMutableRawPointer, Int) {
        guard segments.count < maxSegments else {
            throw SharedMemoryError.tooManySegments(max: maxSegments)
        }
        let length = Self.roundUp(bytes)
        guard size + length <= reservedSize else {
            throw SharedMemoryError.exhausted(requested: length, remaining: reservedSize - size)
        }
        let start = base + size
        try mapSegment(bytes: length)
        return (start, length)
    }

    /// Whether `[address, address+length)` lies inside mapped memory.
    public func contains(address: UInt64, length: Int) -> Bool {
        let lo = UInt64(UInt(bitPattern: base))
        return address >= lo && length >= 0 && length <= size && address - lo <= UInt64(size - length)
    }

    private func mapSegment(bytes: Int) throws {
        let at = base + size
        if let fd = map(at: at, size: bytes, hugepages: true) {
            segments.append((size, bytes, fd))
        } else if let fd = map(at: at, size: bytes, hugepages: false) {
            if isHugepageBacked {
                FerryLog.warning("no hugepages available for \(bytes / 1024 / 1024) MiB; using 4 KiB pages (reserve them with: echo 1024 > /proc/sys/vm/nr_hugepages)")
            }
            isHugepageBacked = false
            segments.append((size, bytes, fd))
        } else {
            throw SharedMemoryError.mapFailed(size: bytes, errno: errno)
        }
        size += bytes
    }

    private func map(at address: UnsafeMutableRawPointer, size: Int, hugepages: Bool) -> Int32? {
        var flags = UInt32(FERRY_MFD_CLOEXEC)
        if hugepages { flags |= UInt32(FERRY_MFD_HUGETLB) | hugepageSizeFlag }
        let fd = ferry_memfd_create(name, flags)
        guard fd >= 0 else { return nil }
        guard ftruncate(fd, off_t(size)) == 0 else {
            Glibc.close(fd)
            return nil
        }
        // MAP_FIXED inside our own PROT_NONE reservation replaces only reserved pages.
        // MAP_POPULATE faults every page in now, so a hugepage shortage shows here and not as
        // a SIGBUS on the datapath.
        let p = mmap(address, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            // A failed MAP_FIXED may have unmapped the reservation there: restore it.
            _ = mmap(address, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
            Glibc.close(fd)
            return nil
        }
        return fd
    }

    static func roundUp(_ n: Int) -> Int {
        (n + hugepageSize - 1) / hugepageSize * hugepageSize
    }
}

public enum SharedMemoryError: Error, CustomStringConvertible {
    case mapFailed(size: Int, errno: Int32)
    case exhausted(requested: Int, remaining: Int)
    case tooManySegments(max: Int)

    public var description: String {
        switch self {
        case let .mapFailed(size, e):
            return "cannot map \(size) bytes of shared memory: \(String(cString: strerror(e)))"
        case let .exhausted(requested, remaining):
            return "shared memory exhausted: \(requested) bytes requested, \(remaining) left"
        case let .tooManySegments(max):
            return "shared memory already has \(max) segments, the most the backend accepts"
        }
    }
}
