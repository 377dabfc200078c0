import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// What SET_FEATURES carries: the seed's masks (`virtio_user_dev_init`,
/// `virtio_user_dev_set_features`) applied to the device's offer, plus Ferry's own limits
/// (split rings only, no offloads yet).
final class FeatureMaskTests: VirtioUserTestCase {
    private let bit30 = VhostUserConstants.protocolFeaturesMask

    /// Negotiates against a double offering `offer` and returns (acked word, device).
    private func negotiate(offer: UInt64, protocolFeatures: VhostUserProtocolFeatures = [.mq, .replyAck, .status],
                           _ configure: (inout VirtioUserOptions) -> Void = { _ in })
        throws -> (acked: UInt64, device: VirtioUserDevice) {
        let double = try startDouble(.init(features: offer, protocolFeatures: protocolFeatures))
        let device = try openDevice(double, configure)
        try device.negotiate()
        // SET_FEATURES has no reply: wait until the double has handled it.
        waitFor(double, "SET_FEATURES to arrive") { double.ackedFeatures != nil }
        return (double.ackedFeatures ?? 0, device)
    }

    func testDefaultOfferIsAckedAsIsWithBit30() throws {
        let (acked, device) = try negotiate(offer: Offer.default)
        XCTAssertEqual(VirtioFeatures(rawValue: acked),
                       [.version1, .mrgRxbuf, .ringIndirectDesc, VirtioFeatures(rawValue: bit30)])
        XCTAssertEqual(device.features, [.version1, .mrgRxbuf, .ringIndirectDesc, .status],
                       "STATUS is claimed by virtio-user for vhost-user, bit 30 is the transport's")
    }

    func testBit30IsKeptWhenOfferedAndAbsentOtherwise() throws {
        let with = try negotiate(offer: Offer.bits([.version1]) | bit30)
        XCTAssertNotEqual(with.acked & bit30, 0, "bit 30 offered must be acked")
        let without = try negotiate(offer: Offer.bits([.version1]))
        XCTAssertEqual(without.acked & bit30, 0, "bit 30 not offered must not be acked")
        XCTAssertEqual(without.acked, Offer.bits([.version1]))
    }

    /// MAC (configured), STATUS (always claimed) and CTRL_VQ (cq=1) are in the negotiated set
    /// but never on the wire: the device does not own them, virtio-user emulates them.
    func testMacStatusAndCtrlVqAreNegotiatedButStrippedFromSetFeatures() throws {
        let offer = Offer.bits([.version1, .mrgRxbuf, .mac, .status, .ctrlVq, .ctrlRx]) | bit30
        let (acked, device) = try negotiate(offer: offer) {
            $0.mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
            $0.cq = true
        }
        XCTAssertTrue(device.features.isSuperset(of: [.mac, .status, .ctrlVq]), "\(device.features)")
        let wire = VirtioFeatures(rawValue: acked)
        XCTAssertFalse(wire.contains(.mac), "MAC must be stripped: \(wire)")
        XCTAssertFalse(wire.contains(.status), "STATUS must be stripped: \(wire)")
        XCTAssertFalse(wire.contains(.ctrlVq), "CTRL_VQ must be stripped (no hardware control queue): \(wire)")
        XCTAssertEqual(wire, [.version1, .mrgRxbuf, .ctrlRx, VirtioFeatures(rawValue: bit30)])
    }

    /// Without cq, CTRL_VQ and everything that depends on it is masked off the device offer.
    func testWithoutControlQueueTheDependentFeaturesAreMasked() throws {
        let offer = Offer.bits([.version1, .ctrlVq, .ctrlRx, .ctrlVlan, .guestAnnounce, .mq, .ctrlMacAddr]) | bit30
        let (acked, device) = try negotiate(offer: offer)
        XCTAssertEqual(acked, Offer.bits([.version1]) | bit30)
        XCTAssertTrue(device.features.isDisjoint(with: [.ctrlVq, .ctrlRx, .ctrlVlan, .guestAnnounce, .mq, .ctrlMacAddr]))
        XCTAssertFalse(device.controlQueue)
    }

