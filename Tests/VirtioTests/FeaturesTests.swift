import Virtio
import XCTest

final class FeaturesTests: XCTestCase {
    func testBitValues() {
        XCTAssertEqual(VirtioFeatures.csum.rawValue, 1 << 0)
        XCTAssertEqual(VirtioFeatures.mac.rawValue, 1 << 5)
        XCTAssertEqual(VirtioFeatures.mrgRxbuf.rawValue, 1 << 15)
        XCTAssertEqual(VirtioFeatures.ctrlMacAddr.rawValue, 1 << 23)
        XCTAssertEqual(VirtioFeatures.ringIndirectDesc.rawValue, 1 << 28)
        XCTAssertEqual(VirtioFeatures.ringEventIdx.rawValue, 1 << 29)
        XCTAssertEqual(VirtioFeatures.version1.rawValue, 1 << 32)
        XCTAssertEqual(VirtioFeatures.inOrder.rawValue, 1 << 35)
    }

    func testVirtioUserSupportedMatchesSeed() {
        // VIRTIO_USER_SUPPORTED_FEATURES, virtio_user_dev.c: MAC STATUS MQ CTRL_MAC_ADDR CTRL_VQ
        // CTRL_RX CTRL_VLAN CSUM HOST_TSO4 HOST_TSO6 MRG_RXBUF INDIRECT_DESC GUEST_CSUM
        // GUEST_TSO4 GUEST_TSO6 IN_ORDER VERSION_1 RING_PACKED
        let bits: [UInt64] = [5, 16, 22, 23, 17, 18, 19, 0, 11, 12, 15, 28, 1, 7, 8, 35, 32, 34]
        let expected = bits.reduce(UInt64(0)) { $0 | 1 << $1 }
        XCTAssertEqual(VirtioFeatures.virtioUserSupported.rawValue, expected)
        XCTAssertFalse(VirtioFeatures.virtioUserSupported.contains(.ringEventIdx))
    }

    func testDescription() {
        let f: VirtioFeatures = [.version1, .mrgRxbuf, VirtioFeatures(rawValue: 1 << 30)]
        XCTAssertEqual(f.description, "MRG_RXBUF|VERSION_1|0x40000000")
        XCTAssertEqual(VirtioFeatures.ringIndirectDesc.description, "INDIRECT_DESC")
        XCTAssertEqual(VirtioFeatures([.ringEventIdx, .inOrder]).description, "EVENT_IDX|IN_ORDER")
        XCTAssertEqual(VirtioFeatures(rawValue: (1 << 4) | (1 << 63)).description, "0x8000000000000010")
        XCTAssertEqual(VirtioFeatures().description, "0x0")
    }

    func testDeviceStatus() {
        let s: DeviceStatus = [.acknowledge, .driver, .featuresOK]
        XCTAssertEqual(s.rawValue, 11)
        XCTAssertEqual(s.description, "ACKNOWLEDGE|DRIVER|FEATURES_OK")
        XCTAssertEqual(DeviceStatus(rawValue: 0x4 | 0x40 | 0x10).description, "DRIVER_OK|DEVICE_NEEDS_RESET|0x10")
        XCTAssertEqual(DeviceStatus().description, "RESET")
        XCTAssertEqual(DeviceStatus.failed.rawValue, 128)
    }
}
