import XCTest
import CFerry
@testable import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// vhost-kernel against recording devices: which fd each call reaches, what the tap is opened
/// and configured with, and what vhost-net is told. The real kernel is exercised by the kernel
/// lab (Tests/kernel-lab), since hosts here have no /dev/vhost-net.
final class VhostKernelTests: XCTestCase {
    /// A tap queue device that offers VNET_HDR, MULTI_QUEUE and NAPI and answers TUNGETIFF.
    func tunDevice(name: String, multiQueue: Bool, offer: Int32 = FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR | FERRY_IFF_MULTI_QUEUE | FERRY_IFF_NAPI,
                   fd: Int32) -> RecordingIoctlDevice {
        let dev = RecordingIoctlDevice(fd: fd)
        dev.replies[VhostIoctl.tunGetFeatures] = bytes(of: UInt32(offer))
        var reply = ferry_ifreq_flags()
        TapQueue.setName(&reply.name, name)
        reply.flags = Int16(FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR | (multiQueue ? FERRY_IFF_MULTI_QUEUE : 0))
        dev.replies[VhostIoctl.tunGetIff] = bytes(of: reply)
        return dev
    }

    struct Rig {
        let backend: VhostKernelBackend
        let vhost: [RecordingIoctlDevice]
        let tuns: [RecordingIoctlDevice]
    }

    func makeBackend(pairs: Int, maxRegions: Int = 64) throws -> Rig {
        let vhost = (0..<pairs).map { RecordingIoctlDevice(fd: Int32(10 + $0)) }
        let tuns = (0..<pairs).map { tunDevice(name: "ferry0", multiQueue: pairs > 1, fd: Int32(20 + $0)) }
        let taps = try tuns.map { try TapQueue.attach(device: $0, name: "ferry0", multiQueue: pairs > 1, path: "/dev/net/tun") }
        vhost[0].replies[VhostIoctl.getFeatures] = bytes(of: UInt64(0x1_033D_008000))
        let backend = VhostKernelBackend(path: "/dev/vhost-net", devices: vhost, taps: taps, maxMemoryRegions: maxRegions)
        return Rig(backend: backend, vhost: vhost, tuns: tuns)
    }

    // MARK: The tap

    func testTapIsOpenedWithVnetHeaderAndNoPacketInfo() throws {
        let dev = tunDevice(name: "tap3", multiQueue: false, fd: 7)
        let tap = try TapQueue.attach(device: dev, name: "tap%d", multiQueue: false, path: "/dev/net/tun")
        XCTAssertEqual(dev.requests, [VhostIoctl.tunGetFeatures, VhostIoctl.tunSetIff, VhostIoctl.tunGetIff])
        let request = dev.calls(VhostIoctl.tunSetIff)[0].bytes
        XCTAssertEqual(Array(request[0..<6]), Array("tap%d".utf8) + [0])
        let flags = load(Int16.self, request, at: 16)
        XCTAssertEqual(flags, Int16(FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR | FERRY_IFF_NAPI))
        XCTAssertEqual(tap.name, "tap3", "the name the kernel resolved")
        XCTAssertFalse(tap.isMultiQueue)
        XCTAssertTrue(tap.hasVnetHeader)
    }

    func testMultiQueueTapAsksForIffMultiQueue() throws {
        let dev = tunDevice(name: "mq0", multiQueue: true, offer: FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR | FERRY_IFF_MULTI_QUEUE, fd: 7)
        let tap = try TapQueue.attach(device: dev, name: "mq0", multiQueue: true, path: "/dev/net/tun")
        let flags = load(Int16.self, dev.calls(VhostIoctl.tunSetIff)[0].bytes, at: 16)
        XCTAssertEqual(flags, Int16(FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR | FERRY_IFF_MULTI_QUEUE),
                       "no NAPI when tun does not offer it")
        XCTAssertTrue(tap.isMultiQueue)
    }

