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

    /// The txonly template in one allocation: the frame's bytes, then (4-byte aligned) the
    /// number of `txpkts` segments and their lengths as UInt32s, so the generator reads its
    /// segmentation from the same pointer the stream already carries. `segments` must sum to
    /// `frame.count`. Free with `deallocate()` on the returned pointer.
    static func storage(frame: [UInt8], segments: [Int]) -> UnsafeMutablePointer<UInt8> {
        precondition(segments.reduce(0, +) == frame.count && !segments.isEmpty)
        let tableOffset = tableOffset(length: frame.count)
        let bytes = tableOffset + 4 * (1 + segments.count)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        frame.withUnsafeBytes { raw.copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        raw.storeBytes(of: UInt32(segments.count), toByteOffset: tableOffset, as: UInt32.self)
        for (k, length) in segments.enumerated() {
            raw.storeBytes(of: UInt32(length), toByteOffset: tableOffset + 4 * (1 + k), as: UInt32.self)
        }
        return raw.bindMemory(to: UInt8.self, capacity: bytes)
    }

    @inline(__always)
    static func tableOffset(length: Int) -> Int { (length + 3) & ~3 }

    /// How many segments a template from `storage` has.
    // SAFETY: `template` came from `storage(frame:segments:)` with a frame of `length` bytes.
    @inline(__always)
    static func segmentCount(_ template: UnsafeRawPointer, length: Int) -> Int {
        Int(template.load(fromByteOffset: tableOffset(length: length), as: UInt32.self))
    }

    /// The length of segment `k` (< `segmentCount`).
    // SAFETY: as `segmentCount`, and k < segmentCount.
    @inline(__always)
    static func segmentLength(_ template: UnsafeRawPointer, length: Int, segment k: Int) -> Int {
        Int(template.load(fromByteOffset: tableOffset(length: length) + 4 * (1 + k), as: UInt32.self))
    }
}
