import XCTest
import CFerry
import Vhost
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The vhost-user transport against the in-process device double.
final class VhostUserBackendTests: XCTestCase {
    private var doubles: [VhostUserDeviceDouble] = []
    private var backends: [VhostUserBackend] = []
    private var fds: [Int32] = []

    override func tearDown() {
        backends.forEach { $0.close() }
        doubles.forEach { $0.stop() }
        fds.forEach { close($0) }
        backends = []
        doubles = []
        fds = []
    }

    private func device(_ config: VhostUserDeviceDouble.Configuration = .init(), tag: String = "dev") throws
        -> (VhostUserDeviceDouble, VhostUserBackend) {
        let path = temporarySocketPath(tag)
        let double = try VhostUserDeviceDouble(listeningAt: path, configuration: config)
        doubles.append(double)
        let backend = try VhostUserBackend(connectingTo: path)
        backends.append(backend)
        return (double, backend)
    }

    private func eventFD() throws -> Int32 {
        let fd = try makeEventFD()
        fds.append(fd)
        return fd
    }

    static let queueSize: UInt32 = 8
    /// Where each vring lives in the shared memory (RX = 0, TX = 1).
    static func ringOffset(_ index: UInt32) -> Int { Int(index) * 1024 }

    private func ringAddr(_ memory: SharedTestMemory, _ index: UInt32) -> VhostVringAddr {
        let base = memory.address + UInt64(Self.ringOffset(index))
        return VhostVringAddr(index: index, descUserAddr: base, usedUserAddr: base + 256, availUserAddr: base + 128)
    }

    /// The session as the virtio-user device drives it (the seed's order): owner, features
    /// (with protocol features), calls before SET_FEATURES, then memory and each ring, kick
    /// last, then pair 0 enabled.
    private func runSession(_ backend: VhostUserBackend, memory: SharedTestMemory,
                            calls: [Int32], kicks: [Int32]) throws {
        try backend.setOwner()
        let features = try backend.getFeatures()
        for i in 0..<2 { try backend.setVringCall(index: UInt32(i), fd: calls[i]) }
        try backend.setFeatures(features & (VhostUserDeviceDouble.featureVersion1 | VhostUserDeviceDouble.featureMrgRxbuf))
        try backend.setMemoryTable([memory.region])
        for i in 0..<2 {
            let index = UInt32(i)
            try backend.setVringNum(VhostVringState(index: index, num: Self.queueSize))
            try backend.setVringBase(VhostVringState(index: index, num: 0))
            try backend.setVringAddr(ringAddr(memory, index))
            try backend.setVringKick(index: index, fd: kicks[i])
        }
        try backend.enableQueuePair(0, enable: true)
    }

    static let sessionOrder: [VhostUserRequest] = [
        .setOwner, .getFeatures, .getProtocolFeatures, .setProtocolFeatures,
        .setVringCall, .setVringCall, .setFeatures, .setMemTable,
        .setVringNum, .setVringBase, .setVringAddr, .setVringKick,
        .setVringNum, .setVringBase, .setVringAddr, .setVringKick,
        .setVringEnable, .setVringEnable,
    ]

    // MARK: A whole session

