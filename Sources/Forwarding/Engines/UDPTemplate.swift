/// The frame txonly sends: Ethernet, IPv4 and UDP headers with a zeroed payload, like
/// testpmd's txonly (198.18.0.1 → 198.18.0.2, the RFC 2544 benchmarking range, UDP port 9).
enum UDPTemplate {
    static let minimumLength = 14 + 20 + 8

    /// Builds a frame of `length` bytes (at least `minimumLength`).
    static func frame(length: Int, source: [UInt8], destination: [UInt8]) -> [UInt8] {
        precondition(length >= minimumLength)
        var f = [UInt8](repeating: 0, count: length)
        f.replaceSubrange(0..<6, with: destination)
        f.replaceSubrange(6..<12, with: source)
        f[12] = 0x08; f[13] = 0x00 // IPv4
        let ipLength = length - 14
        let ip = 14
        f[ip] = 0x45
        f[ip + 2] = UInt8(truncatingIfNeeded: ipLength >> 8)
        f[ip + 3] = UInt8(truncatingIfNeeded: ipLength)
        f[ip + 8] = 64 // TTL
        f[ip + 9] = 17 // UDP
        f.replaceSubrange((ip + 12)..<(ip + 16), with: [198, 18, 0, 1])
        f.replaceSubrange((ip + 16)..<(ip + 20), with: [198, 18, 0, 2])
        var sum: UInt32 = 0
        for i in stride(from: ip, to: ip + 20, by: 2) { sum += UInt32(f[i]) << 8 | UInt32(f[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        f[ip + 10] = UInt8(checksum >> 8)
        f[ip + 11] = UInt8(checksum & 0xff)
        let udp = ip + 20
        let udpLength = length - udp
        f[udp + 1] = 9 // source port 9 (discard)
        f[udp + 3] = 9 // destination port 9
        f[udp + 4] = UInt8(truncatingIfNeeded: udpLength >> 8)
        f[udp + 5] = UInt8(truncatingIfNeeded: udpLength)
        return f
    }
}
