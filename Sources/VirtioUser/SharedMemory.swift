import CFerry
import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// The memory Ferry shares with its backends: rings and packet buffers in one memfd.
///
/// Hugepage-backed (MFD_HUGETLB, 2 MiB pages) when the kernel has pages reserved, else a plain
/// memfd with one warning line. The kernel accepts `memfd_create(MFD_HUGETLB)` even with no
/// pages reserved; the failure only shows at `mmap` (ENOMEM), so that is where we fall back.
///
/// Ferry's addresses are its own virtual addresses, as in DPDK's virtio-user: the region is
/// announced with `guestPhysAddr == userAddr == base`. One memfd means one region, far under
/// the 8-region limit of vhost-user.
///
/// Carving is a bump allocator: everything is laid out once at start-up and never freed
/// piecemeal, so there is no allocator on the datapath.
public final class SharedMemory: @unchecked Sendable {
    public static let hugepageSize = 2 * 1024 * 1024

    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let fd: Int32
    public let isHugepageBacked: Bool
    private var used = 0

    /// Maps at least `size` bytes (rounded up to 2 MiB).
    public init(size requested: Int, name: String = "ferry") throws {
        let size = (max(requested, 1) + Self.hugepageSize - 1) / Self.hugepageSize * Self.hugepageSize
        if let mapped = Self.map(size: size, name: name, hugepages: true) {
            (base, fd) = mapped
            isHugepageBacked = true
        } else if let mapped = Self.map(size: size, name: name, hugepages: false) {
            (base, fd) = mapped
            isHugepageBacked = false
            FerryLog.warning("no hugepages available for \(size / 1024 / 1024) MiB; using 4 KiB pages (reserve them with: echo 1024 > /proc/sys/vm/nr_hugepages)")
        } else {
            throw SharedMemoryError.mapFailed(size: size, errno: errno)
        }
        self.size = size
    }

    deinit {
        munmap(base, size)
        Glibc.close(fd)
    }

    /// The regions SET_MEM_TABLE sends: exactly one.
    public var regions: [VhostMemoryRegion] {
        let address = UInt64(UInt(bitPattern: base))
        return [VhostMemoryRegion(guestPhysAddr: address, memorySize: UInt64(size),
                                  userAddr: address, mmapOffset: 0, fd: fd)]
    }

    /// Bytes still free for `allocate`.
    public var remaining: Int { size - used }

    /// Carves `bytes` zeroed bytes aligned to `alignment` (a power of two).
    public func allocate(bytes: Int, alignment: Int = 64) throws -> UnsafeMutableRawPointer {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0)
        let start = (used + alignment - 1) & ~(alignment - 1)
        guard bytes >= 0, start + bytes <= size else {
            throw SharedMemoryError.exhausted(requested: bytes, remaining: size - used)
        }
        used = start + bytes
        // SAFETY: start + bytes <= size, so the range lies inside the mapping. memfd pages start
        // zeroed, and nothing has been carved twice, so no memset is needed.
        return base + start
    }

    /// Whether `[address, address+length)` lies inside this memory.
    public func contains(address: UInt64, length: Int) -> Bool {
        let lo = UInt64(UInt(bitPattern: base))
        return address >= lo && length >= 0 && address - lo <= UInt64(size - length)
    }

    private static func map(size: Int, name: String, hugepages: Bool) -> (UnsafeMutableRawPointer, Int32)? {
        var flags = UInt32(FERRY_MFD_CLOEXEC)
        if hugepages { flags |= UInt32(FERRY_MFD_HUGETLB) | UInt32(FERRY_MFD_HUGE_2MB) }
        let fd = ferry_memfd_create(name, flags)
        guard fd >= 0 else { return nil }
        guard ftruncate(fd, off_t(size)) == 0 else {
            Glibc.close(fd)
            return nil
        }
        // MAP_POPULATE faults every page in now, so a hugepage shortage shows here and not as
        // a SIGBUS on the datapath.
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            Glibc.close(fd)
            return nil
        }
        return (p, fd)
    }
}

public enum SharedMemoryError: Error, CustomStringConvertible {
    case mapFailed(size: Int, errno: Int32)
    case exhausted(requested: Int, remaining: Int)

    public var description: String {
        switch self {
        case let .mapFailed(size, e):
            return "cannot map \(size) bytes of shared memory: \(String(cString: strerror(e)))"
        case let .exhausted(requested, remaining):
            return "shared memory exhausted: \(requested) bytes requested, \(remaining) left"
        }
    }
}
