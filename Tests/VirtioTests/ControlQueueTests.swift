import Virtio
import XCTest

final class ControlQueueTests: XCTestCase {
    func testMqPairsSet() {
        let cmd = VirtioNetControlCommand.mqPairsSet(0x0203)
        XCTAssertEqual(cmd.class, 4)
        XCTAssertEqual(cmd.command, 0)
        XCTAssertEqual(cmd.encodedHeader, [4, 0])
        XCTAssertEqual(cmd.encoded, [4, 0, 0x03, 0x02])
        XCTAssertEqual(cmd.mqPairs, 0x0203)
    }

    func testMqPairsBounds() {
        XCTAssertNil(VirtioNetControlCommand.mqPairsSet(0).mqPairs)
        XCTAssertEqual(VirtioNetControlCommand.mqPairsSet(1).mqPairs, 1)
        XCTAssertEqual(VirtioNetControlCommand.mqPairsSet(0x8000).mqPairs, 0x8000)
        XCTAssertNil(VirtioNetControlCommand.mqPairsSet(0x8001).mqPairs)
        XCTAssertNil(VirtioNetControlCommand(class: 4, command: 0, data: [1]).mqPairs, "short data")
        XCTAssertNil(VirtioNetControlCommand(class: 4, command: 1, data: [1, 0]).mqPairs, "other command")
    }

    func testMacAddrSet() {
        let mac: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
        let cmd = VirtioNetControlCommand.macAddrSet(mac)
        XCTAssertEqual(cmd.encoded, [1, 1] + mac)
        XCTAssertEqual(cmd.macAddress, mac)
        XCTAssertNil(VirtioNetControlCommand.macAddrSet([1, 2, 3]).macAddress)
    }

    func testMacTableSet() {
        let cmd = VirtioNetControlCommand.macTableSet(unicast: [[1, 2, 3, 4, 5, 6]], multicast: [])
        XCTAssertEqual(cmd.encoded, [1, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0])
    }

    func testRxVlanAnnounce() {
        XCTAssertEqual(VirtioNetControlCommand.rxMode(VirtioNetControl.Rx.promisc, on: true).encoded, [0, 0, 1])
        XCTAssertEqual(VirtioNetControlCommand.rxMode(VirtioNetControl.Rx.noBroadcast, on: false).encoded, [0, 5, 0])
        XCTAssertEqual(VirtioNetControlCommand.rxMode(VirtioNetControl.Rx.allMulti, on: true).rxModeOn, true)
        XCTAssertEqual(VirtioNetControlCommand.vlanAdd(0x123).encoded, [2, 0, 0x23, 0x01])
        XCTAssertEqual(VirtioNetControlCommand.vlanDel(7).encoded, [2, 1, 7, 0])
        XCTAssertEqual(VirtioNetControlCommand.vlanAdd(100).vlanID, 100)
        XCTAssertNil(VirtioNetControlCommand.vlanAdd(4096).vlanID)
        XCTAssertEqual(VirtioNetControlCommand.announceAck.encoded, [3, 0])
        XCTAssertEqual(VirtioNetControl.ackOK, 0)
        XCTAssertEqual(VirtioNetControl.ackErr, 1)
    }

    func testDecoding() {
        XCTAssertNil(VirtioNetControlCommand(decoding: [4]))
        XCTAssertEqual(VirtioNetControlCommand(decoding: [4, 0, 2, 0]), .mqPairsSet(2))
        XCTAssertEqual(VirtioNetControlCommand(decoding: [3, 0]), .announceAck)
    }
}
