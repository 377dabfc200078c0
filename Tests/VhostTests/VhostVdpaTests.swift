import XCTest
import CFerry
@testable import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// vhost-vdpa against a recording device: the device check, backend-feature negotiation,
/// ACCESS_PLATFORM, the IOTLB sequence and the bounds kept on rings, config and IOVAs. The real
/// vdpa_sim_net is exercised by the kernel lab.
final class VhostVdpaTests: XCTestCase {
    /// A device shaped like vdpa_sim_net (kernel-lab.md): id 1, 3 virtqueues, rings of 256,
    /// 24 bytes of config, the full IOVA range, backend features 0x17e.
    func simulator(deviceID: UInt32 = 1) -> RecordingIoctlDevice {
        let dev = RecordingIoctlDevice()
        dev.replies[VhostIoctl.vdpaGetDeviceID] = bytes(of: deviceID)
        dev.replies[VhostIoctl.vdpaGetVqsCount] = bytes(of: UInt32(3))
        dev.replies[VhostIoctl.vdpaGetVringNum] = bytes(of: UInt16(256))
        dev.replies[VhostIoctl.vdpaGetConfigSize] = bytes(of: UInt32(24))
        dev.replies[VhostIoctl.vdpaGetIovaRange] = bytes(of: ferry_vhost_vdpa_iova_range(first: 0, last: UInt64.max))
        dev.replies[VhostIoctl.getFeatures] = bytes(of: UInt64(0x3_0883_0028))
        dev.replies[VhostIoctl.getBackendFeatures] = bytes(of: UInt64(0x17e))
        return dev
    }

    let region = VhostMemoryRegion(guestPhysAddr: 0x7f00_0000_0000, memorySize: 0x100_0000,
                                   userAddr: 0x7f00_0000_0000, mmapOffset: 0, fd: 7)

