import XCTest
import Vhost

final class VhostUserMessageTests: XCTestCase {
    private func roundTrip(_ m: VhostUserMessage, file: StaticString = #filePath, line: UInt = #line) {
        let bytes = m.encode()
        XCTAssertEqual(bytes.count, 12 + m.encodedPayload.count, file: file, line: line)
        XCTAssertEqual(try VhostUserMessage.decode(bytes), m, "\(m.request)", file: file, line: line)
    }

    private let addr = VhostVringAddr(index: 1, flags: 0, descUserAddr: 0x7f00_0000_1000,
                                      usedUserAddr: 0x7f00_0000_3000, availUserAddr: 0x7f00_0000_2000,
                                      logGuestAddr: 0)

    func testEveryMessageFerrySendsRoundTrips() {
        let region = VhostMemoryRegion(guestPhysAddr: 0x7f12_3456_0000, memorySize: 0x20_0000,
                                       userAddr: 0x7f12_3456_0000, mmapOffset: 0x1000, fd: -1)
        let requests: [VhostUserMessage] = [
            VhostUserMessage(request: .setOwner),
            VhostUserMessage(request: .resetOwner),
            VhostUserMessage(request: .getFeatures),
            VhostUserMessage(request: .setFeatures, payload: .u64(0x1_4000_8000)),
            VhostUserMessage(request: .getProtocolFeatures),
            VhostUserMessage(request: .setProtocolFeatures, payload: .u64(0x1_0009)),
            VhostUserMessage(request: .setMemTable, flags: [.version1, .needReply], payload: .memoryTable([region, region])),
            VhostUserMessage(request: .setMemTable, payload: .memoryTable([])),
            VhostUserMessage(request: .setVringNum, payload: .vringState(VhostVringState(index: 0, num: 256))),
            VhostUserMessage(request: .setVringBase, payload: .vringState(VhostVringState(index: 1, num: 0x8000))),
            VhostUserMessage(request: .setVringAddr, payload: .vringAddr(addr)),
            VhostUserMessage(request: .setVringKick, payload: .u64(VhostUserMessage.vringFilePayload(index: 1, hasFd: true))),
            VhostUserMessage(request: .setVringCall, payload: .u64(VhostUserMessage.vringFilePayload(index: 0, hasFd: false))),
            VhostUserMessage(request: .setVringErr, payload: .u64(3)),
            VhostUserMessage(request: .getVringBase, payload: .vringState(VhostVringState(index: 3, num: 0))),
            VhostUserMessage(request: .setVringEnable, payload: .vringState(VhostVringState(index: 2, num: 1))),
            VhostUserMessage(request: .getQueueNum),
            VhostUserMessage(request: .setStatus, flags: [.version1, .needReply], payload: .u64(0x0f)),
            VhostUserMessage(request: .getStatus),
            VhostUserMessage(request: .getConfig, payload: .config(offset: 0, size: 6, flags: 0, bytes: [0, 0, 0, 0, 0, 0])),
            VhostUserMessage(request: .setConfig, payload: .config(offset: 6, size: 2, flags: 0, bytes: [1, 0])),
        ]
        for m in requests { roundTrip(m) }
    }

    func testEveryReplyFormRoundTrips() {
        let replies: [VhostUserMessage] = [
            .reply(to: .getFeatures, payload: .u64(0x1_4000_8000)),
            .reply(to: .getProtocolFeatures, payload: .u64(0x1_0009)),
            .reply(to: .getVringBase, payload: .vringState(VhostVringState(index: 1, num: 42))),
            .reply(to: .getQueueNum, payload: .u64(2)),
            .reply(to: .getStatus, payload: .u64(0x0f)),
            .reply(to: .setMemTable, payload: .u64(0)),
            .reply(to: .setStatus, payload: .u64(1)),
            .reply(to: .setConfig, payload: .u64(0)),
            .reply(to: .getConfig, payload: .config(offset: 0, size: 6, flags: 0, bytes: [2, 0, 0, 0, 0, 1])),
        ]
        for m in replies {
            XCTAssertTrue(m.isReply)
            roundTrip(m)
        }
    }

