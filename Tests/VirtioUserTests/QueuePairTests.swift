import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// Multi-queue: max queue pairs, vrings programmed, pair 0 enabled at start, and the seed's
/// `virtio_user_handle_mq` for the rest.
final class QueuePairTests: VirtioUserTestCase {
    private func multiQueueDouble(tag: String = "mq") throws -> VhostUserDeviceDouble {
        try startDouble(.init(features: Offer.default | Offer.bits([.mq]), protocolFeatures: [.mq, .replyAck, .status],
                              queueNum: 4), tag: tag)
    }

    private func enabled(_ double: VhostUserDeviceDouble, _ vrings: Range<Int>) -> [Bool] {
        vrings.map { double.vring(UInt32($0))?.enabled ?? false }
    }

    func testTwoQueuePairsProgramFourVringsAndEnableOnlyPairZeroAtStart() throws {
        let double = try multiQueueDouble()
        let device = try openDevice(double) { $0.queues = 2 }
        XCTAssertEqual(device.maxQueuePairs, 2)
        XCTAssertEqual(device.vringCount, 4)
        XCTAssertTrue(device.controlQueue, "more than one pair forces the (emulated) control queue")
        XCTAssertEqual(device.kickFDs.count, 4)
        XCTAssertEqual(device.callFDs.count, 4)

        try device.negotiate()
        XCTAssertTrue(device.features.isSuperset(of: [.mq, .ctrlVq]))
        let acked = VirtioFeatures(rawValue: double.ackedFeatures ?? 0)
        XCTAssertTrue(acked.contains(.mq), "MQ must reach the device: \(acked)")
        XCTAssertFalse(acked.contains(.ctrlVq), "the control queue is emulated, never the device's: \(acked)")
        XCTAssertEqual(device.rings.count, 4)

        try device.start()  // ends with an acked SET_STATUS
        XCTAssertRequests(double.receivedRequests,
                          SeedSequence.initialize(protocolFeatures: true)
                            + SeedSequence.negotiate(vrings: 4, status: true)
                            + SeedSequence.start(vrings: 4, status: true))
        for i in 0..<4 {
            let vring = double.vring(UInt32(i))
            XCTAssertNotNil(vring?.addr, "vring \(i) has no address")
            XCTAssertEqual(vring?.num, 256, "vring \(i)")
            XCTAssertEqual(vring?.started, true, "vring \(i) was not kicked")
        }
        XCTAssertEqual(enabled(double, 0..<4), [true, true, false, false])
        XCTAssertEqual(device.queuePairs, 1)
    }

    func testHandleMQEnablesAndDisablesPairs() throws {
        let double = try multiQueueDouble()
        let device = try openDevice(double) { $0.queues = 2 }
        try device.negotiate()
        try device.start()

        XCTAssertEqual(device.handleMQ(pairs: 2), 0)
        XCTAssertEqual(device.queuePairs, 2)
        waitFor(double, "pair 1 enabled") { self.enabled(double, 0..<4) == [true, true, true, true] }

        XCTAssertEqual(device.handleMQ(pairs: 1), 0)
        XCTAssertEqual(device.queuePairs, 1)
        waitFor(double, "pair 1 disabled again") { self.enabled(double, 0..<4) == [true, true, false, false] }
    }

    /// More pairs than the device has (or none) is refused with the control-queue ERR and
    /// sends nothing.
    func testHandleMQBeyondMaxReturnsErrorAndChangesNothing() throws {
        let double = try multiQueueDouble()
        let device = try openDevice(double) { $0.queues = 2 }
        try device.negotiate()
        try device.start()
        XCTAssertEqual(device.handleMQ(pairs: 2), 0)
        waitFor(double, "pair 1 enabled") { self.enabled(double, 0..<4) == [true, true, true, true] }
        let before = double.receivedRequests

        XCTAssertEqual(device.handleMQ(pairs: 3), 1)
        XCTAssertEqual(device.handleMQ(pairs: 0), 1)
        XCTAssertEqual(device.queuePairs, 2)
        // A request with a reply as a barrier: anything handleMQ sent would arrive before it.
        _ = try device.readStatus()
        XCTAssertRequests(double.receivedRequests, before + [.getStatus])
        XCTAssertEqual(enabled(double, 0..<4), [true, true, true, true])
    }

    /// stop disables every pair, enabled or not, then reads back all four bases.
    func testStopWithTwoPairsDisablesEveryPairThenReadsEveryBase() throws {
        let double = try multiQueueDouble()
        let device = try openDevice(double) { $0.queues = 2 }
        try device.negotiate()
        try device.start()
        let before = double.receivedRequests.count
        XCTAssertEqual(try device.stop(), [0, 0, 0, 0])
        XCTAssertRequests(Array(double.receivedRequests.dropFirst(before)), SeedSequence.stop(pairs: 2))
        XCTAssertEqual(enabled(double, 0..<4), [false, false, false, false])
        XCTAssertFalse(device.started)
    }

    func testTwoQueuePairsAgainstADeviceWithoutMQThrowsNamingThePath() throws {
        let double = try startDouble()  // no MQ in the offer
        XCTAssertThrowsError(try openDevice(double) { $0.queues = 2 }) { error in
            guard case let .tooManyQueuePairs(path, requested, supported)? = error as? VirtioUserError else {
                return XCTFail("expected tooManyQueuePairs, got \(error)")
            }
            XCTAssertEqual(path, double.path)
            XCTAssertEqual(requested, 2)
            XCTAssertEqual(supported, 1)
            XCTAssertTrue("\(error)".contains(double.path), "\(error)")
        }
        // The failed init closes its connection.
        waitFor(double, "the connection to close") { !double.isConnected }
        XCTAssertFalse(double.receivedRequests.contains(.setVringCall))
    }

    /// MQ in the offer but not in the protocol features: vhost-user cannot carry MQ then, so
    /// it is never acked.
    func testMQWithoutTheMQProtocolFeatureIsNotAcked() throws {
        let double = try startDouble(.init(features: Offer.default | Offer.bits([.mq]),
                                           protocolFeatures: [.replyAck, .status]))
        let device = try openDevice(double)
        try device.negotiate()
        XCTAssertFalse(device.features.contains(.mq))
        XCTAssertEqual((double.ackedFeatures ?? 0) & Offer.bits([.mq]), 0)
        XCTAssertTrue(device.unsupportedFeatures.contains(.mq))
    }

    func testOneQueuePairAgainstAnMQDeviceUsesOnePair() throws {
        let double = try multiQueueDouble()
        let device = try openDevice(double)
        XCTAssertEqual(device.maxQueuePairs, 1)
        XCTAssertFalse(device.controlQueue)
        try device.negotiate()
        XCTAssertFalse(device.features.contains(.mq), "MQ needs the control queue, which is off")
        XCTAssertEqual(device.rings.count, 2)
    }
}