    func testOpensOnlyNetworkDevices() throws {
        let net = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: simulator())
        XCTAssertEqual(net.deviceID, 1)
        XCTAssertEqual(net.virtqueueCount, 3)
        XCTAssertEqual(net.maxQueueSize, 256)
        XCTAssertEqual(net.configSize, 24)
        XCTAssertThrowsError(try VhostVdpaBackend(path: "/dev/vhost-vdpa-1", device: simulator(deviceID: 2))) { error in
            guard case let .notSupported(path, what) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "/dev/vhost-vdpa-1")
            XCTAssertTrue(what.contains("id 2"), what)
        }
    }

    func testDeviceIDFailureIsAnError() {
        let dev = simulator()
        dev.failures[VhostIoctl.vdpaGetDeviceID] = ENOTTY
        XCTAssertThrowsError(try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev))
    }

    func testBackendFeaturesAreMaskedToIotlbV2AndBatch() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        XCTAssertEqual(try b.getFeatures(), 0x3_0883_0028)
        XCTAssertEqual(dev.calls(VhostIoctl.setBackendFeatures).map { load(UInt64.self, $0.bytes) }, [0x6])
        XCTAssertEqual(b.negotiatedBackendFeatures, [.iotlbMessageV2, .iotlbBatch])
        XCTAssertEqual(b.backendFeatures, 0)
    }

    func testSetFeaturesAddsAccessPlatform() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        try b.setFeatures((1 << 32) | (1 << 5))
        XCTAssertEqual(dev.calls(VhostIoctl.setFeatures).map { load(UInt64.self, $0.bytes) }, [(1 << 32) | (1 << 5) | (1 << 33)])
    }

    func testMemoryTableIsBatchInvalidateUpdateEnd() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        _ = try b.getFeatures()
        try b.setMemoryTable([region])
        let types = dev.writes.map { $0[33] }
        XCTAssertEqual(types, [5, 3, 2, 6])
        XCTAssertTrue(dev.writes.allSatisfy { load(UInt32.self, $0) == 2 && $0.count == 72 }, "vhost_msg_v2, asid 0")
        let update = dev.writes[2]
        XCTAssertEqual(load(UInt64.self, update, at: 8), region.guestPhysAddr, "IOVA is Ferry's address")
        XCTAssertEqual(load(UInt64.self, update, at: 16), region.memorySize)
        XCTAssertEqual(load(UInt64.self, update, at: 24), region.userAddr)
        XCTAssertEqual(update[32], 3, "read-write")
        XCTAssertEqual(load(UInt64.self, dev.writes[1], at: 16), UInt64.max, "invalidate everything")
        XCTAssertTrue(dev.calls(VhostIoctl.setMemTable).isEmpty, "no SET_MEM_TABLE on vDPA")
    }

    func testWithoutBatchTheBracketsAreLeftOut() throws {
        let dev = simulator()
        dev.replies[VhostIoctl.getBackendFeatures] = bytes(of: UInt64(0x2))
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        _ = try b.getFeatures()
        try b.setMemoryTable([region])
        XCTAssertEqual(dev.writes.map { $0[33] }, [3, 2])
    }

    func testWithoutIotlbV2MemoryCannotBeMapped() throws {
        let dev = simulator()
        dev.replies[VhostIoctl.getBackendFeatures] = bytes(of: UInt64(0x4))
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        _ = try b.getFeatures()
        XCTAssertThrowsError(try b.setMemoryTable([region])) { error in
            guard case .notSupported = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertTrue(dev.writes.isEmpty)
    }

    func testRegionOutsideTheIovaRangeIsRefused() throws {
        let dev = simulator()
        dev.replies[VhostIoctl.vdpaGetIovaRange] = bytes(of: ferry_vhost_vdpa_iova_range(first: 0x1000, last: 0xffff_ffff))
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        _ = try b.getFeatures()
        XCTAssertThrowsError(try b.setMemoryTable([region])) { error in
            guard case let .io(_, _, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, ERANGE)
        }
        XCTAssertTrue(dev.writes.isEmpty, "nothing is mapped when any region is out of range")
    }

    func testAFailedIotlbWriteIsReported() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        _ = try b.getFeatures()
        dev.writeFailure = ENOMEM
        XCTAssertThrowsError(try b.setMemoryTable([region]))
    }

    func testPinningBeyondTheMemlockLimitSaysSo() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        _ = try b.getFeatures()
        // vhost turns any refused UPDATE into EFAULT; pinning beyond the limit is one cause.
        dev.failWrite = { $0[33] == 2 ? EFAULT : 0 }
        XCTAssertThrowsError(try b.setMemoryTable([region])) { error in
            guard case let .io(_, operation, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EFAULT)
            XCTAssertTrue(operation.contains("RLIMIT_MEMLOCK"), operation)
        }
        dev.failWrite = { $0[33] == 5 ? EFAULT : 0 }
        XCTAssertThrowsError(try b.setMemoryTable([region])) { error in
            XCTAssertFalse("\(error)".contains("RLIMIT_MEMLOCK"), "only a failed UPDATE is about pinning")
        }
    }

    func testVringCallsUseTheDevicesIndexAndAreBounded() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        try b.setVringNum(VhostVringState(index: 2, num: 64))
        try b.setVringEnable(index: 1, enable: true)
        try b.setVringEnable(index: 1, enable: false)
        XCTAssertEqual(dev.calls(VhostIoctl.setVringNum).map(\.bytes), [bytes(of: UInt32(2)) + bytes(of: UInt32(64))])
        XCTAssertEqual(dev.calls(VhostIoctl.vdpaSetVringEnable).map(\.bytes),
                       [bytes(of: UInt32(1)) + bytes(of: UInt32(1)), bytes(of: UInt32(1)) + bytes(of: UInt32(0))])
        XCTAssertThrowsError(try b.setVringKick(index: 3, fd: 5)) { error in
            guard case let .io(_, _, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EINVAL)
        }
        XCTAssertTrue(dev.calls(VhostIoctl.setVringKick).isEmpty)
    }

    func testStatusGoesThroughTheVdpaIoctls() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        dev.replies[VhostIoctl.vdpaGetStatus] = [0x0f]
        try b.setStatus(0x0b)
        XCTAssertEqual(try b.getStatus(), 0x0f)
        XCTAssertEqual(dev.calls(VhostIoctl.vdpaSetStatus).map(\.bytes), [[0x0b]])
    }

    func testConfigReadsAndWritesTheMac() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        let mac: [UInt8] = [0x02, 0, 0, 0, 0, 1]
        dev.replies[VhostIoctl.vdpaGetConfig] = bytes(of: UInt32(0)) + bytes(of: UInt32(6)) + mac
        XCTAssertEqual(try b.getConfig(offset: 0, size: 6), mac)
        XCTAssertEqual(dev.calls(VhostIoctl.vdpaGetConfig)[0].bytes.prefix(8), ArraySlice(bytes(of: UInt32(0)) + bytes(of: UInt32(6))))
        try b.setConfig(offset: 0, bytes: [0x02, 0, 0, 0, 0, 0x42])
        XCTAssertEqual(dev.calls(VhostIoctl.vdpaSetConfig)[0].bytes, bytes(of: UInt32(0)) + bytes(of: UInt32(6)) + [0x02, 0, 0, 0, 0, 0x42])
    }

    func testConfigAccessBeyondTheConfigSizeIsRefused() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        XCTAssertThrowsError(try b.getConfig(offset: 20, size: 6))
        XCTAssertThrowsError(try b.setConfig(offset: 0, bytes: [UInt8](repeating: 0, count: 25)))
        XCTAssertThrowsError(try b.getConfig(offset: UInt32.max, size: 2))
        XCTAssertTrue(dev.calls(VhostIoctl.vdpaGetConfig).isEmpty && dev.calls(VhostIoctl.vdpaSetConfig).isEmpty)
        XCTAssertNoThrow(try b.getConfig(offset: 8, size: 2))
    }

    func testCloseResetsByClosingOnce() throws {
        let dev = simulator()
        let b = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: dev)
        b.close()
        b.close()
        XCTAssertEqual(dev.closeCount, 1)
        XCTAssertThrowsError(try b.getStatus()) { error in
            XCTAssertEqual(error as? VhostError, .closed(path: "/dev/vhost-vdpa-0"))
        }
    }

    /// Backend selection as DPDK does it: a character device whose major /proc/devices lists
    /// as vhost-vdpa is vhost-vdpa; another non-misc major is refused.
    func testVdpaMajorSelectsVhostVdpa() throws {
        let path = "/tmp/ferry-fake-vhost-vdpa-\(getpid())"
        unlink(path)
        guard mknod(path, S_IFCHR | 0o600, deviceNumber(major: 239, minor: 0)) == 0 else {
            throw XCTSkip("mknod needs CAP_MKNOD: errno \(errno)")
        }
        defer { unlink(path) }
        let devices = "Character devices:\n  1 mem\n 10 misc\n239 vhost-vdpa\n\nBlock devices:\n  8 sd\n"
        XCTAssertEqual(try VhostBackendKind.detect(path: path, procDevices: devices), .vhostVdpa)
        XCTAssertThrowsError(try VhostBackendKind.detect(path: path, procDevices: "Character devices:\n240 vhost-vdpa\n"))
    }
}
