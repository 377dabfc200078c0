import Virtio

/// A device's own control queue, mirrored by virtio-user (DPDK 23.03's `scvq`).
///
/// When a vDPA device offers CTRL_VQ, every command the emulated control queue accepts is
/// replayed here so the hardware sees what the driver asked for, and the device's ack becomes
/// the status the driver sees. vhost-user devices have none.
public protocol ShadowControlQueue: AnyObject {
    /// The vring index the shadow queue occupies on the device: 2 × max queue pairs.
    var vringIndex: Int { get }
    /// Replays `command` and returns the device's ack. Waiting is bounded: a device that does
    /// not answer in time is reported by a thrown error, never a hang.
    func replay(_ command: VirtioNetControlCommand) throws -> UInt8
}
