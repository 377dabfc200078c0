/// The device status byte (virtio 1.2 §2.1). The driver sets bits in the order of §3.1.1
/// (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK); the device sets DEVICE_NEEDS_RESET.
/// Writing 0 resets the device.
public struct DeviceStatus: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    @inlinable
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The guest noticed the device.
    public static let acknowledge = DeviceStatus(rawValue: 1)
    /// The guest knows how to drive it.
    public static let driver = DeviceStatus(rawValue: 2)
    /// The driver is set up and ready to drive the device.
    public static let driverOK = DeviceStatus(rawValue: 4)
    /// Feature negotiation is complete; the device must leave it set only if it accepts them.
    public static let featuresOK = DeviceStatus(rawValue: 8)
    /// The device hit an error it cannot recover from without a reset.
    public static let deviceNeedsReset = DeviceStatus(rawValue: 64)
    /// The driver gave up on the device.
    public static let failed = DeviceStatus(rawValue: 128)

    static let names: [(DeviceStatus, String)] = [
        (.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.driverOK, "DRIVER_OK"),
        (.featuresOK, "FEATURES_OK"), (.deviceNeedsReset, "DEVICE_NEEDS_RESET"),
        (.failed, "FAILED"),
    ]

    /// `"ACKNOWLEDGE|DRIVER|FEATURES_OK"`; unknown bits in hex; 0 prints as `"RESET"`.
    public var description: String {
        if rawValue == 0 { return "RESET" }
        var parts: [String] = []
        var rest = rawValue
        for (flag, name) in Self.names where contains(flag) {
            parts.append(name)
            rest &= ~flag.rawValue
        }
        if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
        return parts.joined(separator: "|")
    }
}
