/// `struct virtio_net_hdr` (virtio 1.2 §5.1.6): the header that precedes every packet on the
/// RX and TX queues. Little-endian on the wire, at most 12 bytes, with no alignment promise in
/// the buffer, so it is read and written field by field through raw pointers.
@frozen
public struct VirtioNetHeader: Equatable, Sendable {
    public var flags: UInt8
    public var gsoType: UInt8
    public var hdrLen: UInt16
    public var gsoSize: UInt16
    public var csumStart: UInt16
    public var csumOffset: UInt16
    /// Only present when the header is 12 bytes (VERSION_1 or MRG_RXBUF): on RX, how many
    /// buffers a merged packet spans. The driver sets it to 0 on TX.
    public var numBuffers: UInt16

    @inlinable
    public init(flags: UInt8 = 0, gsoType: UInt8 = VirtioNetHeader.gsoNone, hdrLen: UInt16 = 0,
                gsoSize: UInt16 = 0, csumStart: UInt16 = 0, csumOffset: UInt16 = 0,
                numBuffers: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.hdrLen = hdrLen
        self.gsoSize = gsoSize
        self.csumStart = csumStart
        self.csumOffset = csumOffset
        self.numBuffers = numBuffers
    }

    // ---- flags --------------------------------------------------------------------------------
    /// The checksum from `csumStart` to the end must be completed at `csumStart + csumOffset`.
    public static let flagNeedsCsum: UInt8 = 1
    /// RX: the device validated the checksum (needs GUEST_CSUM).
    public static let flagDataValid: UInt8 = 2
    /// RX: `csumStart`/`csumOffset` carry receive-coalescing info (needs GUEST_RSC4/6).
    public static let flagRscInfo: UInt8 = 4

    // ---- gso_type -----------------------------------------------------------------------------
    public static let gsoNone: UInt8 = 0
    public static let gsoTcpv4: UInt8 = 1
    public static let gsoUdp: UInt8 = 3
    public static let gsoTcpv6: UInt8 = 4
    public static let gsoUdpL4: UInt8 = 5
    /// Or-ed into `gsoType`: the TCP segment has the ECN bit set (needs HOST_ECN/GUEST_ECN).
    public static let gsoEcn: UInt8 = 0x80

    // ---- layout -------------------------------------------------------------------------------
    /// Byte offsets of the fields.
    public static let flagsOffset = 0
    public static let gsoTypeOffset = 1
    public static let hdrLenOffset = 2
    public static let gsoSizeOffset = 4
    public static let csumStartOffset = 6
    public static let csumOffsetOffset = 8
    public static let numBuffersOffset = 10
    /// The header without `num_buffers` (legacy devices without MRG_RXBUF).
    public static let legacySize = 10
    /// The header with `num_buffers`.
    public static let fullSize = 12

    /// The header length the device expects: virtio 1.2 §5.1.6 says it is 12 bytes whenever
    /// VERSION_1 or MRG_RXBUF is negotiated (the field exists even when unused), 10 otherwise.
    @inlinable
    public static func size(for features: VirtioFeatures) -> Int {
        features.contains(.version1) || features.contains(.mrgRxbuf) ? fullSize : legacySize
    }

    /// Zeroes a header of `size` bytes: what TX writes when it offloads nothing.
    // SAFETY: the caller guarantees `at` points to at least `size` writable bytes.
    @inlinable
    public static func zero(at pointer: UnsafeMutableRawPointer, size: Int) {
        if size == fullSize {
            pointer.storeBytes(of: 0, toByteOffset: 0, as: UInt64.self)
            pointer.storeBytes(of: 0, toByteOffset: 8, as: UInt32.self)
        } else {
            pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        }
    }

