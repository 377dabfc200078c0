import CFerry

/// The argument layouts of the vhost ioctls that carry variable-length data, built as bytes.
///
/// ioctl arguments are in the host's byte order (they are C structs, not a wire format), so
/// every field is stored natively. The fixed-size structs are CFerry's mirrors, which shim.c
/// checks against `<linux/vhost.h>` at compile time.
public enum VhostIoctlEncoding {
    /// `struct vhost_memory` followed by its regions, for VHOST_SET_MEM_TABLE. Ferry's
    /// addresses are its own virtual addresses: `guest_phys_addr` is what the rings and
    /// descriptors carry, `userspace_addr` where vhost-net reads it in Ferry's process.
    public static func memoryTable(_ regions: [VhostMemoryRegion]) -> [UInt8] {
        var bytes: [UInt8] = []
        let header = MemoryLayout<ferry_vhost_memory_header>.size
        let region = MemoryLayout<ferry_vhost_memory_region>.size
        bytes.reserveCapacity(header + regions.count * region)
        var h = ferry_vhost_memory_header(nregions: UInt32(truncatingIfNeeded: regions.count), padding: 0)
        withUnsafeBytes(of: &h) { bytes.append(contentsOf: $0) }
        for r in regions {
            var m = ferry_vhost_memory_region(guest_phys_addr: r.guestPhysAddr, memory_size: r.memorySize,
                                              userspace_addr: r.userAddr, flags_padding: 0)
            withUnsafeBytes(of: &m) { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    /// `struct vhost_vdpa_config` with `length` bytes of room (GET_CONFIG) or `payload`
    /// (SET_CONFIG) after the 8-byte header.
    public static func vdpaConfig(offset: UInt32, length: Int, payload: [UInt8] = []) -> [UInt8] {
        var h = ferry_vhost_vdpa_config_header(off: offset, len: UInt32(truncatingIfNeeded: length))
        var bytes: [UInt8] = []
        bytes.reserveCapacity(MemoryLayout<ferry_vhost_vdpa_config_header>.size + length)
        withUnsafeBytes(of: &h) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: payload.prefix(length))
        if payload.count < length { bytes.append(contentsOf: repeatElement(0, count: length - payload.count)) }
        return bytes
    }

    /// The size of `struct vhost_vdpa_config`'s header.
    public static var vdpaConfigHeaderSize: Int { MemoryLayout<ferry_vhost_vdpa_config_header>.size }
}

/// One IOTLB message as vhost-vdpa reads it from `write()`: `struct vhost_msg_v2` of type
/// VHOST_IOTLB_MSG_V2, address space 0 (Ferry does not negotiate IOTLB_ASID).
public struct VhostIotlbMessage: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        case update = 2
        case invalidate = 3
        case batchBegin = 5
        case batchEnd = 6
    }

    public var kind: Kind
    public var iova: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    /// VHOST_ACCESS_RO/WO/RW; only meaningful for `update`.
    public var permission: UInt8

    public init(kind: Kind, iova: UInt64 = 0, size: UInt64 = 0, userAddress: UInt64 = 0, permission: UInt8 = 0) {
        self.kind = kind
        self.iova = iova
        self.size = size
        self.userAddress = userAddress
        self.permission = permission
    }

    public static let readWrite = UInt8(FERRY_VHOST_ACCESS_RW)

    /// Maps `[iova, iova+size)` to Ferry's `userAddress`, read-write.
    public static func update(iova: UInt64, size: UInt64, userAddress: UInt64) -> VhostIotlbMessage {
        VhostIotlbMessage(kind: .update, iova: iova, size: size, userAddress: userAddress, permission: readWrite)
    }

    /// Unmaps everything: DPDK's `dma_unmap(0, SIZE_MAX)` before a full remap.
    public static let invalidateAll = VhostIotlbMessage(kind: .invalidate, iova: 0, size: UInt64.max)
    public static let batchBegin = VhostIotlbMessage(kind: .batchBegin)
    public static let batchEnd = VhostIotlbMessage(kind: .batchEnd)

    /// The 72 bytes written to the vhost-vdpa fd.
    public var encoded: [UInt8] {
        var m = ferry_vhost_msg_v2()
        m.type = UInt32(FERRY_VHOST_IOTLB_MSG_V2)
        m.asid = 0
        m.iotlb.iova = iova
        m.iotlb.size = size
        m.iotlb.uaddr = userAddress
        m.iotlb.perm = permission
        m.iotlb.type = kind.rawValue
        return withUnsafeBytes(of: &m) { Array($0) }
    }

    /// `sizeof(struct vhost_msg_v2)`.
    public static var encodedSize: Int { MemoryLayout<ferry_vhost_msg_v2>.size }

    /// The messages that replace every mapping with `regions` (DPDK's
    /// `vhost_vdpa_set_memory_table`): BATCH_BEGIN, INVALIDATE of everything, one UPDATE per
    /// region with IOVA = Ferry's address, BATCH_END. Without IOTLB_BATCH the brackets are left
    /// out and each message applies at once.
    public static func memoryTable(_ regions: [VhostMemoryRegion], batch: Bool) -> [VhostIotlbMessage] {
        var messages: [VhostIotlbMessage] = []
        if batch { messages.append(.batchBegin) }
        messages.append(.invalidateAll)
        for r in regions {
            messages.append(.update(iova: r.guestPhysAddr, size: r.memorySize, userAddress: r.userAddr))
        }
        if batch { messages.append(.batchEnd) }
        return messages
    }
}
