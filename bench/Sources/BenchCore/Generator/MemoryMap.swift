#if canImport(Glibc)
import Glibc
#endif

/// The driver's memory as the generator mapped it from SET_MEM_TABLE: at most 8 regions
/// (VHOST_MEMORY_MAX_NREGIONS), kept in a fixed table so translating an address on the hot
/// path allocates nothing.
///
/// virtio-user puts its own virtual addresses in descriptors (guest-physical = user address),
/// but the two are kept apart as the protocol defines them: ring addresses from
/// SET_VRING_ADDR are user addresses, buffer addresses in descriptors are guest-physical.
public struct MemoryMap {
    public static let maxRegions = 8

    struct Region {
        var guestPhys: UInt64 = 0
        var user: UInt64 = 0
        var size: UInt64 = 0
        /// Where the region starts in this process (mapping base + mmap offset).
        var local: UnsafeMutableRawPointer?
        /// The whole mapping, for munmap.
        var mapBase: UnsafeMutableRawPointer?
        var mapLength = 0
    }

    let regions: UnsafeMutablePointer<Region>
    private(set) var count = 0

    public init() {
        regions = .allocate(capacity: Self.maxRegions)
        regions.initialize(repeating: Region(), count: Self.maxRegions)
    }

    /// Frees the table (unmapping first). The map must not be used afterwards.
    public mutating func deallocate() {
        unmapAll()
        regions.deallocate()
    }

    public var isEmpty: Bool { count == 0 }

    /// Maps each region MAP_SHARED from its fd. Closes every fd. On failure nothing stays
    /// mapped and the reason is returned.
    public mutating func map(guestPhys: [UInt64], user: [UInt64], sizes: [UInt64], offsets: [UInt64],
                             fds: [Int32]) -> String? {
        defer { for fd in fds { close(fd) } }
        unmapAll()
        guard fds.count == sizes.count, sizes.count <= Self.maxRegions else {
            return "memory table: \(sizes.count) regions, \(fds.count) fds"
        }
        for i in 0..<sizes.count {
            let (total, overflow) = sizes[i].addingReportingOverflow(offsets[i])
            guard !overflow, sizes[i] > 0, total <= UInt64(Int.max) else {
                unmapAll()
                return "memory table: region \(i) size \(sizes[i]) offset \(offsets[i])"
            }
            // SAFETY: maps the driver's fd shared; unmapped in unmapAll.
            let p = mmap(nil, Int(total), PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0)
            guard let p, p != MAP_FAILED else {
                unmapAll()
                return "memory table: mmap of region \(i) failed: errno \(errno)"
            }
            regions[i] = Region(guestPhys: guestPhys[i], user: user[i], size: sizes[i],
                                local: p + Int(offsets[i]), mapBase: p, mapLength: Int(total))
            count = i + 1
        }
        return nil
    }

    public mutating func unmapAll() {
        for i in 0..<count {
            if let base = regions[i].mapBase { munmap(base, regions[i].mapLength) }
            regions[i] = Region()
        }
        count = 0
    }

    /// A buffer address (guest-physical) and length to a local pointer, or nil when the range
    /// is not inside one region.
    // SAFETY: the returned range lies inside a live mapping.
    @inline(__always)
    public func translate(guest address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        var i = 0
        while i < count {
            let r = regions[i]
            if address >= r.guestPhys {
                let offset = address &- r.guestPhys
                if offset < r.size && UInt64(length) <= r.size &- offset {
                    return r.local! + Int(offset)
                }
            }
            i &+= 1
        }
        return nil
    }

    /// A ring address (the driver's user address) to a local pointer.
    public func translate(user address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        for i in 0..<count {
            let r = regions[i]
            guard address >= r.user else { continue }
            let offset = address - r.user
            if offset < r.size && UInt64(length) <= r.size - offset { return r.local! + Int(offset) }
        }
        return nil
    }
}
