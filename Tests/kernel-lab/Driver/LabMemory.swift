import CFerry
import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// The lab driver's shared memory: one memfd mapped MAP_SHARED, announced as one region with
/// Ferry's virtual addresses (guest-physical = user address = IOVA), carved by a bump
/// allocator. vhost-net reads it through Ferry's page tables; vhost-vdpa (vdpa_sim in its
/// default use_va mode) maps it by file, which is why it must be a shared file mapping.
///
/// It is the lab's own, not `VirtioUser.SharedMemory`, so the lab exercises the transports
/// without depending on how the device layer lays memory out.
final class LabMemory {
    let base: UnsafeMutableRawPointer
    let size: Int
    let fd: Int32
    private var used = 0

    init(size: Int) throws {
        fd = ferry_memfd_create("ferry-kernel-lab", UInt32(FERRY_MFD_CLOEXEC))
        guard fd >= 0 else { throw LabError.failed("memfd_create: errno \(errno)") }
        guard ftruncate(fd, off_t(size)) == 0 else { throw LabError.failed("ftruncate: errno \(errno)") }
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0), p != MAP_FAILED else {
            throw LabError.failed("mmap of \(size) bytes: errno \(errno)")
        }
        base = p
        self.size = size
    }

    deinit {
        munmap(base, size)
        close(fd)
    }

    var regions: [VhostMemoryRegion] {
        let a = UInt64(UInt(bitPattern: base))
        return [VhostMemoryRegion(guestPhysAddr: a, memorySize: UInt64(size), userAddr: a, mmapOffset: 0, fd: fd)]
    }

    /// `bytes` zeroed bytes aligned to `alignment` (memfd pages start zeroed).
    func allocate(bytes: Int, alignment: Int) throws -> UnsafeMutableRawPointer {
        let start = (used + alignment - 1) & ~(alignment - 1)
        guard start + bytes <= size else { throw LabError.failed("lab memory exhausted") }
        used = start + bytes
        // SAFETY: start + bytes <= size: inside the mapping.
        return base + start
    }
}

/// Fixed-size packet buffers in `LabMemory`, named by index; a plain free list.
struct LabBuffers {
    static let headroom = 64
    static let dataRoom = 2048
    static var stride: Int { headroom + dataRoom }

    let base: UnsafeMutableRawPointer
    let count: Int
    private var free: [UInt32]

    init(memory: LabMemory, count: Int) throws {
        base = try memory.allocate(bytes: count * Self.stride, alignment: 64)
        self.count = count
        free = (0..<UInt32(count)).reversed()
    }

    mutating func get() -> UInt32? { free.popLast() }

    /// Returns a buffer; an index not from this pool is ignored.
    mutating func put(_ index: UInt32) { if Int(index) < count { free.append(index) } }

    /// Where the frame starts in buffer `index`; the 12-byte header sits just before it.
    func data(_ index: UInt32) -> UnsafeMutableRawPointer {
        // SAFETY: index < count (only indices from this pool are stored in rings).
        base + Int(index) * Self.stride + Self.headroom
    }

    func address(_ index: UInt32) -> UInt64 { UInt64(UInt(bitPattern: data(index))) }
}

/// A kick or call notifier.
struct LabEventFD {
    let fd: Int32
    init() throws {
        fd = ferry_eventfd(0, FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK)
        guard fd >= 0 else { throw LabError.failed("eventfd: errno \(errno)") }
    }
    func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(fd, $0.baseAddress, 8) }
    }
    func close() { Glibc.close(fd) }
}
