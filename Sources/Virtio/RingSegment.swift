/// One buffer of a descriptor chain, as the driver posts it: an address the device can reach
/// (in virtio-user, Ferry's own virtual address), a length, and a direction.
@frozen
public struct RingSegment: Equatable, Sendable {
    public var address: UInt64
    public var length: UInt32
    /// True when the device writes the buffer (RX), false when it reads it (TX).
    public var deviceWritable: Bool

    @inlinable
    public init(address: UInt64, length: UInt32, deviceWritable: Bool) {
        self.address = address
        self.length = length
        self.deviceWritable = deviceWritable
    }
}