    func testTunWithoutVnetHeaderIsRefused() {
        let dev = tunDevice(name: "t", multiQueue: false, offer: FERRY_IFF_TAP | FERRY_IFF_NO_PI, fd: 7)
        XCTAssertThrowsError(try TapQueue.attach(device: dev, name: "t", multiQueue: false, path: "/dev/net/tun")) { error in
            guard case .notSupported = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertFalse(dev.requests.contains(VhostIoctl.tunSetIff))
    }

    func testTunWithoutMultiQueueIsRefusedForSeveralPairs() {
        let dev = tunDevice(name: "t", multiQueue: false, offer: FERRY_IFF_TAP | FERRY_IFF_NO_PI | FERRY_IFF_VNET_HDR, fd: 7)
        XCTAssertThrowsError(try TapQueue.attach(device: dev, name: "t", multiQueue: true, path: "/dev/net/tun"))
    }

    func testInterfaceNamesAreValidated() {
        for bad in ["", "a-name-of-16-chr", "a/b", "a b", "..", "a:b"] {
            XCTAssertThrowsError(try TapQueue.validate(name: bad, path: "/dev/net/tun"), "'\(bad)'") { error in
                guard case let .io(_, operation, e) = error as? VhostError else { return XCTFail("\(error)") }
                XCTAssertEqual(e, EINVAL)
                XCTAssertTrue(operation.contains("'\(bad)'"), operation)
            }
        }
        XCTAssertNoThrow(try TapQueue.validate(name: "tap%d", path: "/dev/net/tun"))
        XCTAssertNoThrow(try TapQueue.validate(name: "a-name-of-15chr", path: "/dev/net/tun"))
    }

    func testOffloadFlagsFollowDPDK() {
        XCTAssertEqual(TapQueue.offloadFlags(features: 0), 0)
        XCTAssertEqual(TapQueue.offloadFlags(features: 1 << 7), 0, "nothing without GUEST_CSUM")
        XCTAssertEqual(TapQueue.offloadFlags(features: 1 << 1), UInt32(FERRY_TUN_F_CSUM))
        XCTAssertEqual(TapQueue.offloadFlags(features: (1 << 1) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10)),
                       UInt32(FERRY_TUN_F_CSUM | FERRY_TUN_F_TSO4 | FERRY_TUN_F_TSO6 | FERRY_TUN_F_TSO_ECN | FERRY_TUN_F_UFO))
    }

    // MARK: The backend

    func testGlobalVringIndexMapsToPairFdAndRing() throws {
        let rig = try makeBackend(pairs: 2)
        try rig.backend.setVringNum(VhostVringState(index: 3, num: 256))
        try rig.backend.setVringBase(VhostVringState(index: 2, num: 5))
        try rig.backend.setVringKick(index: 1, fd: 33)
        XCTAssertEqual(rig.vhost[1].calls(VhostIoctl.setVringNum).map(\.bytes), [bytes(of: UInt32(1)) + bytes(of: UInt32(256))])
        XCTAssertEqual(rig.vhost[1].calls(VhostIoctl.setVringBase).map(\.bytes), [bytes(of: UInt32(0)) + bytes(of: UInt32(5))])
        XCTAssertEqual(rig.vhost[0].calls(VhostIoctl.setVringKick).map(\.bytes), [bytes(of: UInt32(1)) + bytes(of: Int32(33))])
        XCTAssertTrue(rig.vhost[0].calls(VhostIoctl.setVringNum).isEmpty)
    }

    func testVringBeyondThePairsIsAnError() throws {
        let rig = try makeBackend(pairs: 1)
        XCTAssertThrowsError(try rig.backend.setVringNum(VhostVringState(index: 2, num: 256))) { error in
            guard case let .io(_, _, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EINVAL)
        }
        XCTAssertThrowsError(try rig.backend.getVringBase(index: UInt32.max))
    }

    func testOwnerFeaturesAndMemoryGoToEveryFd() throws {
        let rig = try makeBackend(pairs: 2)
        try rig.backend.setOwner()
        let features = try rig.backend.getFeatures()
        try rig.backend.setFeatures(features & ((1 << 32) | (1 << 15) | (1 << 22) | (1 << 33) | (1 << 27) | (1 << 1)))
        let region = VhostMemoryRegion(guestPhysAddr: 0x7000_0000, memorySize: 0x20_0000, userAddr: 0x7000_0000, mmapOffset: 0, fd: 9)
        try rig.backend.setMemoryTable([region])
        for dev in rig.vhost {
            XCTAssertEqual(dev.calls(VhostIoctl.setOwner).count, 1)
            XCTAssertEqual(dev.calls(VhostIoctl.setFeatures).map { load(UInt64.self, $0.bytes) }, [(1 << 32) | (1 << 15)],
                           "ACCESS_PLATFORM, bit 27, MQ and the tap offloads are not vhost-net's")
            XCTAssertEqual(dev.calls(VhostIoctl.setMemTable).map(\.bytes), [VhostIoctlEncoding.memoryTable([region])])
        }
        XCTAssertEqual(rig.vhost[0].calls(VhostIoctl.getFeatures).count, 1)
        XCTAssertEqual(rig.vhost[1].calls(VhostIoctl.getFeatures).count, 0)
    }

