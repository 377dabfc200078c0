import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// The seed's `virtio_user_dev_init_mac` over vhost-user: a configured MAC wins; otherwise a
/// random, locally administered unicast one. Ferry never agrees the CONFIG protocol feature
/// (nor does DPDK's front-end), so the device's config space is neither read nor written.
final class MACAddressTests: VirtioUserTestCase {
    private let configured: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]

    func testConfiguredMACIsUsedAndClaimed() throws {
        let double = try startDouble()
        let device = try openDevice(double) { $0.mac = self.configured }
        XCTAssertEqual(device.mac, configured)
        XCTAssertTrue(device.macSpecified)
        XCTAssertTrue(device.frontendFeatures.contains(.mac), "a configured MAC is claimed by virtio-user")
        try device.negotiate()
        XCTAssertTrue(device.features.contains(.mac))
    }

    /// Even when the device has MAC in its offer, a config space and CONFIG in its protocol
    /// features: the configured MAC is used and no SET_CONFIG/GET_CONFIG goes out.
    func testConfiguredMACIsNotWrittenToADeviceWithoutAgreedConfig() throws {
        var config = VhostUserDeviceDouble.Configuration(
            features: Offer.default | Offer.bits([.mac]),
            protocolFeatures: [.mq, .replyAck, .status, .config])
        let deviceMAC: [UInt8] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]
        config.configSpace = deviceMAC + [UInt8](repeating: 0, count: 6)
        let double = try startDouble(config)
        let device = try openDevice(double) { $0.mac = self.configured }
        try device.negotiate()  // ends with an answered GET_STATUS: all init traffic handled

        XCTAssertEqual(device.mac, configured)
        XCTAssertFalse(double.receivedRequests.contains(.setConfig))
        XCTAssertFalse(double.receivedRequests.contains(.getConfig))
        XCTAssertEqual(Array(double.configSpace.prefix(6)), deviceMAC, "config space untouched")
    }

    func testWithoutConfiguredMACARandomLocallyAdministeredUnicastMACIsUsed() throws {
        let double = try startDouble()
        let device = try openDevice(double)
        let mac = device.mac
        XCTAssertEqual(mac.count, 6)
        XCTAssertEqual(mac[0] & 0x01, 0, "must be unicast: \(VirtioUserDevice.format(mac: mac))")
        XCTAssertEqual(mac[0] & 0x02, 0x02, "must be locally administered: \(VirtioUserDevice.format(mac: mac))")
        XCTAssertFalse(device.macSpecified)
        XCTAssertFalse(device.frontendFeatures.contains(.mac))
        XCTAssertTrue(device.unsupportedFeatures.contains(.mac))
        try device.negotiate()
        XCTAssertFalse(device.features.contains(.mac))
    }

    /// Two ports without a MAC do not share one (46 random bits: a clash is not a real risk).
    func testRandomMACsDifferBetweenDevices() throws {
        let first = try openDevice(try startDouble(tag: "a"))
        let second = try openDevice(try startDouble(tag: "b"))
        XCTAssertNotEqual(first.mac, second.mac)
    }

    /// A device that offers MAC cannot be asked for it over vhost-user without CONFIG: the
    /// random MAC is used, not the device's config space.
    func testDeviceMACIsNotReadWithoutAgreedConfig() throws {
        var config = VhostUserDeviceDouble.Configuration(features: Offer.default | Offer.bits([.mac]))
        let deviceMAC: [UInt8] = [0x00, 0x16, 0x3e, 0x01, 0x02, 0x03]
        config.configSpace = deviceMAC + [UInt8](repeating: 0, count: 6)
        let double = try startDouble(config)
        let device = try openDevice(double)
        XCTAssertNotEqual(device.mac, deviceMAC)
        XCTAssertEqual(device.mac[0] & 0x03, 0x02)
        XCTAssertFalse(device.macSpecified)
        XCTAssertFalse(double.receivedRequests.contains(.getConfig))
    }

    func testFormatPrintsLowercaseColonSeparatedPairs() {
        XCTAssertEqual(VirtioUserDevice.format(mac: [0x02, 0x0a, 0xff, 0x00, 0x10, 0x9b]), "02:0a:ff:00:10:9b")
    }
}
