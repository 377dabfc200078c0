import XCTest
@testable import Forwarding

/// The frame txonly and tx_first send: Ethernet + IPv4 + UDP, as testpmd's txonly.
final class UDPTemplateTests: XCTestCase {
    private let source: [UInt8] = [0x02, 0xfe, 0x00, 0x00, 0x00, 0x07]
    private let destination: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x09]

    /// The ones-complement sum of a header's 16-bit words, folded.
    private func onesComplementSum(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var sum: UInt32 = 0
        var i = bytes.startIndex
        while i < bytes.endIndex {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return UInt16(sum)
    }

    func testMinimumLengthIsTheThreeHeaders() {
        XCTAssertEqual(UDPTemplate.minimumLength, 42)
    }

    func testFramesHaveTheRequestedLengthAndConsistentHeaders() {
        for length in [42, 64, 1518] {
            let f = UDPTemplate.frame(length: length, source: source, destination: destination)
            XCTAssertEqual(f.count, length)
            XCTAssertEqual(Array(f[0..<6]), destination, "length \(length): destination first")
            XCTAssertEqual(Array(f[6..<12]), source, "length \(length): then source")
            XCTAssertEqual(Array(f[12..<14]), [0x08, 0x00], "IPv4 EtherType")

            let ip = 14
            XCTAssertEqual(f[ip], 0x45, "IPv4, 20-byte header")
            XCTAssertEqual(Int(f[ip + 2]) << 8 | Int(f[ip + 3]), length - 14, "IPv4 total length")
            XCTAssertEqual(f[ip + 8], 64, "TTL")
            XCTAssertEqual(f[ip + 9], 17, "UDP")
            XCTAssertEqual(Array(f[(ip + 12)..<(ip + 16)]), [198, 18, 0, 1])
            XCTAssertEqual(Array(f[(ip + 16)..<(ip + 20)]), [198, 18, 0, 2])
            XCTAssertEqual(onesComplementSum(f[ip..<(ip + 20)]), 0xffff, "length \(length): IPv4 header checksum verifies")
            XCTAssertNotEqual(Int(f[ip + 10]) << 8 | Int(f[ip + 11]), 0, "checksum is filled in")

            let udp = ip + 20
            XCTAssertEqual(Int(f[udp]) << 8 | Int(f[udp + 1]), 9, "UDP source port")
            XCTAssertEqual(Int(f[udp + 2]) << 8 | Int(f[udp + 3]), 9, "UDP destination port")
            XCTAssertEqual(Int(f[udp + 4]) << 8 | Int(f[udp + 5]), length - 34, "UDP length: header plus payload")
            XCTAssertTrue(f[(udp + 8)...].allSatisfy { $0 == 0 }, "zeroed payload")
        }
    }

    func testChecksumDependsOnTheLength() {
        let a = UDPTemplate.frame(length: 64, source: source, destination: destination)
        let b = UDPTemplate.frame(length: 1518, source: source, destination: destination)
        XCTAssertNotEqual(Array(a[24..<26]), Array(b[24..<26]))
    }

    func testAddressesDoNotChangeTheIPHeader() {
        let a = UDPTemplate.frame(length: 64, source: source, destination: destination)
        let b = UDPTemplate.frame(length: 64, source: destination, destination: source)
        XCTAssertEqual(Array(a[12...]), Array(b[12...]))
        XCTAssertEqual(Array(b[0..<6]), source)
        XCTAssertEqual(Array(b[6..<12]), destination)
    }
}
