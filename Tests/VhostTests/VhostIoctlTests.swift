import XCTest
import CFerry
@testable import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for /dev/vhost-net, /dev/vhost-vdpa-N or /dev/net/tun: records every ioctl with
/// the bytes the kernel would have read, answers the ones the kernel writes from `replies`,
/// and fails the ones listed in `failures`.
final class RecordingIoctlDevice: VhostIoctlDevice {
    struct Call: Equatable {
        var request: UInt
        var bytes: [UInt8]
    }

    var fileDescriptor: Int32
    private(set) var calls: [Call] = []
    private(set) var writes: [[UInt8]] = []
    private(set) var closeCount = 0
    /// Bytes copied into the argument of a request the kernel writes back.
    var replies: [UInt: [UInt8]] = [:]
    /// An errno to fail a request with.
    var failures: [UInt: Int32] = [:]
    /// An errno to fail writes with.
    var writeFailure: Int32 = 0
    /// Or an errno chosen per written message.
    var failWrite: (([UInt8]) -> Int32)?

    init(fd: Int32 = 100) { fileDescriptor = fd }

    func ioctl(_ request: UInt, _ argument: UnsafeMutableRawPointer?) -> Int32 {
        var size = VhostIoctl.argumentSize(request)
        if let argument {
            // Variable-length arguments: a header that says how much follows.
            if request == VhostIoctl.setMemTable {
                size = 8 + Int(argument.load(as: UInt32.self)) * 32
            } else if request == VhostIoctl.vdpaGetConfig || request == VhostIoctl.vdpaSetConfig {
                size = 8 + Int(argument.load(fromByteOffset: 4, as: UInt32.self))
            } else if request == VhostIoctl.tunSetIff || request == VhostIoctl.tunGetIff
                        || request == VhostIoctl.siocSifHwaddr {
                // Encoded as taking an int (or nothing), but the kernel copies a struct ifreq.
                size = 40
            }
        }
        let bytes = argument.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
        calls.append(Call(request: request, bytes: bytes))
        if let e = failures[request] { return e }
        if let reply = replies[request], let argument {
            reply.prefix(size).withUnsafeBytes { argument.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        return 0
    }

    func ioctl(_ request: UInt, value: UInt) -> Int32 {
        calls.append(Call(request: request, bytes: withUnsafeBytes(of: value) { Array($0) }))
        return failures[request] ?? 0
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        writes.append(Array(bytes))
        return failWrite?(Array(bytes)) ?? writeFailure
    }

    func close() {
        closeCount += 1
        fileDescriptor = -1
    }

    /// The requests made, in order.
    var requests: [UInt] { calls.map(\.request) }

    /// The calls of one request.
    func calls(_ request: UInt) -> [Call] { calls.filter { $0.request == request } }
}

/// Native-order bytes of a value (ioctl arguments are host-order C structs).
func bytes<T>(of value: T) -> [UInt8] {
    withUnsafeBytes(of: value) { Array($0) }
}

/// Reads a `T` at `offset` of recorded argument bytes.
func load<T>(_ type: T.Type, _ bytes: [UInt8], at offset: Int = 0) -> T {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
}

final class VhostIoctlTests: XCTestCase {
    // MARK: Request numbers

    /// The values every vhost front-end uses on x86-64 and arm64 (QEMU, DPDK, strace): the
    /// C macros must evaluate to exactly these.
    func testVhostRequestNumbersMatchTheKernelABI() {
        let expected: [(UInt, UInt, String)] = [
            (VhostIoctl.getFeatures, 0x8008_AF00, "VHOST_GET_FEATURES"),
            (VhostIoctl.setFeatures, 0x4008_AF00, "VHOST_SET_FEATURES"),
            (VhostIoctl.setOwner, 0xAF01, "VHOST_SET_OWNER"),
            (VhostIoctl.resetOwner, 0xAF02, "VHOST_RESET_OWNER"),
            (VhostIoctl.setMemTable, 0x4008_AF03, "VHOST_SET_MEM_TABLE"),
            (VhostIoctl.setVringNum, 0x4008_AF10, "VHOST_SET_VRING_NUM"),
            (VhostIoctl.setVringAddr, 0x4028_AF11, "VHOST_SET_VRING_ADDR"),
            (VhostIoctl.setVringBase, 0x4008_AF12, "VHOST_SET_VRING_BASE"),
            (VhostIoctl.getVringBase, 0xC008_AF12, "VHOST_GET_VRING_BASE"),
            (VhostIoctl.setVringKick, 0x4008_AF20, "VHOST_SET_VRING_KICK"),
            (VhostIoctl.setVringCall, 0x4008_AF21, "VHOST_SET_VRING_CALL"),
            (VhostIoctl.setBackendFeatures, 0x4008_AF25, "VHOST_SET_BACKEND_FEATURES"),
            (VhostIoctl.getBackendFeatures, 0x8008_AF26, "VHOST_GET_BACKEND_FEATURES"),
            (VhostIoctl.netSetBackend, 0x4008_AF30, "VHOST_NET_SET_BACKEND"),
            (VhostIoctl.vdpaGetDeviceID, 0x8004_AF70, "VHOST_VDPA_GET_DEVICE_ID"),
            (VhostIoctl.vdpaGetStatus, 0x8001_AF71, "VHOST_VDPA_GET_STATUS"),
            (VhostIoctl.vdpaSetStatus, 0x4001_AF72, "VHOST_VDPA_SET_STATUS"),
            (VhostIoctl.vdpaGetConfig, 0x8008_AF73, "VHOST_VDPA_GET_CONFIG"),
            (VhostIoctl.vdpaSetConfig, 0x4008_AF74, "VHOST_VDPA_SET_CONFIG"),
            (VhostIoctl.vdpaSetVringEnable, 0x4008_AF75, "VHOST_VDPA_SET_VRING_ENABLE"),
            (VhostIoctl.vdpaGetVringNum, 0x8002_AF76, "VHOST_VDPA_GET_VRING_NUM"),
            (VhostIoctl.vdpaGetIovaRange, 0x8010_AF78, "VHOST_VDPA_GET_IOVA_RANGE"),
            (VhostIoctl.vdpaGetConfigSize, 0x8004_AF79, "VHOST_VDPA_GET_CONFIG_SIZE"),
            (VhostIoctl.vdpaGetVqsCount, 0x8004_AF80, "VHOST_VDPA_GET_VQS_COUNT"),
        ]
        for (actual, value, name) in expected {
            XCTAssertEqual(actual, value, "\(name) is 0x\(String(actual, radix: 16))")
            XCTAssertEqual(VhostIoctl.name(actual), name)
        }
    }

    func testTunRequestNumbersMatchTheKernelABI() {
        XCTAssertEqual(VhostIoctl.tunSetIff, 0x4004_54CA)
        XCTAssertEqual(VhostIoctl.tunGetFeatures, 0x8004_54CF)
        XCTAssertEqual(VhostIoctl.tunSetOffload, 0x4004_54D0)
        XCTAssertEqual(VhostIoctl.tunGetIff, 0x8004_54D2)
        XCTAssertEqual(VhostIoctl.tunSetSndbuf, 0x4004_54D4)
        XCTAssertEqual(VhostIoctl.tunGetVnetHdrSz, 0x8004_54D7)
        XCTAssertEqual(VhostIoctl.tunSetVnetHdrSz, 0x4004_54D8)
        XCTAssertEqual(VhostIoctl.siocSifHwaddr, 0x8924)
    }

    func testRequestDecodingGivesSizeAndDirection() {
        XCTAssertEqual(VhostIoctl.argumentSize(VhostIoctl.setVringAddr), 40)
        XCTAssertEqual(VhostIoctl.argumentSize(VhostIoctl.getFeatures), 8)
        XCTAssertEqual(VhostIoctl.argumentSize(VhostIoctl.setOwner), 0)
        XCTAssertTrue(VhostIoctl.kernelReads(VhostIoctl.setFeatures))
        XCTAssertFalse(VhostIoctl.kernelWrites(VhostIoctl.setFeatures))
        XCTAssertTrue(VhostIoctl.kernelWrites(VhostIoctl.getVringBase))
        XCTAssertTrue(VhostIoctl.kernelReads(VhostIoctl.getVringBase))
        XCTAssertEqual(VhostIoctl.name(0x1234), "ioctl 0x1234")
    }

    // MARK: Layouts

    func testMirrorStructsHaveTheUAPISizes() {
        XCTAssertEqual(MemoryLayout<ferry_vhost_vring_state>.size, 8)
        XCTAssertEqual(MemoryLayout<ferry_vhost_vring_file>.size, 8)
        XCTAssertEqual(MemoryLayout<ferry_vhost_vring_addr>.size, 40)
        XCTAssertEqual(MemoryLayout<ferry_vhost_vring_addr>.offset(of: \.desc_user_addr), 8)
        XCTAssertEqual(MemoryLayout<ferry_vhost_vring_addr>.offset(of: \.log_guest_addr), 32)
        XCTAssertEqual(MemoryLayout<ferry_vhost_memory_region>.size, 32)
        XCTAssertEqual(MemoryLayout<ferry_vhost_memory_header>.size, 8)
        XCTAssertEqual(MemoryLayout<ferry_vhost_iotlb_msg>.size, 32)
        XCTAssertEqual(MemoryLayout<ferry_vhost_iotlb_msg>.offset(of: \.perm), 24)
        XCTAssertEqual(MemoryLayout<ferry_vhost_iotlb_msg>.offset(of: \.type), 25)
        XCTAssertEqual(MemoryLayout<ferry_vhost_msg_v2>.size, 72)
        XCTAssertEqual(MemoryLayout<ferry_vhost_msg_v2>.offset(of: \.iotlb), 8)
        XCTAssertEqual(MemoryLayout<ferry_vhost_vdpa_config_header>.size, 8)
        XCTAssertEqual(MemoryLayout<ferry_vhost_vdpa_iova_range>.size, 16)
        XCTAssertEqual(MemoryLayout<ferry_ifreq_flags>.size, 40)
        XCTAssertEqual(MemoryLayout<ferry_ifreq_flags>.offset(of: \.flags), 16)
        XCTAssertEqual(MemoryLayout<ferry_ifreq_hwaddr>.size, 40)
        XCTAssertEqual(MemoryLayout<ferry_ifreq_hwaddr>.offset(of: \.data), 18)
    }

    // MARK: Encodings

    func testMemoryTableEncodesHeaderThenRegions() {
        let regions = [
            VhostMemoryRegion(guestPhysAddr: 0x7f00_0000_0000, memorySize: 0x20_0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0, fd: 5),
            VhostMemoryRegion(guestPhysAddr: 0x7f00_0020_0000, memorySize: 0x40_0000, userAddr: 0x7f00_0020_0000, mmapOffset: 0x1000, fd: 6),
        ]
        let b = VhostIoctlEncoding.memoryTable(regions)
        XCTAssertEqual(b.count, 8 + 2 * 32)
        XCTAssertEqual(load(UInt32.self, b, at: 0), 2)
        XCTAssertEqual(load(UInt32.self, b, at: 4), 0)
        XCTAssertEqual(load(UInt64.self, b, at: 8), 0x7f00_0000_0000)      // guest_phys_addr
        XCTAssertEqual(load(UInt64.self, b, at: 16), 0x20_0000)            // memory_size
        XCTAssertEqual(load(UInt64.self, b, at: 24), 0x7f00_0000_0000)     // userspace_addr
        XCTAssertEqual(load(UInt64.self, b, at: 32), 0)                    // flags_padding, not the mmap offset
        XCTAssertEqual(load(UInt64.self, b, at: 40), 0x7f00_0020_0000)
        XCTAssertEqual(load(UInt64.self, b, at: 48), 0x40_0000)
    }

    func testIotlbUpdateEncodesAsVhostMsgV2() {
        let m = VhostIotlbMessage.update(iova: 0x1000_0000, size: 0x20_0000, userAddress: 0x7f12_3400_0000)
        let b = m.encoded
        XCTAssertEqual(b.count, 72)
        XCTAssertEqual(load(UInt32.self, b, at: 0), 2)             // VHOST_IOTLB_MSG_V2
        XCTAssertEqual(load(UInt32.self, b, at: 4), 0)             // asid 0
        XCTAssertEqual(load(UInt64.self, b, at: 8), 0x1000_0000)   // iova
        XCTAssertEqual(load(UInt64.self, b, at: 16), 0x20_0000)    // size
        XCTAssertEqual(load(UInt64.self, b, at: 24), 0x7f12_3400_0000) // uaddr
        XCTAssertEqual(b[32], 3)                                   // VHOST_ACCESS_RW
        XCTAssertEqual(b[33], 2)                                   // VHOST_IOTLB_UPDATE
        XCTAssertTrue(b[34...].allSatisfy { $0 == 0 })
    }

    func testIotlbInvalidateAllAndBatchMarkers() {
        let inv = VhostIotlbMessage.invalidateAll.encoded
        XCTAssertEqual(load(UInt64.self, inv, at: 8), 0)
        XCTAssertEqual(load(UInt64.self, inv, at: 16), UInt64.max)
        XCTAssertEqual(inv[33], 3)
        XCTAssertEqual(VhostIotlbMessage.batchBegin.encoded[33], 5)
        XCTAssertEqual(VhostIotlbMessage.batchEnd.encoded[33], 6)
        XCTAssertEqual(VhostIotlbMessage.batchEnd.encoded.count, VhostIotlbMessage.encodedSize)
    }

    func testMemoryTableMessagesAreDPDKsOrder() {
        let r = [VhostMemoryRegion(guestPhysAddr: 0x4000, memorySize: 0x2000, userAddr: 0x4000, mmapOffset: 0, fd: 3),
                 VhostMemoryRegion(guestPhysAddr: 0x9000, memorySize: 0x1000, userAddr: 0x9000, mmapOffset: 0, fd: 4)]
        XCTAssertEqual(VhostIotlbMessage.memoryTable(r, batch: true),
                       [.batchBegin, .invalidateAll,
                        .update(iova: 0x4000, size: 0x2000, userAddress: 0x4000),
                        .update(iova: 0x9000, size: 0x1000, userAddress: 0x9000), .batchEnd])
        XCTAssertEqual(VhostIotlbMessage.memoryTable(r, batch: false).map(\.kind), [.invalidate, .update, .update])
    }

    func testVdpaConfigBufferHasHeaderAndRoom() {
        let b = VhostIoctlEncoding.vdpaConfig(offset: 8, length: 2, payload: [0x34, 0x12])
        XCTAssertEqual(b, bytes(of: UInt32(8)) + bytes(of: UInt32(2)) + [0x34, 0x12])
        XCTAssertEqual(VhostIoctlEncoding.vdpaConfig(offset: 0, length: 6).count, 14)
    }

    // MARK: The channel

    func testChannelSendsStructsAndReadsReplies() throws {
        let dev = RecordingIoctlDevice()
        let c = VhostIoctlChannel(device: dev, path: "/dev/x")
        dev.replies[VhostIoctl.getFeatures] = bytes(of: UInt64(0x1_0000_8000))
        dev.replies[VhostIoctl.getVringBase] = bytes(of: ferry_vhost_vring_state(index: 1, num: 77))
        XCTAssertEqual(try c.getFeatures(), 0x1_0000_8000)
        XCTAssertEqual(try c.getVringBase(index: 1), 77)
        try c.setVringAddr(index: 1, VhostVringAddr(index: 9, flags: 0, descUserAddr: 0xA000, usedUserAddr: 0xC000,
                                                    availUserAddr: 0xB000, logGuestAddr: 0))
        try c.setVringKick(index: 0, fd: 17)
        let addr = dev.calls(VhostIoctl.setVringAddr)[0].bytes
        XCTAssertEqual(load(UInt32.self, addr, at: 0), 1, "the channel's ring index, not the protocol's")
        XCTAssertEqual(load(UInt64.self, addr, at: 8), 0xA000)
        XCTAssertEqual(load(UInt64.self, addr, at: 16), 0xC000)
        XCTAssertEqual(load(UInt64.self, addr, at: 24), 0xB000)
        XCTAssertEqual(dev.calls(VhostIoctl.setVringKick)[0].bytes, bytes(of: UInt32(0)) + bytes(of: Int32(17)))
        XCTAssertEqual(dev.calls(VhostIoctl.getVringBase)[0].bytes, bytes(of: UInt32(1)) + bytes(of: UInt32(0)))
    }

    func testChannelFailureNamesTheIoctlAndErrno() {
        let dev = RecordingIoctlDevice()
        dev.failures[VhostIoctl.setVringNum] = EINVAL
        let c = VhostIoctlChannel(device: dev, path: "/dev/vhost-net")
        XCTAssertThrowsError(try c.setVringNum(index: 0, num: 300)) { error in
            guard case let .io(path, operation, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "/dev/vhost-net")
            XCTAssertTrue(operation.hasPrefix("VHOST_SET_VRING_NUM"), operation)
            XCTAssertEqual(e, EINVAL)
        }
    }

    func testIotlbWriteFailureIsAnError() {
        let dev = RecordingIoctlDevice()
        dev.writeFailure = EFAULT
        let c = VhostIoctlChannel(device: dev, path: "/dev/vhost-vdpa-0")
        XCTAssertThrowsError(try c.writeIotlb(.batchBegin)) { error in
            guard case let .io(_, _, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EFAULT)
        }
        XCTAssertEqual(dev.writes.count, 1)
        XCTAssertEqual(dev.writes[0].count, 72)
    }

    func testOpeningAMissingDeviceIsBackendMissing() {
        let path = "/tmp/ferry-no-such-vhost-\(getpid())"
        XCTAssertThrowsError(try VhostFileDevice(path: path)) { error in
            XCTAssertEqual(error as? VhostError, .backendMissing(path: path, errno: ENOENT))
        }
    }

    func testRealDeviceReportsErrnoForAnIoctlItDoesNotKnow() throws {
        // /dev/null is not a vhost device: the ioctl must fail with an errno, not trap.
        let dev = try VhostFileDevice(path: "/dev/null")
        defer { dev.close() }
        let c = VhostIoctlChannel(device: dev, path: "/dev/null")
        XCTAssertThrowsError(try c.getFeatures()) { error in
            guard case let .io(_, _, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, ENOTTY)
        }
        dev.close()
        XCTAssertEqual(dev.fileDescriptor, -1)
        XCTAssertEqual(dev.ioctl(VhostIoctl.getFeatures, nil), EBADF)
    }
}
