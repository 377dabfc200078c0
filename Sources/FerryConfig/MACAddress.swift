/// A 48-bit Ethernet (IEEE 802) address.
///
/// Stored as a tuple of six bytes rather than an array so that copying one into a frame header
/// never allocates; the forwarding engines read it once per port, but keeping it a plain value
/// means it can also be used on the hot path without cost.
@frozen
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six octets in transmission order (`bytes.0` is the first octet on the wire).
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    /// Builds an address from exactly six octets; a wrong count is a programming error.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 6, "a MAC address has 6 octets, got \(bytes.count)")
        self.bytes = (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5])
    }

    /// Parses `aa:bb:cc:dd:ee:ff`: six groups of exactly two hex digits (either case) separated
    /// by colons. Dashes, dots and short groups are rejected so a typo is never silently
    /// accepted as a different address.
    public init?(parsing text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 17 else { return nil }
        var octets = [UInt8](repeating: 0, count: 6)
        for group in 0..<6 {
            let base = group * 3
            if group > 0 && utf8[base - 1] != UInt8(ascii: ":") { return nil }
            guard let high = MACAddress.hexValue(utf8[base]),
                  let low = MACAddress.hexValue(utf8[base + 1]) else { return nil }
            octets[group] = high << 4 | low
        }
        self.init(bytes: octets)
    }

    /// The six octets as an array, first octet first.
    public var octets: [UInt8] {
        [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5]
    }

    /// The I/G bit (least significant bit of the first octet) is clear: the address names one
    /// station. A port's own address must be unicast (IEEE 802-2014 §8.2).
    public var isUnicast: Bool { bytes.0 & 0x01 == 0 }

    /// The U/L bit (second least significant bit of the first octet) is set: the address was
    /// assigned locally, not by a vendor, so it cannot clash with real hardware.
    public var isLocallyAdministered: Bool { bytes.0 & 0x02 != 0 }

    /// All six octets are zero; never a valid station address.
    public var isZero: Bool { octets.allSatisfy { $0 == 0 } }

    /// A random locally administered unicast address, like DPDK's `rte_eth_random_addr`, for
    /// ports whose MAC neither the configuration nor the device provides.
    public static func random() -> MACAddress {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    /// As `random()`, with a caller-chosen generator (deterministic in tests).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> MACAddress {
        var octets = (0..<6).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        octets[0] = (octets[0] & 0xFC) | 0x02
        return MACAddress(bytes: octets)
    }

    /// testpmd's default peer for port `port`: `02:00:00:00:00:<port>`. The index fills the
    /// last two octets big-endian, so ports below 256 get exactly testpmd's address and larger
    /// indexes still get distinct ones.
    public static func defaultPeer(port: Int) -> MACAddress {
        let index = UInt16(truncatingIfNeeded: port)
        return MACAddress(bytes: [0x02, 0, 0, 0, UInt8(index >> 8), UInt8(index & 0xFF)])
    }

    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    public var description: String {
        let digits: [Character] = Array("0123456789abcdef")
        var text = ""
        for (position, octet) in octets.enumerated() {
            if position > 0 { text.append(":") }
            text.append(digits[Int(octet >> 4)])
            text.append(digits[Int(octet & 0x0F)])
        }
        return text
    }

    public static func == (lhs: MACAddress, rhs: MACAddress) -> Bool {
        lhs.bytes == rhs.bytes
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.0)
        hasher.combine(bytes.1)
        hasher.combine(bytes.2)
        hasher.combine(bytes.3)
        hasher.combine(bytes.4)
        hasher.combine(bytes.5)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
