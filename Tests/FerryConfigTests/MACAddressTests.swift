import XCTest
@testable import FerryConfig

final class MACAddressTests: XCTestCase {
    func testParsesEitherCaseAndPrintsLowercase() throws {
        let address = try XCTUnwrap(MACAddress(parsing: "AA:bb:Cc:0d:E0:ff"))
        XCTAssertEqual(address.octets, [0xAA, 0xBB, 0xCC, 0x0D, 0xE0, 0xFF])
        XCTAssertEqual(address.description, "aa:bb:cc:0d:e0:ff")
        XCTAssertEqual(MACAddress(parsing: address.description), address)
    }

    func testRejectsMalformedText() {
        for text in ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa-bb-cc-dd-ee-ff", "a:bb:cc:dd:ee:fff",
                     "zz:00:00:00:00:00", "aa:bb:cc:dd:ee:f", " aa:bb:cc:dd:ee:ff", "aabb.ccdd.eeff",
                     "aa:bb:cc:dd:ee:fg", "aa:bb:cc:dd:ee;ff"] {
            XCTAssertNil(MACAddress(parsing: text), text)
        }
    }

    func testUnicastAndLocalBits() throws {
        let multicast = try XCTUnwrap(MACAddress(parsing: "01:00:5e:00:00:01"))
        XCTAssertFalse(multicast.isUnicast)
        XCTAssertFalse(multicast.isLocallyAdministered)
        let local = try XCTUnwrap(MACAddress(parsing: "02:00:00:00:00:01"))
        XCTAssertTrue(local.isUnicast)
        XCTAssertTrue(local.isLocallyAdministered)
        XCTAssertTrue(MACAddress(bytes: [0, 0, 0, 0, 0, 0]).isZero)
        XCTAssertFalse(local.isZero)
    }

    func testRandomIsLocallyAdministeredUnicast() {
        var seen = Set<MACAddress>()
        for _ in 0..<64 {
            let address = MACAddress.random()
            XCTAssertTrue(address.isUnicast, address.description)
            XCTAssertTrue(address.isLocallyAdministered, address.description)
            seen.insert(address)
        }
        XCTAssertGreaterThan(seen.count, 1, "64 random addresses should not all be equal")
    }

    func testDefaultPeerMatchesTestpmd() {
        XCTAssertEqual(MACAddress.defaultPeer(port: 0).description, "02:00:00:00:00:00")
        XCTAssertEqual(MACAddress.defaultPeer(port: 3).description, "02:00:00:00:00:03")
        XCTAssertEqual(MACAddress.defaultPeer(port: 300).description, "02:00:00:00:01:2c")
    }

    func testHashAndEqualityFollowBytes() {
        let a = MACAddress(bytes: [2, 0, 0, 0, 0, 1])
        let b = MACAddress(bytes: [2, 0, 0, 0, 0, 1])
        let c = MACAddress(bytes: [2, 0, 0, 0, 0, 2])
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        XCTAssertEqual(Set([a, b, c]).count, 2)
    }
}
