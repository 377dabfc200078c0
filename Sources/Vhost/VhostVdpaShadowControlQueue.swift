import CFerry
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A vDPA device's own control virtqueue, driven by virtio-user on the driver's behalf (DPDK
/// 23.03's `scvq`; 22.11 has none).
///
/// virtio-user always emulates the control queue the driver sees. When the vDPA device offers
/// CTRL_VQ it has a control queue of its own, at index 2 × max queue pairs, and hardware
/// filters (the MAC, RX modes, VLANs) only change when it hears the command. So every command
/// the emulated queue accepts is replayed here, and the device's ack becomes the status the
/// driver sees.
///
/// One command at a time: a chain of header (2 bytes), data, and a 1-byte status the device
/// writes (virtio 1.2 §5.1.6.5), in one buffer of Ferry's shared memory, so the device reaches
/// it through the IOTLB like every other buffer. The answer is awaited on the call eventfd and
/// the used ring, bounded by `timeoutMs`: a silent device is a `VhostError.timeout`, never a
/// hang. After a timeout the chain is still the device's, so the buffer cannot be reused; the
/// queue refuses further commands until `start()` programs it afresh (after a device reset).
///
/// The device is untrusted: a used entry that is not our chain, a status it did not write, or
/// a status other than OK/ERR is an error or an ERR, never a crash.
///
/// Lifecycle, in the device's order (VirtioUserDevice calls these next to the data vrings'):
/// `setCall()` with the other SET_VRING_CALLs before SET_FEATURES; `start(features:)` after
/// SET_MEM_TABLE and the data vrings (NUM, BASE, ADDR, KICK, then enable); `stop()` with the
/// data vrings; `close()` at the end. Not thread-safe: the control thread drives it.
public final class VhostVdpaShadowControlQueue {
    /// Ring entries. Commands go one at a time; a few entries are plenty.
    public static let defaultQueueSize = 16
    /// Room for the largest command Ferry replays (a MAC table of 64 + 64 entries) and the status.
    public static let defaultBufferSize = 2 + 4 + 64 * 6 + 4 + 64 * 6 + 1
    /// How long a device may take to answer one command.
    public static let defaultTimeoutMs = 1000

    public let backend: VhostVdpaBackend
    /// The vring index on the device: 2 × max queue pairs.
    public let vringIndex: Int
    public let queueSize: Int
    public var timeoutMs: Int
    /// Commands replayed and answered, and the last ack.
    public private(set) var commandsReplayed = 0
    /// True after a timeout, until the next `start()`.
    public private(set) var stalled = false

    let ringMemory: UnsafeMutableRawPointer
    let buffer: UnsafeMutableRawPointer
    let bufferSize: Int
    let kick: Int32
    let call: Int32
    private var ring: UnsafeMutablePointer<SplitRing>?
    private var started = false
    private var closed = false

    /// Memory the caller carves from Ferry's shared memory (mapped into the device):
    /// - `ringMemory`: zeroed, 4096-aligned, `SplitRingLayout.totalSize(queueSize:)` bytes;
    /// - `buffer`: `bufferSize` bytes (at least 3) for one command and its status.
    public init(backend: VhostVdpaBackend, vringIndex: Int, queueSize: Int = defaultQueueSize,
                ringMemory: UnsafeMutableRawPointer, buffer: UnsafeMutableRawPointer,
                bufferSize: Int = defaultBufferSize, timeoutMs: Int = defaultTimeoutMs) throws {
        guard queueSize > 0, queueSize <= 32768, queueSize & (queueSize - 1) == 0 else {
            throw VhostError.io(path: backend.path, operation: "shadow control queue of \(queueSize) entries (a power of two)", errno: EINVAL)
        }
        guard UInt(bitPattern: ringMemory) % UInt(SplitRingLayout.alignment) == 0, bufferSize >= 3 else {
            throw VhostError.io(path: backend.path, operation: "shadow control queue memory (ring 4096-aligned, buffer >= 3 bytes)", errno: EINVAL)
        }
        if let count = backend.virtqueueCount, vringIndex >= Int(count) {
            throw VhostError.notSupported(path: backend.path, what: "a control queue at vring \(vringIndex) (the device has \(count) virtqueues)")
        }
        self.backend = backend
        self.vringIndex = vringIndex
        self.queueSize = queueSize
        self.timeoutMs = timeoutMs
        self.ringMemory = ringMemory
        self.buffer = buffer
        self.bufferSize = bufferSize
        kick = ferry_eventfd(0, FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK)
        call = ferry_eventfd(0, FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK)
        guard kick >= 0, call >= 0 else {
            let e = errno
            if kick >= 0 { Glibc.close(kick) }
            if call >= 0 { Glibc.close(call) }
            throw VhostError.io(path: backend.path, operation: "eventfd for the shadow control queue", errno: e)
        }
    }

    deinit { close() }

    /// SET_VRING_CALL for the shadow queue; send it with the data vrings' before SET_FEATURES.
    public func setCall() throws {
        try live()
        try backend.setVringCall(index: UInt32(vringIndex), fd: call)
    }

    /// Builds a fresh driver ring (the device was reset since any previous one) and programs
    /// it: NUM, BASE 0, ADDR, KICK, then enables it. `features` are the negotiated ones
    /// (EVENT_IDX and IN_ORDER apply to every virtqueue, this one too).
    public func start(features: UInt64) throws {
        try live()
        freeRing()
        let n = SplitRingLayout.totalSize(queueSize: queueSize)
        // SAFETY: the caller gave `ringMemory` with totalSize(queueSize) bytes (init contract);
        // the device is not using it (before start, or after a reset).
        memset(ringMemory, 0, n)
        let r = UnsafeMutablePointer<SplitRing>.allocate(capacity: 1)
        r.initialize(to: SplitRing(memory: ringMemory, queueSize: UInt16(queueSize),
                                   eventIdx: features & VirtioFeatures.ringEventIdx.rawValue != 0,
                                   inOrder: features & VirtioFeatures.inOrder.rawValue != 0))
        ring = r
        stalled = false
        let i = UInt32(vringIndex)
        try backend.setVringNum(VhostVringState(index: i, num: UInt32(queueSize)))
        try backend.setVringBase(VhostVringState(index: i, num: 0))
        try backend.setVringAddr(VhostVringAddr(index: i,
                                                descUserAddr: UInt64(UInt(bitPattern: r.pointee.descTable)),
                                                usedUserAddr: UInt64(UInt(bitPattern: r.pointee.usedRing)),
                                                availUserAddr: UInt64(UInt(bitPattern: r.pointee.availRing))))
        try backend.setVringKick(index: i, fd: kick)
        try backend.setVringEnable(index: i, enable: true)
        started = true
    }

    /// Disables the queue; the driver ring is rebuilt by the next `start`.
    public func stop() throws {
        guard started, !closed else { return }
        started = false
        try backend.setVringEnable(index: UInt32(vringIndex), enable: false)
    }

    /// Replays `command` on the device's control queue and returns its ack: VIRTIO_NET_OK (0)
    /// or VIRTIO_NET_ERR (1). Any other byte the device writes is reported as ERR. Throws when
    /// the queue is not running, the command does not fit, or the device does not answer
    /// within `timeoutMs`.
    public func replay(_ command: VirtioNetControlCommand) throws -> UInt8 {
        try live()
        guard started, let ring else {
            throw VhostError.notSupported(path: backend.path, what: "shadow control queue commands before DRIVER_OK")
        }
        guard !stalled else {
            throw VhostError.timeout(path: backend.path, what: "the shadow control queue (stalled by an earlier unanswered command)")
        }
        let bytes = command.encoded
        guard bytes.count + 1 <= bufferSize else {
            throw VhostError.io(path: backend.path, operation: "shadow control command of \(bytes.count) bytes (room for \(bufferSize - 1))", errno: EMSGSIZE)
        }
        // SAFETY: bytes.count + 1 <= bufferSize, the size of the caller's buffer, so the command
        // and the status byte after it lie inside it; no chain of ours is in flight (one at a
        // time, and a stalled queue refuses commands), so the device is not reading it.
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        let status = buffer + bytes.count
        status.storeBytes(of: 0xff, as: UInt8.self)
        let base = UInt64(UInt(bitPattern: buffer))
        var segments = [RingSegment(address: base, length: UInt32(VirtioNetControl.headerSize), deviceWritable: false)]
        if !command.data.isEmpty {
            segments.append(RingSegment(address: base + UInt64(VirtioNetControl.headerSize),
                                        length: UInt32(command.data.count), deviceWritable: false))
        }
        segments.append(RingSegment(address: UInt64(UInt(bitPattern: status)), length: 1, deviceWritable: true))
        // Clear a stale notification so the wait below sees only this command's.
        drainCall()
        let cookie = UInt32(truncatingIfNeeded: commandsReplayed)
        let added = segments.withUnsafeBufferPointer { ring.pointee.addChain($0, cookie: cookie) }
        guard added else {
            stalled = true
            throw VhostError.protocolViolation(path: backend.path, detail: "shadow control queue full: the device kept earlier commands")
        }
        _ = ring.pointee.enableInterrupts()
        ring.pointee.publish()
        if ring.pointee.kickNeeded() { signalKick() }

        let (gotCookie, length) = try awaitAnswer(ring)
        guard gotCookie == cookie else {
            stalled = true
            throw VhostError.protocolViolation(path: backend.path, detail: "shadow control queue answered a command it was not given")
        }
        guard length >= 1 else {
            throw VhostError.protocolViolation(path: backend.path, detail: "shadow control queue: the device wrote no status for class \(command.class) command \(command.command)")
        }
        commandsReplayed += 1
        // SAFETY: `status` is inside the buffer (above); the device has completed the chain.
        let ack = status.load(as: UInt8.self)
        return ack == VirtioNetControl.ackOK ? VirtioNetControl.ackOK : VirtioNetControl.ackErr
    }

    /// Closes the eventfds and frees the driver ring's side tables. The ring memory and buffer
    /// are the caller's. Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        started = false
        freeRing()
        Glibc.close(kick)
        Glibc.close(call)
    }

    // MARK: Helpers

    private func live() throws {
        guard !closed else { throw VhostError.closed(path: backend.path) }
    }

    /// Waits for one used entry: the used ring first, then the call eventfd, in slices of at
    /// most 10 ms so a device that completes without interrupting is still seen.
    private func awaitAnswer(_ ring: UnsafeMutablePointer<SplitRing>) throws -> (UInt32, UInt32) {
        let deadline = ferry_monotonic_ns() + UInt64(max(0, timeoutMs)) * 1_000_000
        var cookie: UInt32 = 0
        var length: UInt32 = 0
        while true {
            if ring.pointee.dequeueUsed(cookies: &cookie, lengths: &length, max: 1) == 1 {
                ring.pointee.disableInterrupts()
                return (cookie, length)
            }
            let now = ferry_monotonic_ns()
            guard now < deadline else {
                stalled = true
                throw VhostError.timeout(path: backend.path, what: "the device's answer on its control queue (vring \(vringIndex), \(timeoutMs) ms)")
            }
            var p = pollfd(fd: call, events: Int16(POLLIN), revents: 0)
            let sliceMs = Int32(min(10, (deadline - now + 999_999) / 1_000_000))
            if poll(&p, 1, sliceMs) > 0 { drainCall() }
        }
    }

    private func signalKick() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(kick, $0.baseAddress, 8) }
    }

    private func drainCall() {
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { Glibc.read(call, $0.baseAddress, 8) }
    }

    private func freeRing() {
        guard let r = ring else { return }
        r.pointee.deallocate()
        r.deinitialize(count: 1)
        r.deallocate()
        ring = nil
    }
}