    func testClientSessionMessageOrderAndDeviceState() throws {
        let (double, backend) = try device(tag: "session")
        let memory = try SharedTestMemory(size: 64 * 1024)
        let calls = [try eventFD(), try eventFD()], kicks = [try eventFD(), try eventFD()]
        try runSession(backend, memory: memory, calls: calls, kicks: kicks)

        XCTAssertEqual(backend.sentRequests, Self.sessionOrder)
        XCTAssertTrue(double.waitForRequests(count: Self.sessionOrder.count))
        XCTAssertEqual(double.receivedRequests, Self.sessionOrder)
        XCTAssertEqual(double.errors, [])

        XCTAssertTrue(double.ownerSet)
        XCTAssertEqual(backend.protocolFeatures, [.mq, .replyAck, .status])
        XCTAssertEqual(double.ackedProtocolFeatures, [.mq, .replyAck, .status])
        XCTAssertEqual(backend.unsupportedFeatures & VhostUserConstants.virtioNetFeatureMQ, 0)
        // SET_FEATURES keeps PROTOCOL_FEATURES (bit 30).
        XCTAssertEqual(double.ackedFeatures,
                       VhostUserDeviceDouble.featureVersion1 | VhostUserDeviceDouble.featureMrgRxbuf
                       | VhostUserConstants.protocolFeaturesMask)
        XCTAssertEqual(double.memoryRegions, [VhostMemoryRegion(guestPhysAddr: memory.address, memorySize: 65536,
                                                                userAddr: memory.address, mmapOffset: 0, fd: -1)])
        for i: UInt32 in 0..<2 {
            let ring = double.vring(i)
            XCTAssertEqual(ring?.num, Self.queueSize)
            XCTAssertEqual(ring?.base, 0)
            XCTAssertEqual(ring?.addr, ringAddr(memory, i))
            XCTAssertEqual(ring?.hasKickFd, true)
            XCTAssertEqual(ring?.hasCallFd, true)
            XCTAssertEqual(ring?.started, true)
            XCTAssertEqual(ring?.enabled, true)
        }

        // The memory really is shared: a write here is read by the device.
        memory.base.storeBytes(of: 0xdead_beef as UInt32, toByteOffset: 40_000, as: UInt32.self)
        XCTAssertEqual(double.readGuestMemory(at: memory.address + 40_000, length: 4), [0xef, 0xbe, 0xad, 0xde])
        XCTAssertNil(double.readGuestMemory(at: memory.address + 65_534, length: 4), "bounds-checked")
    }

    func testLoopbackDatapathAndStop() throws {
        let (double, backend) = try device(tag: "loop")
        let memory = try SharedTestMemory(size: 64 * 1024)
        let calls = [try eventFD(), try eventFD()], kicks = [try eventFD(), try eventFD()]
        let driver = TestDriverRings(memory: memory, queueSize: Self.queueSize)
        // One RX buffer posted before the device starts.
        driver.postRxBuffer(slot: 0, descriptor: 0, bufferOffset: 8192, length: 2048)
        try runSession(backend, memory: memory, calls: calls, kicks: kicks)

        let frame: [UInt8] = (0..<60).map { UInt8($0) }
        driver.sendTx(slot: 0, descriptor: 0, bufferOffset: 16384, header: [UInt8](repeating: 0, count: 12), frame: frame)

        XCTAssertTrue(double.waitUntil { driver.usedIndex(ring: 0) == 1 && driver.usedIndex(ring: 1) == 1 })
        XCTAssertEqual(double.framesLooped, 1)
        let used = driver.usedEntry(ring: 0, slot: 0)
        XCTAssertEqual(used.id, 0)
        XCTAssertEqual(used.length, 72)
        let rx = driver.bytes(at: 8192, count: 72)
        XCTAssertEqual(Array(rx[10..<12]), [1, 0], "num_buffers = 1")
        XCTAssertEqual(Array(rx[12...]), frame)
        XCTAssertNotNil(readEventFD(calls[0]), "RX interrupt: the driver did not suppress it")

        // A memory-table change mid-run, as the seed handles one: disable the pair, send the
        // table again, re-enable. The device remaps and carries on from where it was.
        try backend.enableQueuePair(0, enable: false)
        try backend.setMemoryTable([memory.region])
        try backend.enableQueuePair(0, enable: true)
        driver.postRxBuffer(slot: 1, descriptor: 1, bufferOffset: 10240, length: 2048)
        let second = frame.reversed() as [UInt8]
        driver.sendTx(slot: 1, descriptor: 1, bufferOffset: 18432, header: [UInt8](repeating: 0, count: 12), frame: second)
        XCTAssertTrue(double.waitUntil { driver.usedIndex(ring: 0) == 2 && driver.usedIndex(ring: 1) == 2 })
        XCTAssertEqual(double.framesLooped, 2)
        XCTAssertEqual(Array(driver.bytes(at: 10240 + 12, count: 60)), second)

        // No RX buffer left: the next frame is dropped, and TX still completes.
        driver.sendTx(slot: 2, descriptor: 2, bufferOffset: 20480, header: [UInt8](repeating: 0, count: 12), frame: frame)
        XCTAssertTrue(double.waitUntil { driver.usedIndex(ring: 1) == 3 })
        XCTAssertEqual(double.framesDropped, 1)
        XCTAssertEqual(double.framesLooped, 2)

        // Stop as the seed does: disable the pair, then read each ring's base.
        try backend.enableQueuePair(0, enable: false)
        XCTAssertEqual(try backend.getVringBase(index: 0), 2)
        XCTAssertEqual(try backend.getVringBase(index: 1), 3)
        XCTAssertEqual(double.errors, [])
        XCTAssertEqual(backend.sentRequests.suffix(4), [.setVringEnable, .setVringEnable, .getVringBase, .getVringBase])
        XCTAssertEqual(double.vring(0)?.started, false)
    }