    func testFeaturesAddWhatTheTapProvides() throws {
        let single = try makeBackend(pairs: 1)
        let f1 = try single.backend.getFeatures()
        XCTAssertEqual(f1 & VhostKernelFeatureBits.tapGuestOffloads, VhostKernelFeatureBits.tapGuestOffloads)
        XCTAssertEqual(f1 & VhostKernelFeatureBits.tapHostOffloads, VhostKernelFeatureBits.tapHostOffloads)
        XCTAssertEqual(f1 & VhostKernelFeatureBits.mq, 0)
        XCTAssertEqual(f1 & 0x1_033D_008000, 0x1_033D_008000, "vhost-net's own offer is kept")
        let multi = try makeBackend(pairs: 2)
        XCTAssertEqual(try multi.backend.getFeatures() & VhostKernelFeatureBits.mq, VhostKernelFeatureBits.mq)
        XCTAssertEqual(single.backend.backendFeatures, 0)
    }

    func testEnablingARingAttachesTheTapAndSetsItUpOnce() throws {
        let rig = try makeBackend(pairs: 2)
        rig.backend.macAddress = [0x02, 0xfe, 0, 0, 0, 1]
        try rig.backend.setFeatures((1 << 32) | (1 << 15))
        try rig.backend.enableQueuePair(0, enable: true)
        try rig.backend.enableQueuePair(0, enable: true) // no change, no ioctl
        let attach = rig.vhost[0].calls(VhostIoctl.netSetBackend).map(\.bytes)
        XCTAssertEqual(attach, [bytes(of: UInt32(0)) + bytes(of: Int32(20)), bytes(of: UInt32(1)) + bytes(of: Int32(20))])
        let tun = rig.tuns[0]
        XCTAssertEqual(tun.calls(VhostIoctl.tunSetVnetHdrSz).map { load(Int32.self, $0.bytes) }, [12])
        XCTAssertEqual(tun.calls(VhostIoctl.tunSetSndbuf).map { load(Int32.self, $0.bytes) }, [Int32.max])
        let mac = tun.calls(VhostIoctl.siocSifHwaddr)
        XCTAssertEqual(mac.count, 1)
        XCTAssertEqual(load(UInt16.self, mac[0].bytes, at: 16), UInt16(FERRY_ARPHRD_ETHER))
        XCTAssertEqual(Array(mac[0].bytes[18..<24]), [0x02, 0xfe, 0, 0, 0, 1])
        XCTAssertTrue(tun.calls(VhostIoctl.tunSetOffload).isEmpty, "no offloads negotiated, no TUNSETOFFLOAD")
        XCTAssertEqual(rig.backend.attached, [true, true, false, false])

        try rig.backend.enableQueuePair(1, enable: true)
        XCTAssertTrue(rig.tuns[1].calls(VhostIoctl.siocSifHwaddr).isEmpty, "the MAC is set on pair 0 only")
        XCTAssertEqual(rig.vhost[1].calls(VhostIoctl.netSetBackend).map { load(Int32.self, $0.bytes, at: 4) }, [21, 21])

        try rig.backend.enableQueuePair(0, enable: false)
        XCTAssertEqual(rig.vhost[0].calls(VhostIoctl.netSetBackend).suffix(2).map { load(Int32.self, $0.bytes, at: 4) }, [-1, -1])
        try rig.backend.enableQueuePair(0, enable: true)
        XCTAssertEqual(tun.calls(VhostIoctl.siocSifHwaddr).count, 1, "the MAC is set at the first start only")
        XCTAssertEqual(tun.calls(VhostIoctl.tunSetVnetHdrSz).count, 2, "re-attaching sets the tap up again")
    }

    func testLegacyHeaderIsTenBytesAndOffloadsAreSet() throws {
        let rig = try makeBackend(pairs: 1)
        try rig.backend.setFeatures((1 << 1) | (1 << 7))
        try rig.backend.setVringEnable(index: 1, enable: true)
        XCTAssertEqual(rig.tuns[0].calls(VhostIoctl.tunSetVnetHdrSz).map { load(Int32.self, $0.bytes) }, [10])
        XCTAssertEqual(rig.tuns[0].calls(VhostIoctl.tunSetOffload).map { load(UInt.self, $0.bytes) },
                       [UInt(FERRY_TUN_F_CSUM | FERRY_TUN_F_TSO4)])
    }