    /// Makes the header in front of a frame about to be sent say "no offloads", writing only
    /// what is not already zero.
    ///
    /// Why not simply zero it: in io forwarding the header sits where the device wrote the RX
    /// header, in a cache line the device's core still holds. A store takes that line over, and
    /// the device's TX copy then takes it back: two cross-core transfers per frame, about a
    /// tenth of the 64-byte forwarding rate on this machine (bench/README.md). A read leaves
    /// the line shared.
    ///
    /// `num_buffers` (12-byte headers only): virtio 1.2 §5.1.6.2.1 says the driver sets it to
    /// zero on transmit, and after mergeable RX it holds 1. With `clearNumBuffers` false it is
    /// left as it is, as DPDK's virtio driver does: software backends (DPDK's vhost, vhost-net)
    /// never read it on transmit. A device that checks it (hardware behind vDPA may) needs
    /// `clearNumBuffers`.
    // SAFETY: the caller guarantees `at` points to at least `size` writable bytes.
    @inlinable
    public static func prepareTransmit(at pointer: UnsafeMutableRawPointer, size: Int, clearNumBuffers: Bool) {
        guard size == fullSize else {
            zero(at: pointer, size: size)
            return
        }
        if pointer.loadUnaligned(as: UInt64.self) != 0 || pointer.loadUnaligned(fromByteOffset: 8, as: UInt16.self) != 0 {
            pointer.storeBytes(of: 0, toByteOffset: 0, as: UInt64.self)
            pointer.storeBytes(of: 0, toByteOffset: 8, as: UInt16.self)
        }
        if clearNumBuffers && pointer.loadUnaligned(fromByteOffset: numBuffersOffset, as: UInt16.self) != 0 {
            pointer.storeBytes(of: 0, toByteOffset: numBuffersOffset, as: UInt16.self)
        }
    }

    /// `num_buffers` of a 12-byte RX header, which the device wrote. Only the caller can tell
    /// whether it is plausible (it must not exceed the buffers it has).
    // SAFETY: the caller guarantees `at` points to at least 12 readable bytes.
    @inlinable
    public static func numBuffers(at pointer: UnsafeRawPointer) -> UInt16 {
        UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: numBuffersOffset, as: UInt16.self))
    }

    /// Writes the header little-endian; `num_buffers` only when `size` is 12.
    // SAFETY: the caller guarantees `pointer` points to at least `size` writable bytes.
    @inlinable
    public func encode(into pointer: UnsafeMutableRawPointer, size: Int = VirtioNetHeader.fullSize) {
        pointer.storeBytes(of: flags, toByteOffset: Self.flagsOffset, as: UInt8.self)
        pointer.storeBytes(of: gsoType, toByteOffset: Self.gsoTypeOffset, as: UInt8.self)
        pointer.storeBytes(of: hdrLen.littleEndian, toByteOffset: Self.hdrLenOffset, as: UInt16.self)
        pointer.storeBytes(of: gsoSize.littleEndian, toByteOffset: Self.gsoSizeOffset, as: UInt16.self)
        pointer.storeBytes(of: csumStart.littleEndian, toByteOffset: Self.csumStartOffset, as: UInt16.self)
        pointer.storeBytes(of: csumOffset.littleEndian, toByteOffset: Self.csumOffsetOffset, as: UInt16.self)
        if size >= Self.fullSize {
            pointer.storeBytes(of: numBuffers.littleEndian, toByteOffset: Self.numBuffersOffset, as: UInt16.self)
        }
    }

    /// Reads a header of `size` bytes; `numBuffers` is 0 when `size` is 10.
    // SAFETY: the caller guarantees `pointer` points to at least `size` readable bytes.
    @inlinable
    public init(decoding pointer: UnsafeRawPointer, size: Int = VirtioNetHeader.fullSize) {
        flags = pointer.load(fromByteOffset: Self.flagsOffset, as: UInt8.self)
        gsoType = pointer.load(fromByteOffset: Self.gsoTypeOffset, as: UInt8.self)
        hdrLen = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: Self.hdrLenOffset, as: UInt16.self))
        gsoSize = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: Self.gsoSizeOffset, as: UInt16.self))
        csumStart = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: Self.csumStartOffset, as: UInt16.self))
        csumOffset = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: Self.csumOffsetOffset, as: UInt16.self))
        numBuffers = size >= Self.fullSize
            ? UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: Self.numBuffersOffset, as: UInt16.self))
            : 0
    }
}
