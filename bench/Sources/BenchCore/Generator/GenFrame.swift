/// The generator's probe frame: an Ethernet frame (local experimental EtherType 0x88B5) whose
/// payload carries what a round trip needs.
///
/// ```
/// offset  0  dst MAC 02:00:00:00:00:01      6  src MAC 02:00:00:00:00:02   12  0x88B5
///        14  magic "FBNC" (u32)             18  job id (u32)
///        22  sequence number (u64)          30  intended send time, ns (u64)
///        38  actual send time, ns (u64)     46  end of the fields; padding up to the length
/// ```
///
/// The intended time is `start + seq / rate`, what an open-loop sender meant to do; latency
/// measured from it includes every stall of the generator or the DUT (coordinated omission
/// corrected at the source, as wrk2 does). The actual time gives the uncorrected figure.
public enum GenFrame {
    public static let magic: UInt32 = 0x434E_4246  // "FBNC" little-endian
    public static let etherType: UInt16 = 0x88B5
    public static let magicOffset = 14
    public static let jobOffset = 18
    public static let seqOffset = 22
    public static let intendedOffset = 30
    public static let sentOffset = 38
    /// Bytes of the frame the fields occupy.
    public static let fieldsLength = 46
    public static let minimumLength = 60

    /// Writes the Ethernet header and the fields at `frame`.
    // SAFETY: the caller guarantees `fieldsLength` writable bytes at `frame`.
    @inline(__always)
    public static func write(at frame: UnsafeMutableRawPointer, job: UInt32, seq: UInt64, intended: UInt64, sent: UInt64) {
        // dst 02:00:00:00:00:01, src 02:00:00:00:00:02, EtherType 0x88B5 (big-endian on the wire).
        frame.storeBytes(of: UInt64(0x0000_0100_0000_0002).littleEndian, toByteOffset: 0, as: UInt64.self)
        frame.storeBytes(of: UInt16(0x0002).littleEndian, toByteOffset: 6, as: UInt16.self)
        frame.storeBytes(of: UInt32(0x0200_0000).littleEndian, toByteOffset: 8, as: UInt32.self)
        frame.storeBytes(of: etherType.bigEndian, toByteOffset: 12, as: UInt16.self)
        frame.storeBytes(of: magic.littleEndian, toByteOffset: magicOffset, as: UInt32.self)
        frame.storeBytes(of: job.littleEndian, toByteOffset: jobOffset, as: UInt32.self)
        frame.storeBytes(of: seq.littleEndian, toByteOffset: seqOffset, as: UInt64.self)
        frame.storeBytes(of: intended.littleEndian, toByteOffset: intendedOffset, as: UInt64.self)
        frame.storeBytes(of: sent.littleEndian, toByteOffset: sentOffset, as: UInt64.self)
    }

    /// The fields of a frame, or nil when it is not a generator frame.
    // SAFETY: the caller guarantees `fieldsLength` readable bytes at `frame`.
    @inline(__always)
    public static func read(at frame: UnsafeRawPointer) -> (job: UInt32, seq: UInt64, intended: UInt64, sent: UInt64)? {
        guard UInt32(littleEndian: frame.loadUnaligned(fromByteOffset: magicOffset, as: UInt32.self)) == magic else {
            return nil
        }
        return (UInt32(littleEndian: frame.loadUnaligned(fromByteOffset: jobOffset, as: UInt32.self)),
                UInt64(littleEndian: frame.loadUnaligned(fromByteOffset: seqOffset, as: UInt64.self)),
                UInt64(littleEndian: frame.loadUnaligned(fromByteOffset: intendedOffset, as: UInt64.self)),
                UInt64(littleEndian: frame.loadUnaligned(fromByteOffset: sentOffset, as: UInt64.self)))
    }
}