    func testTooManyRegionsIsRefusedBeforeAnyIoctl() throws {
        let rig = try makeBackend(pairs: 1, maxRegions: 2)
        let r = VhostMemoryRegion(guestPhysAddr: 0x1000, memorySize: 0x1000, userAddr: 0x1000, mmapOffset: 0, fd: 3)
        XCTAssertThrowsError(try rig.backend.setMemoryTable([r, r, r])) { error in
            XCTAssertEqual(error as? VhostError, .tooManyRegions(path: "/dev/vhost-net", count: 3, max: 2))
        }
        let wrapping = VhostMemoryRegion(guestPhysAddr: UInt64.max - 10, memorySize: 0x1000, userAddr: UInt64.max - 10, mmapOffset: 0, fd: 3)
        XCTAssertThrowsError(try rig.backend.setMemoryTable([wrapping]))
        XCTAssertTrue(rig.vhost[0].calls(VhostIoctl.setMemTable).isEmpty)
    }

    func testNoStatusAndNoConfig() throws {
        let rig = try makeBackend(pairs: 1)
        for call in [{ _ = try rig.backend.getStatus() }, { try rig.backend.setStatus(1) },
                     { _ = try rig.backend.getConfig(offset: 0, size: 6) }, { try rig.backend.setConfig(offset: 0, bytes: [1]) }] {
            XCTAssertThrowsError(try call()) { error in
                guard case .notSupported = error as? VhostError else { return XCTFail("\(error)") }
            }
        }
    }

    func testGetVringBaseReturnsTheKernelsValue() throws {
        let rig = try makeBackend(pairs: 2)
        rig.vhost[1].replies[VhostIoctl.getVringBase] = bytes(of: ferry_vhost_vring_state(index: 1, num: 4242))
        XCTAssertEqual(try rig.backend.getVringBase(index: 3), 4242)
    }

    func testAnIoctlFailureIsReported() throws {
        let rig = try makeBackend(pairs: 1)
        rig.vhost[0].failures[VhostIoctl.netSetBackend] = EBADFD
        XCTAssertThrowsError(try rig.backend.setVringEnable(index: 0, enable: true))
        XCTAssertEqual(rig.backend.attached, [false, false], "a failed attach is not recorded as attached")
    }

    func testCloseClosesEveryFdOnceAndLaterCallsThrowClosed() throws {
        let rig = try makeBackend(pairs: 2)
        rig.backend.close()
        rig.backend.close()
        for d in rig.vhost + rig.tuns { XCTAssertEqual(d.closeCount, 1) }
        XCTAssertTrue(rig.backend.isPeerClosed())
        XCTAssertThrowsError(try rig.backend.setOwner()) { error in
            XCTAssertEqual(error as? VhostError, .closed(path: "/dev/vhost-net"))
        }
    }

    func testMaxMemRegionsParameter() {
        XCTAssertEqual(VhostKernelBackend.parseMaxMemoryRegions("64\n"), 64)
        XCTAssertEqual(VhostKernelBackend.parseMaxMemoryRegions("509\n"), 509)
        XCTAssertEqual(VhostKernelBackend.parseMaxMemoryRegions("0\n"), 64)
        XCTAssertEqual(VhostKernelBackend.parseMaxMemoryRegions("lots"), 64)
        XCTAssertEqual(VhostKernelBackend.parseMaxMemoryRegions("1 2"), 64)
        XCTAssertEqual(VhostKernelBackend.readMaxMemoryRegions("/tmp/ferry-no-such-parameter-\(getpid())"), 64)
        let path = "/tmp/ferry-max-mem-regions-\(getpid())"
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = "128\n".withCString { write(fd, $0, 4) }
        close(fd)
        defer { unlink(path) }
        XCTAssertEqual(VhostKernelBackend.readMaxMemoryRegions(path), 128)
    }

    func testMissingVhostNetIsBackendMissing() {
        let path = "/tmp/ferry-no-vhost-net-\(getpid())"
        XCTAssertThrowsError(try VhostKernelBackend(path: path)) { error in
            XCTAssertEqual(error as? VhostError, .backendMissing(path: path, errno: ENOENT))
        }
    }

    /// Backend selection as DPDK does it: a misc character device is vhost-kernel.
    func testMiscCharacterDeviceSelectsVhostKernel() throws {
        let path = "/tmp/ferry-fake-vhost-net-\(getpid())"
        unlink(path)
        guard mknod(path, S_IFCHR | 0o600, deviceNumber(major: 10, minor: 238)) == 0 else {
            throw XCTSkip("mknod needs CAP_MKNOD: errno \(errno)")
        }
        defer { unlink(path) }
        XCTAssertEqual(try VhostBackendKind.detect(path: path), .vhostKernel)
    }
}

/// glibc's `makedev`, which Swift does not import (it is a macro over an inline function).
func deviceNumber(major: UInt64, minor: UInt64) -> dev_t {
    dev_t(((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff))
}
