import Virtio
import XCTest

final class NetHeaderTests: XCTestCase {
    func testSize() {
        XCTAssertEqual(VirtioNetHeader.size(for: []), 10)
        XCTAssertEqual(VirtioNetHeader.size(for: [.csum, .mac]), 10)
        XCTAssertEqual(VirtioNetHeader.size(for: [.version1]), 12)
        XCTAssertEqual(VirtioNetHeader.size(for: [.mrgRxbuf]), 12)
        XCTAssertEqual(VirtioNetHeader.size(for: [.version1, .mrgRxbuf]), 12)
    }

    func testNumBuffersIsLittleEndianAtOffset10EvenUnaligned() {
        var bytes = [UInt8](repeating: 0xAA, count: 13)
        bytes[11] = 0x34 // offset 10 of a header starting at byte 1
        bytes[12] = 0x12
        let n = bytes.withUnsafeBytes { VirtioNetHeader.numBuffers(at: $0.baseAddress! + 1) }
        XCTAssertEqual(n, 0x1234)
    }

    func testEncodeDecodeRoundTrip() {
        let header = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsCsum, gsoType: VirtioNetHeader.gsoTcpv4,
                                     hdrLen: 0x0102, gsoSize: 0x0304, csumStart: 0x0506, csumOffset: 0x0708,
                                     numBuffers: 0x090a)
        var bytes = [UInt8](repeating: 0xFF, count: 13)
        bytes.withUnsafeMutableBytes { header.encode(into: $0.baseAddress! + 1, size: 12) }
        XCTAssertEqual(Array(bytes[1...]), [1, 1, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 0x09])
        let decoded = bytes.withUnsafeBytes { VirtioNetHeader(decoding: $0.baseAddress! + 1, size: 12) }
        XCTAssertEqual(decoded, header)
    }

    func testLegacySizeLeavesNumBuffersAlone() {
        var bytes = [UInt8](repeating: 0xEE, count: 12)
        bytes.withUnsafeMutableBytes { VirtioNetHeader(numBuffers: 5).encode(into: $0.baseAddress!, size: 10) }
        XCTAssertEqual(Array(bytes[0..<10]), [UInt8](repeating: 0, count: 10))
        XCTAssertEqual(Array(bytes[10...]), [0xEE, 0xEE])
        let decoded = bytes.withUnsafeBytes { VirtioNetHeader(decoding: $0.baseAddress!, size: 10) }
        XCTAssertEqual(decoded.numBuffers, 0)
    }

    func testZero() {
        for size in [10, 12] {
            var bytes = [UInt8](repeating: 0x55, count: 14)
            bytes.withUnsafeMutableBytes { VirtioNetHeader.zero(at: $0.baseAddress! + 1, size: size) }
            XCTAssertEqual(bytes[0], 0x55)
            XCTAssertEqual(Array(bytes[1...size]), [UInt8](repeating: 0, count: size))
            XCTAssertEqual(bytes[size + 1], 0x55, "size \(size) writes nothing past the header")
        }
    }

    /// The TX header says "no offloads" whatever was there, and num_buffers is cleared only
    /// when asked; nothing outside the header is touched.
    func testPrepareTransmit() {
        for clear in [false, true] {
            for size in [10, 12] {
                var bytes = [UInt8](repeating: 0x55, count: 14)
                bytes.withUnsafeMutableBytes {
                    VirtioNetHeader.prepareTransmit(at: $0.baseAddress! + 1, size: size, clearNumBuffers: clear)
                }
                XCTAssertEqual(bytes[0], 0x55)
                XCTAssertEqual(Array(bytes[1...10]), [UInt8](repeating: 0, count: 10), "offload fields zeroed")
                if size == 12 {
                    XCTAssertEqual(Array(bytes[11...12]), clear ? [0, 0] : [0x55, 0x55], "num_buffers, clear \(clear)")
                }
                XCTAssertEqual(bytes[size + 1], 0x55, "size \(size) writes nothing past the header")
            }
        }
    }

    /// After mergeable RX the header is all zero but num_buffers = 1: only num_buffers may
    /// change, and only when clearing is asked for.
    func testPrepareTransmitOnAReceivedHeader() {
        var header: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        header.withUnsafeMutableBytes { VirtioNetHeader.prepareTransmit(at: $0.baseAddress!, size: 12, clearNumBuffers: false) }
        XCTAssertEqual(header, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        header.withUnsafeMutableBytes { VirtioNetHeader.prepareTransmit(at: $0.baseAddress!, size: 12, clearNumBuffers: true) }
        XCTAssertEqual(header, [UInt8](repeating: 0, count: 12))
    }

    func testNetConfigOffsets() {
        XCTAssertEqual(VirtioNetConfig.macOffset, 0)
        XCTAssertEqual(VirtioNetConfig.statusOffset, 6)
        XCTAssertEqual(VirtioNetConfig.maxVirtqueuePairsOffset, 8)
        XCTAssertEqual(VirtioNetConfig.mtuOffset, 10)
        XCTAssertEqual(VirtioNetConfig.statusLinkUp, 1)
    }
}