    func testSetOwnerExactBytes() {
        XCTAssertEqual(VhostUserMessage(request: .setOwner).encode(), [3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    }

    func testSetFeaturesExactBytesAreLittleEndianAndUnaligned() {
        let m = VhostUserMessage(request: .setFeatures, payload: .u64(0x0000_0001_4000_8000))
        XCTAssertEqual(m.encode(), [2, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0,
                                    0x00, 0x80, 0x00, 0x40, 0x01, 0x00, 0x00, 0x00])
    }

    func testSetVringAddrExactBytes() {
        let a = VhostVringAddr(index: 1, flags: 2, descUserAddr: 0x1122_3344_5566_7788, usedUserAddr: 0x10,
                               availUserAddr: 0x20, logGuestAddr: 0x30)
        let bytes = VhostUserMessage(request: .setVringAddr, payload: .vringAddr(a)).encode()
        var expected: [UInt8] = [9, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
        expected += [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]  // desc
        expected += [0x10, 0, 0, 0, 0, 0, 0, 0]  // used
        expected += [0x20, 0, 0, 0, 0, 0, 0, 0]  // avail
        expected += [0x30, 0, 0, 0, 0, 0, 0, 0]  // log
        XCTAssertEqual(bytes, expected)
    }

    func testSetMemTableExactBytes() throws {
        let r = VhostMemoryRegion(guestPhysAddr: 0x1000, memorySize: 0x2000, userAddr: 0x3000, mmapOffset: 0x40, fd: 7)
        let bytes = VhostUserMessage(request: .setMemTable, flags: [.version1, .needReply],
                                     payload: .memoryTable([r])).encode()
        var expected: [UInt8] = [5, 0, 0, 0, 9, 0, 0, 0, 40, 0, 0, 0]
        expected += [1, 0, 0, 0, 0, 0, 0, 0]  // nregions, padding
        expected += [0x00, 0x10, 0, 0, 0, 0, 0, 0]
        expected += [0x00, 0x20, 0, 0, 0, 0, 0, 0]
        expected += [0x00, 0x30, 0, 0, 0, 0, 0, 0]
        expected += [0x40, 0, 0, 0, 0, 0, 0, 0]
        XCTAssertEqual(bytes, expected)
        // The fd does not travel in the bytes: decoded regions carry -1.
        guard case let .memoryTable(decoded) = try VhostUserMessage.decode(bytes).payload else {
            return XCTFail("not a memory table")
        }
        XCTAssertEqual(decoded.map(\.fd), [-1])
        XCTAssertEqual(decoded[0].mmapOffset, 0x40)
    }

    func testGetVringBaseReplyExactBytes() {
        let bytes = VhostUserMessage.reply(to: .getVringBase,
                                           payload: .vringState(VhostVringState(index: 1, num: 0x8005))).encode()
        XCTAssertEqual(bytes, [11, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x05, 0x80, 0, 0])
    }

    func testVringFilePayloadCarriesIndexAndNoFdBit() {
        XCTAssertEqual(VhostUserMessage.vringFilePayload(index: 3, hasFd: true), 3)
        XCTAssertEqual(VhostUserMessage.vringFilePayload(index: 3, hasFd: false), 0x103)
        XCTAssertEqual(VhostUserMessage.vringFilePayload(index: 0x1ff, hasFd: true), 0xff)
        let split = VhostUserMessage.vringFile(from: 0x105)
        XCTAssertEqual(split.index, 5)
        XCTAssertFalse(split.hasFd)
    }

    // MARK: Malformed input

    private func assertMalformed(_ bytes: [UInt8], contains text: String,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try VhostUserMessage.decode(bytes), file: file, line: line) { error in
            guard let e = error as? VhostUserCodecError else {
                return XCTFail("unexpected \(error)", file: file, line: line)
            }
            XCTAssertTrue(e.detail.contains(text), "\(e.detail) lacks \(text)", file: file, line: line)
        }
    }

    func testShortHeaderThrows() {
        assertMalformed([1, 0, 0, 0, 1, 0], contains: "shorter than the 12-byte header")
    }

    func testPayloadShorterThanHeaderSaysThrows() {
        assertMalformed([2, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4], contains: "header says 8")
    }

    func testWrongSizeForRequestThrows() {
        // SET_FEATURES with a 4-byte payload.
        assertMalformed([2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4], contains: "expected 8")
        // GET_FEATURES reply with 4 bytes.
        assertMalformed([1, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4], contains: "GET_FEATURES reply")
        // SET_VRING_ADDR with 8 bytes.
        assertMalformed([9, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0] + [UInt8](repeating: 0, count: 8), contains: "expected 40")
        // GET_FEATURES request with a payload.
        assertMalformed([1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0] + [UInt8](repeating: 0, count: 8), contains: "expected 0")
    }

    func testMemoryTableWithTooManyRegionsThrows() {
        var bytes: [UInt8] = [5, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]
        assertMalformed(bytes, contains: "9 regions")
        // Two regions announced, one present.
        bytes = [5, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 32)
        assertMalformed(bytes, contains: "expected 72")
    }

    func testConfigLargerThanTheLimitThrows() {
        let bytes: [UInt8] = [24, 0, 0, 0, 5, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 0]
        assertMalformed(bytes, contains: "exceeds 256")
    }

    func testConfigSizeFieldMustMatchBytes() {
        let bytes: [UInt8] = [24, 0, 0, 0, 5, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2]
        assertMalformed(bytes, contains: "expected 16")
    }

    func testUnknownRequestAndBadVersionThrow() {
        assertMalformed([99, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], contains: "unknown request code 99")
        assertMalformed([3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], contains: "version 2")
    }

    func testExpectingAReplyRefusesAMessageWithoutTheReplyFlag() throws {
        let request = VhostUserMessage(request: .getFeatures, payload: .none).encode()
        let header = try VhostUserHeader(decoding: Array(request[0..<12]))
        XCTAssertThrowsError(try VhostUserMessage.decode(header: header, payload: [], expectingReply: true)) { error in
            XCTAssertEqual((error as? VhostUserCodecError)?.detail, "GET_FEATURES: flags 0x1, expected a reply")
        }
        XCTAssertEqual(try VhostUserMessage.decode(header: header, payload: [], expectingReply: false),
                       VhostUserMessage(request: .getFeatures))
    }

    func testHugeSizeIsRefusedFromTheHeaderAlone() {
        let header: [UInt8] = [1, 0, 0, 0, 5, 0, 0, 0, 0x00, 0x00, 0x10, 0x00]  // 1 MiB
        XCTAssertThrowsError(try VhostUserHeader(decoding: header)) { error in
            XCTAssertTrue("\(error)".contains("exceeds"), "\(error)")
        }
        XCTAssertThrowsError(try VhostUserHeader(decoding: [UInt8](repeating: 0xff, count: 12)))
    }

    func testCodecErrorBecomesProtocolViolationNamingThePath() {
        let e = VhostUserCodecError("bad size")
        XCTAssertEqual(e.violation(path: "/tmp/x.sock"), .protocolViolation(path: "/tmp/x.sock", detail: "bad size"))
    }

    func testRequestNamesFollowTheSpec() {
        XCTAssertEqual(VhostUserRequest.setMemTable.description, "SET_MEM_TABLE")
        XCTAssertEqual(VhostUserRequest.getStatus.rawValue, 40)
        XCTAssertEqual(VhostUserRequest.setVringEnable.rawValue, 18)
        // Numbers are dense from 1 to 43.
        XCTAssertEqual(VhostUserRequest.allCases.map(\.rawValue), Array(1...43))
    }

    func testDpdkProtocolFeatureSet() {
        XCTAssertEqual(VhostUserProtocolFeatures.dpdkFrontend.rawValue, (1 << 0) | (1 << 3) | (1 << 16))
        XCTAssertEqual(VhostUserProtocolFeatures.config.rawValue, 1 << 9)
        XCTAssertEqual(VhostUserConstants.protocolFeaturesMask, 1 << 30)
    }
}
