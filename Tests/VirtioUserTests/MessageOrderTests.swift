import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// The exact vhost-user request sequence of a whole session, compared with the seed's
/// (`virtio_user_dev.c`: init, set_features, start_device, stop_device).
final class MessageOrderTests: VirtioUserTestCase {
    /// REPLY_ACK and STATUS agreed: every phase, literally, in order.
    func testFullSessionWithStatusAndReplyAckFollowsTheSeedOrder() throws {
        let double = try startDouble(.init(protocolFeatures: [.mq, .replyAck, .status]))
        let device = try openDevice(double)

        let afterInit: [VhostUserRequest] = [.setOwner, .getFeatures, .getProtocolFeatures, .setProtocolFeatures]
        waitForRequests(double, count: afterInit.count)
        XCTAssertRequests(double.receivedRequests, afterInit, "init")

        try device.negotiate()
        // negotiate ends with GET_STATUS, answered: everything before it has been handled.
        let afterNegotiate = afterInit + [
            .setVringCall, .setVringCall,  // every vring, before SET_FEATURES
            .setFeatures,
            .setStatus,                    // ACK|DRIVER|FEATURES_OK, the first status sent
            .getStatus,                    // FEATURES_OK must have stuck
        ]
        XCTAssertRequests(double.receivedRequests, afterNegotiate, "negotiate")
        XCTAssertEqual(double.status, DeviceStatus([.acknowledge, .driver, .featuresOK]).rawValue)

        try device.start()
        let afterStart = afterNegotiate + [
            .setMemTable,
            .setVringNum, .setVringBase, .setVringAddr, .setVringKick,  // RX 0
            .setVringNum, .setVringBase, .setVringAddr, .setVringKick,  // TX 1
            .setVringEnable, .setVringEnable,                           // pair 0 only
            .setStatus,                                                 // DRIVER_OK
            .getStatus,  // Ferry's read-back after DRIVER_OK (not in the seed; see start())
        ]
        XCTAssertRequests(double.receivedRequests, afterStart, "start")  // GET_STATUS was answered
        XCTAssertEqual(double.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)

        let bases = try device.stop()
        let afterStop = afterStart + [.setVringEnable, .setVringEnable, .getVringBase, .getVringBase]
        XCTAssertRequests(double.receivedRequests, afterStop, "stop")
        XCTAssertEqual(bases, [0, 0], "nothing was posted, so each vring's next avail index is 0")

        device.close()
        // close sends nothing (no RESET_OWNER): the double only sees the connection end.
        waitFor(double, "the double to see the connection closed") { !double.isConnected }
        XCTAssertRequests(double.receivedRequests, afterStop, "close")
        XCTAssertEqual(double.errors, [])
    }

    /// The same session built from the phase helpers, to keep `SeedSequence` honest for the
    /// multi-queue tests that use it.
    func testSeedSequenceHelperMatchesTheLiteralSession() throws {
        let double = try startDouble()
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        try device.stop()
        XCTAssertRequests(double.receivedRequests,
                          SeedSequence.initialize(protocolFeatures: true)
                            + SeedSequence.negotiate(vrings: 2, status: true)
                            + SeedSequence.start(vrings: 2, status: true)
                            + SeedSequence.stop(pairs: 1))
    }

    /// A device without bit 30: no GET/SET_PROTOCOL_FEATURES, and so no REPLY_ACK and no
    /// SET/GET_STATUS anywhere.
    func testSessionWithoutProtocolFeaturesSendsNoProtocolOrStatusMessages() throws {
        let features = VhostUserDeviceDouble.featureVersion1 | VhostUserDeviceDouble.featureMrgRxbuf
        let double = try startDouble(.init(features: features))
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        try device.stop()  // ends with GET_VRING_BASE, answered

        let expected: [VhostUserRequest] = [
            .setOwner, .getFeatures,
            .setVringCall, .setVringCall, .setFeatures,
            .setMemTable,
            .setVringNum, .setVringBase, .setVringAddr, .setVringKick,
            .setVringNum, .setVringBase, .setVringAddr, .setVringKick,
            .setVringEnable, .setVringEnable,
            .setVringEnable, .setVringEnable, .getVringBase, .getVringBase,
        ]
        XCTAssertRequests(double.receivedRequests, expected)
        XCTAssertNil(double.ackedProtocolFeatures, "SET_PROTOCOL_FEATURES must not be sent")
        XCTAssertEqual(double.status, 0, "SET_STATUS must not be sent")
        XCTAssertEqual(double.errors, [])
    }

    /// Bit 30 offered but no protocol feature Ferry wants: the handshake happens (with an
    /// empty set), REPLY_ACK and STATUS do not.
    func testSessionWithEmptyProtocolFeatureSetSendsNoStatusMessages() throws {
        let double = try startDouble(.init(protocolFeatures: []))
        let device = try openDevice(double)
        try device.negotiate()
        try device.start()
        try device.stop()

        XCTAssertRequests(double.receivedRequests,
                          SeedSequence.initialize(protocolFeatures: true)
                            + SeedSequence.negotiate(vrings: 2, status: false)
                            + SeedSequence.start(vrings: 2, status: false)
                            + SeedSequence.stop(pairs: 1))
        XCTAssertEqual(double.ackedProtocolFeatures, [])
        XCTAssertEqual(double.status, 0)
    }

    /// Ferry asks only for what DPDK's front-end asks for: the device's wider offer is masked
    /// to MQ | REPLY_ACK | STATUS.
    func testProtocolFeaturesAreMaskedToTheDpdkFrontendSet() throws {
        let double = try startDouble(.init(protocolFeatures: [.mq, .replyAck, .status, .config, .backendReq,
                                                              .inflightShmfd, .configureMemSlots]))
        _ = try openDevice(double)
        waitForRequests(double, count: 4)
        XCTAssertEqual(double.ackedProtocolFeatures, [.mq, .replyAck, .status])
    }

    /// Each vring got its own index in NUM, BASE, ADDR, KICK and CALL, with real eventfds.
    func testEveryVringIsProgrammedWithItsOwnIndexAndDescriptors() throws {
        let double = try startDouble()
        let device = try openDevice(double) { $0.queueSize = 128 }
        try device.negotiate()
        try device.start()
        for i in 0..<device.vringCount {
            guard let vring = double.vring(UInt32(i)) else { return XCTFail("vring \(i) never programmed") }
            XCTAssertEqual(vring.num, 128, "vring \(i)")
            XCTAssertEqual(vring.base, 0, "vring \(i)")
            XCTAssertEqual(vring.addr?.index, UInt32(i), "vring \(i)")
            XCTAssertTrue(vring.hasKickFd, "vring \(i): SET_VRING_KICK must carry an eventfd")
            XCTAssertTrue(vring.hasCallFd, "vring \(i): SET_VRING_CALL must carry an eventfd")
            XCTAssertTrue(vring.started, "vring \(i)")
            XCTAssertTrue(vring.enabled, "vring \(i)")
        }
        XCTAssertNil(double.vring(UInt32(device.vringCount)), "no vring beyond 2 × max queue pairs")
        XCTAssertEqual(Set(device.kickFDs.map(\.fd) + device.callFDs.map(\.fd)).count, 2 * device.vringCount,
                       "every notifier is its own eventfd")
    }
}