    // MARK: Negotiation

    func testDeviceWithoutProtocolFeatures() throws {
        let (double, backend) = try device(.init(features: VhostUserDeviceDouble.featureVersion1), tag: "noproto")
        try backend.setOwner()
        XCTAssertEqual(try backend.getFeatures(), VhostUserDeviceDouble.featureVersion1)
        try backend.setFeatures(VhostUserDeviceDouble.featureVersion1)
        XCTAssertEqual(backend.sentRequests, [.setOwner, .getFeatures, .setFeatures])
        XCTAssertEqual(backend.protocolFeatures, [])
        XCTAssertNotEqual(backend.unsupportedFeatures & VhostUserConstants.virtioNetFeatureMQ, 0)
        XCTAssertTrue(double.waitForRequests(count: 3))
        XCTAssertEqual(double.ackedFeatures, VhostUserDeviceDouble.featureVersion1, "bit 30 not added")
        XCTAssertNil(double.ackedProtocolFeatures)
    }

    func testProtocolFeatureOfferIsMaskedAndMissingMQIsUnsupported() throws {
        let (double, backend) = try device(.init(protocolFeatures: [.replyAck, .config, .backendReq, .logShmfd]), tag: "mask")
        _ = try backend.getFeatures()
        XCTAssertEqual(backend.protocolFeatures, [.replyAck])
        XCTAssertTrue(double.waitUntil { double.ackedProtocolFeatures != nil })
        XCTAssertEqual(double.ackedProtocolFeatures, [.replyAck])
        XCTAssertEqual(backend.unsupportedFeatures, VhostUserConstants.virtioNetFeatureMQ)
        XCTAssertEqual(backend.backendFeatures, 1 << 30)
        XCTAssertEqual(backend.maxMemoryRegions, 8)
    }

    // MARK: REPLY_ACK and status

    func testSetMemTableCarriesNeedReplyAndANackIsAnError() throws {
        let (_, backend) = try device(.init(nackRequests: [.setMemTable]), tag: "nack")
        let memory = try SharedTestMemory(size: 4096)
        _ = try backend.getFeatures()
        XCTAssertThrowsVhostError(.nack(path: backend.path, request: "SET_MEM_TABLE", code: 1),
                                  try backend.setMemoryTable([memory.region]))
        // A NACK is an answer, not a broken stream: the connection stays usable.
        XCTAssertFalse(backend.isPeerClosed())
        try backend.setOwner()
    }

    func testWithoutReplyAckNoAckIsAwaited() throws {
        // The double would NACK, but without REPLY_ACK nothing is asked, so nothing fails.
        let (double, backend) = try device(.init(protocolFeatures: [.mq], nackRequests: [.setMemTable]), tag: "noack")
        let memory = try SharedTestMemory(size: 4096)
        _ = try backend.getFeatures()
        try backend.setMemoryTable([memory.region])
        XCTAssertTrue(double.waitUntil { double.memoryRegions.count == 1 })
    }

