/// The lab's test frames. tap-peer.c builds and checks the same bytes, so both sides can
/// demand byte-identical payloads without exchanging them.
///
/// Layout: destination MAC, source MAC, EtherType 0x88B5 (IEEE local experimental), then
/// the sequence number (big-endian u32), the direction tag, the queue, and a fill that depends
/// on all three, so a frame delivered to the wrong place or with a wrong byte fails.
/// Lengths vary from 60 to 1514 bytes with the sequence number.
enum LabFrames {
    static let etherType: UInt16 = 0x88b5
    /// Ferry to the tap, the tap to Ferry, and Ferry to vdpa_sim_net and back.
    static let tagToTap: UInt8 = 1
    static let tagFromTap: UInt8 = 2
    static let tagLoopback: UInt8 = 3

    static let ferryMAC: [UInt8] = [0x02, 0xfe, 0, 0, 0, 0x01]
    static let peerMAC: [UInt8] = [0x02, 0xfe, 0, 0, 0, 0x02]

    static func length(seq: UInt32) -> Int { 60 + Int((seq &* 37) % 1455) }

    static func make(seq: UInt32, tag: UInt8, queue: UInt8, destination: [UInt8], source: [UInt8]) -> [UInt8] {
        let n = length(seq: seq)
        var f = [UInt8](repeating: 0, count: n)
        for i in 0..<6 { f[i] = destination[i]; f[6 + i] = source[i] }
        f[12] = UInt8(etherType >> 8)
        f[13] = UInt8(etherType & 0xff)
        f[14] = UInt8(truncatingIfNeeded: seq >> 24)
        f[15] = UInt8(truncatingIfNeeded: seq >> 16)
        f[16] = UInt8(truncatingIfNeeded: seq >> 8)
        f[17] = UInt8(truncatingIfNeeded: seq)
        f[18] = tag
        f[19] = queue
        for i in 20..<n {
            f[i] = UInt8(truncatingIfNeeded: Int(seq) &* 7 &+ i &* 13 &+ Int(tag) &* 29 &+ Int(queue) &* 3)
        }
        return f
    }

    /// Whether `frame` is a lab frame at all (our EtherType and long enough for the header).
    static func isLabFrame(_ frame: [UInt8]) -> Bool {
        frame.count >= 20 && frame[12] == UInt8(etherType >> 8) && frame[13] == UInt8(etherType & 0xff)
    }

    static func sequence(_ frame: [UInt8]) -> UInt32 {
        UInt32(frame[14]) << 24 | UInt32(frame[15]) << 16 | UInt32(frame[16]) << 8 | UInt32(frame[17])
    }
}