    func testMrgRxbufAndInOrderAreAckedWhenOfferedAndAllowed() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .mrgRxbuf, .inOrder]) | bit30)
        XCTAssertEqual(acked, Offer.bits([.version1, .mrgRxbuf, .inOrder]) | bit30)
        XCTAssertTrue(device.features.isSuperset(of: [.mrgRxbuf, .inOrder]))
    }

    func testMrgRxbufOptionOffMasksItEvenWhenOffered() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .mrgRxbuf, .inOrder]) | bit30) {
            $0.mrgRxbuf = false
        }
        XCTAssertEqual(acked, Offer.bits([.version1, .inOrder]) | bit30)
        XCTAssertFalse(device.features.contains(.mrgRxbuf))
    }

    /// INDIRECT_DESC is accepted when offered (the seed's VIRTIO_USER_SUPPORTED_FEATURES has it),
    /// and its TX rings then have tables; RX rings never do.
    func testIndirectDescIsAckedWhenOfferedAndTxRingsGetTables() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .ringIndirectDesc]) | bit30)
        XCTAssertEqual(acked, Offer.bits([.version1, .ringIndirectDesc]) | bit30)
        XCTAssertTrue(device.features.contains(.ringIndirectDesc))
        XCTAssertEqual(device.rings[1].indirectCapacity, VirtioUserDevice.indirectMaxSegments, "TX ring")
        XCTAssertEqual(device.rings[0].indirectCapacity, 0, "RX ring")
    }

    /// `indirect=0` refuses it, as in_order=0 refuses IN_ORDER: masked off the offer, no tables.
    func testIndirectOptionOffMasksItEvenWhenOffered() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .mrgRxbuf, .ringIndirectDesc]) | bit30) {
            $0.indirect = false
        }
        XCTAssertEqual(acked, Offer.bits([.version1, .mrgRxbuf]) | bit30)
        XCTAssertFalse(device.features.contains(.ringIndirectDesc))
        XCTAssertFalse(device.deviceFeatures.contains(.ringIndirectDesc))
        XCTAssertEqual(device.rings[1].indirectCapacity, 0)
    }

    /// Not offered: not acked, and the TX rings have no tables (chains stay direct).
    func testIndirectNotOfferedLeavesRingsWithoutTables() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .mrgRxbuf]) | bit30)
        XCTAssertEqual(acked & VirtioFeatures.ringIndirectDesc.rawValue, 0)
        XCTAssertEqual(device.rings[1].indirectCapacity, 0)
    }

    func testInOrderOptionOffMasksItEvenWhenOffered() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .mrgRxbuf, .inOrder]) | bit30) {
            $0.inOrder = false
        }
        XCTAssertEqual(acked, Offer.bits([.version1, .mrgRxbuf]) | bit30)
        XCTAssertFalse(device.features.contains(.inOrder))
    }

    /// A device offering every bit: only what the seed supports AND Ferry drives survives.
    /// GUEST_UFO and EVENT_IDX are outside the seed's set; CSUM and TSO are in it but Ferry
    /// does not drive them yet; RING_PACKED is not offered by default.
    func testFeaturesOutsideTheSupportedSetAreNeverAcked() throws {
        let (acked, device) = try negotiate(offer: UInt64.max)
        let wire = VirtioFeatures(rawValue: acked)
        for (feature, name) in [(VirtioFeatures.guestUfo, "GUEST_UFO"), (.ringEventIdx, "EVENT_IDX"),
                                (.ringPacked, "RING_PACKED"),
                                (.csum, "CSUM"), (.guestCsum, "GUEST_CSUM"), (.hostTso4, "HOST_TSO4"),
                                (.guestTso4, "GUEST_TSO4"), (.accessPlatform, "ACCESS_PLATFORM"),
                                (.notifyOnEmpty, "NOTIFY_ON_EMPTY"), (.anyLayout, "ANY_LAYOUT"),
                                (.mtu, "MTU")] {
            XCTAssertFalse(wire.contains(feature), "\(name) must never be acked: \(wire)")
        }
        // Default options: no MAC, no cq, so exactly these remain.
        XCTAssertEqual(wire, [.version1, .mrgRxbuf, .inOrder, .ringIndirectDesc, VirtioFeatures(rawValue: bit30)])
        XCTAssertTrue(device.features.isSubset(of: VirtioUserDevice.driverFeatures))
    }

    /// GUEST_UFO and EVENT_IDX alone on top of a normal offer.
    func testGuestUfoAndEventIdxOfferedAreNotAcked() throws {
        let (acked, device) = try negotiate(offer: Offer.bits([.version1, .guestUfo, .ringEventIdx]) | bit30)
        XCTAssertEqual(acked, Offer.bits([.version1]) | bit30)
        XCTAssertFalse(device.features.contains(.ringEventIdx), "the driver rings are built without EVENT_IDX")
    }

    /// RING_PACKED is negotiated only when packed_vq=1 asks for it (the seed masks it off
    /// otherwise), and then the rings are packed.
    func testRingPackedIsAckedOnlyWithPackedVqOption() throws {
        let offer = Offer.bits([.version1, .ringPacked]) | bit30
        let packedOption = try negotiate(offer: offer) { $0.packedVq = true }
        XCTAssertEqual(packedOption.acked & Offer.bits([.ringPacked]), Offer.bits([.ringPacked]))
        XCTAssertTrue(packedOption.device.usesPackedRings)
        XCTAssertTrue(packedOption.device.rings.allSatisfy(\.isPacked))
        let defaultOption = try negotiate(offer: offer)
        XCTAssertEqual(defaultOption.acked & Offer.bits([.ringPacked]), 0)
        XCTAssertFalse(defaultOption.device.usesPackedRings)
    }

    /// The device's offer is kept in `deviceFeatures` after the masks, as the seed's
    /// `device_features`, so the masks are visible to the caller too.
    func testDeviceFeaturesReflectTheUnsupportedMask() throws {
        let double = try startDouble(.init(features: Offer.bits([.version1, .guestUfo, .mrgRxbuf]) | bit30))
        let device = try openDevice(double) { $0.mrgRxbuf = false }
        XCTAssertFalse(device.deviceFeatures.contains(.guestUfo))
        XCTAssertFalse(device.deviceFeatures.contains(.mrgRxbuf))
        XCTAssertTrue(device.deviceFeatures.contains(.version1))
        XCTAssertTrue(device.unsupportedFeatures.isSuperset(of: [.guestUfo, .mrgRxbuf, .ringPacked, .mac]))
    }
}