    func testStatusNeedsFeaturesOKAndTheStatusProtocolFeature() throws {
        let (double, backend) = try device(tag: "status")
        _ = try backend.getFeatures()
        // ACKNOWLEDGE | DRIVER: before FEATURES_OK DPDK does not send status.
        XCTAssertThrowsError(try backend.setStatus(0x03)) { error in
            guard case .notSupported? = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertFalse(backend.sentRequests.contains(.setStatus))
        try backend.setStatus(0x0b)
        XCTAssertEqual(double.status, 0x0b, "acked, so already applied")
        XCTAssertEqual(try backend.getStatus(), 0x0b)
        XCTAssertEqual(backend.sentRequests.suffix(2), [.setStatus, .getStatus])
    }

    func testStatusWithoutTheProtocolFeatureIsNotSupported() throws {
        let (_, backend) = try device(.init(protocolFeatures: [.mq, .replyAck]), tag: "nostatus")
        _ = try backend.getFeatures()
        XCTAssertThrowsError(try backend.setStatus(0x0b)) { error in
            guard case .notSupported? = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try backend.getStatus()) { error in
            guard case .notSupported? = error as? VhostError else { return XCTFail("\(error)") }
        }
    }

    func testConfigIsNotSupportedAsInDPDK() throws {
        let (_, backend) = try device(.init(protocolFeatures: [.mq, .replyAck, .status, .config]), tag: "nocfg")
        _ = try backend.getFeatures()
        XCTAssertThrowsError(try backend.getConfig(offset: 0, size: 6)) { error in
            guard case .notSupported? = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try backend.setConfig(offset: 0, bytes: [1]))
    }

    func testConfigWhenNegotiated() throws {
        let path = temporarySocketPath("cfg")
        let config: [UInt8] = [0x02, 0, 0, 0, 0, 0x01, 1, 0, 4, 0, 0, 0]
        let double = try VhostUserDeviceDouble(listeningAt: path,
                                               configuration: .init(protocolFeatures: [.replyAck, .config], configSpace: config))
        doubles.append(double)
        let backend = try VhostUserBackend(connectingTo: path, protocolFeatureMask: [.replyAck, .config])
        backends.append(backend)
        _ = try backend.getFeatures()
        XCTAssertEqual(try backend.getConfig(offset: 0, size: 6), Array(config[0..<6]))
        try backend.setConfig(offset: 0, bytes: [0x0a, 0x0b])
        XCTAssertEqual(Array(double.configSpace[0..<2]), [0x0a, 0x0b])
        // Out of range on the device: it answers size 0, which the front-end refuses.
        XCTAssertThrowsViolation("GET_CONFIG reply", try backend.getConfig(offset: 8, size: 8))
    }

    // MARK: Rings and memory

    func testRingFdsAndTheNoFdBit() throws {
        let (double, backend) = try device(tag: "nofd")
        let kick = try eventFD()
        try backend.setVringKick(index: 1, fd: kick)
        try backend.setVringCall(index: 1, fd: -1)
        try backend.setVringKick(index: 0, fd: -1)
        XCTAssertTrue(double.waitForRequests(count: 3))
        XCTAssertEqual(double.vring(1)?.hasKickFd, true)
        XCTAssertEqual(double.vring(1)?.hasCallFd, false)
        XCTAssertEqual(double.vring(0)?.hasKickFd, false)
        XCTAssertEqual(double.vring(0)?.started, true, "polling mode still starts the ring")
        XCTAssertEqual(double.errors, [])
    }

    func testNineRegionsAreRefusedBeforeSending() throws {
        let (_, backend) = try device(tag: "regions")
        let region = VhostMemoryRegion(guestPhysAddr: 0, memorySize: 4096, userAddr: 0, mmapOffset: 0, fd: 0)
        XCTAssertThrowsVhostError(.tooManyRegions(path: backend.path, count: 9, max: 8),
                                  try backend.setMemoryTable(Array(repeating: region, count: 9)))
        XCTAssertEqual(backend.sentRequests, [])
    }

    func testEightRegionsSendEightFds() throws {
        let (double, backend) = try device(tag: "eight")
        let memories = try (0..<8).map { _ in try SharedTestMemory(size: 4096) }
        _ = try backend.getFeatures()
        try backend.setMemoryTable(memories.map(\.region))
        XCTAssertEqual(double.memoryRegions.count, 8)
        XCTAssertEqual(double.errors, [])
        memories[7].base.storeBytes(of: 0x5a as UInt8, toByteOffset: 100, as: UInt8.self)
        XCTAssertEqual(double.readGuestMemory(at: memories[7].address + 100, length: 1), [0x5a])
    }

    // MARK: Hostile backends

    func testGetVringBaseWithWrongRequestCodeIsAViolationAndDropsTheConnection() throws {
        let (_, backend) = try device(.init(getVringBaseReplyRequest: .getFeatures), tag: "wrongcode")
        XCTAssertThrowsViolation("carries request GET_FEATURES", try backend.getVringBase(index: 0))
        XCTAssertTrue(backend.isPeerClosed())
        XCTAssertThrowsVhostError(.closed(path: backend.path), try backend.setOwner())
    }

    func testGetVringBaseForAnotherRingIsAViolation() throws {
        let (_, backend) = try device(.init(getVringBaseReplyIndex: 7), tag: "wrongring")
        XCTAssertThrowsViolation("ring 7", try backend.getVringBase(index: 1))
    }

    func testTruncatedReplyIsAViolation() throws {
        let (_, backend) = try device(.init(truncatedReplies: [.getFeatures]), tag: "trunc")
        XCTAssertThrowsViolation("GET_FEATURES reply", try backend.getFeatures())
    }

    func testTruncatedAckIsAViolation() throws {
        let (_, backend) = try device(.init(truncatedReplies: [.setMemTable]), tag: "truncack")
        let memory = try SharedTestMemory(size: 4096)
        _ = try backend.getFeatures()
        XCTAssertThrowsViolation("SET_MEM_TABLE reply", try backend.setMemoryTable([memory.region]))
    }

    func testReplyWithoutTheReplyFlagIsAViolation() throws {
        let (_, backend) = try device(.init(replyFlagsOverride: 0x1), tag: "flags")
        XCTAssertThrowsViolation("flags 0x1", try backend.getFeatures())
    }

    func testSilentBackendTimesOut() throws {
        let (_, backend) = try device(.init(unansweredRequests: [.getFeatures]), tag: "silent")
        backend.replyTimeoutMs = 50
        XCTAssertThrowsVhostError(.timeout(path: backend.path, what: "the reply to GET_FEATURES"),
                                  try backend.getFeatures())
        XCTAssertTrue(backend.isPeerClosed(), "a late reply would desynchronise the stream")
    }

    func testBackendClosingMidSessionIsClosed() throws {
        let (double, backend) = try device(.init(closeAfterMessages: 1), tag: "quit")
        try backend.setOwner()
        XCTAssertThrowsVhostError(.closed(path: backend.path), try backend.getFeatures())
        XCTAssertTrue(backend.isPeerClosed())
        XCTAssertEqual(double.receivedRequests.first, .setOwner)
    }

    func testPeerClosedIsNoticedWithoutTraffic() throws {
        let (double, backend) = try device(tag: "drop")
        try backend.setOwner()
        XCTAssertTrue(double.waitUntil { double.isConnected })
        XCTAssertFalse(backend.isPeerClosed())
        double.dropConnection()
        XCTAssertTrue(double.waitUntil { backend.isPeerClosed() })
    }

    func testConnectToMissingPathNamesThePath() {
        let path = "/tmp/ferry-vhost-missing-\(getpid()).sock"
        XCTAssertThrowsError(try VhostUserBackend(connectingTo: path)) { error in
            XCTAssertEqual(error as? VhostError, .backendMissing(path: path, errno: ENOENT))
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
    }

    // MARK: Server mode

    func testServerModeAcceptsAndReacceptsAfterTheBackendQuits() throws {
        let path = temporarySocketPath("server")
        let first = VhostUserDeviceDouble(connectingTo: path)
        doubles.append(first)
        let backend = try VhostUserBackend(listeningAt: path, acceptTimeoutMs: 5000)
        backends.append(backend)
        XCTAssertTrue(backend.isServer)
        try backend.setOwner()
        XCTAssertEqual(try backend.getFeatures() & VhostUserConstants.protocolFeaturesMask, 1 << 30)
        XCTAssertEqual(first.receivedRequests.prefix(2), [.setOwner, .getFeatures])

        first.stop()
        XCTAssertTrue(first.waitUntil { backend.isPeerClosed() })

        let second = VhostUserDeviceDouble(connectingTo: path)
        doubles.append(second)
        try backend.acceptAgain(timeoutMs: 5000)
        XCTAssertEqual(backend.protocolFeatures, [], "renegotiated from scratch")
        try backend.setOwner()
        XCTAssertTrue(second.waitForRequests(count: 1))
        XCTAssertEqual(second.receivedRequests, [.setOwner])
    }

    func testServerModeAcceptTimeoutNamesThePathAndCleansUp() {
        let path = temporarySocketPath("noone")
        XCTAssertThrowsVhostError(.timeout(path: path, what: "a vhost backend to connect"),
                                  try VhostUserBackend(listeningAt: path, acceptTimeoutMs: 10))
        XCTAssertNotEqual(access(path, F_OK), 0)
    }

    func testAcceptAgainInClientModeIsNotSupported() throws {
        let (_, backend) = try device(tag: "client")
        XCTAssertThrowsError(try backend.acceptAgain(timeoutMs: 0)) { error in
            guard case .notSupported? = error as? VhostError else { return XCTFail("\(error)") }
        }
    }
}

/// The driver's side of two split rings (RX = vring 0, TX = vring 1) written by hand into
/// shared memory, so the device double's loopback can be tested without the Virtio rings.
/// Layout per ring (virtio 1.2 §2.7): desc at +0, avail at +128, used at +256.
struct TestDriverRings {
    let memory: SharedTestMemory
    let queueSize: UInt32

    private func ringBase(_ ring: UInt32) -> UnsafeMutableRawPointer {
        memory.base + VhostUserBackendTests.ringOffset(ring)
    }

    private func writeDescriptor(ring: UInt32, index: Int, offset: Int, length: UInt32, flags: UInt16) {
        let d = ringBase(ring) + 16 * index
        d.storeBytes(of: memory.address + UInt64(offset), toByteOffset: 0, as: UInt64.self)
        d.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
        d.storeBytes(of: 0 as UInt16, toByteOffset: 14, as: UInt16.self)
    }

    private func publish(ring: UInt32, slot: Int, descriptor: Int) {
        let avail = ringBase(ring) + 128
        avail.storeBytes(of: UInt16(descriptor), toByteOffset: 4 + 2 * slot, as: UInt16.self)
        ferry_store_release_u16(avail + 2, UInt16(slot + 1))
    }

    func postRxBuffer(slot: Int, descriptor: Int, bufferOffset: Int, length: UInt32) {
        writeDescriptor(ring: 0, index: descriptor, offset: bufferOffset, length: length, flags: 2 /* WRITE */)
        publish(ring: 0, slot: slot, descriptor: descriptor)
    }

    func sendTx(slot: Int, descriptor: Int, bufferOffset: Int, header: [UInt8], frame: [UInt8]) {
        let bytes = header + frame
        bytes.withUnsafeBytes { (memory.base + bufferOffset).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        writeDescriptor(ring: 1, index: descriptor, offset: bufferOffset, length: UInt32(bytes.count), flags: 0)
        publish(ring: 1, slot: slot, descriptor: descriptor)
    }

    func usedIndex(ring: UInt32) -> UInt16 {
        ferry_load_acquire_u16(ringBase(ring) + 256 + 2)
    }

    func usedEntry(ring: UInt32, slot: Int) -> (id: UInt32, length: UInt32) {
        let e = ringBase(ring) + 256 + 4 + 8 * slot
        return (e.load(as: UInt32.self), e.load(fromByteOffset: 4, as: UInt32.self))
    }

    func bytes(at offset: Int, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: memory.base + offset, count: count))
    }
}
