import CFerry
import Vhost
import Virtio

/// A virtio-user device: Ferry as the virtio driver, a vhost backend as the device.
///
/// This is the seed's `virtio_user_dev` (DPDK `virtio_user_dev.c`) with the ethdev's driver
/// steps folded in, because Ferry is both. The order of vhost messages is the seed's, and
/// `../shared/reference/anchors.md` lists it:
///
/// - `init`: SET_OWNER, GET_FEATURES (and the protocol features), the MAC, max queue pairs,
///   the notifier eventfds and the feature masks.
/// - `negotiate()`: ACK, DRIVER, then FEATURES_OK, which sends SET_VRING_CALL for every vring
///   before SET_FEATURES (vhost allocates queue pairs on SET_VRING_CALL).
/// - `start()`: DRIVER_OK, which sends SET_MEM_TABLE, then per vring NUM, BASE, ADDR and
///   KICK last (vhost takes KICK to mean the ring is ready), then enables pair 0.
/// - `stop()`: disables every pair, then GET_VRING_BASE per vring.
///
/// Control path only; not thread-safe. The forwarding workers touch only the rings.
public final class VirtioUserDevice {
    /// What Ferry's datapath can drive today. Offloads come with later work; the seed's
    /// masks still apply on top of this. INDIRECT_DESC is in the seed's
    /// VIRTIO_USER_SUPPORTED_FEATURES too (line 595): chained TX frames use it.
    public static let driverFeatures: VirtioFeatures = [
        .version1, .mrgRxbuf, .inOrder, .mac, .status, .ctrlVq, .ctrlRx, .ctrlVlan, .mq,
        .ctrlMacAddr, .ringPacked, .ringIndirectDesc,
    ]

    /// Descriptors per INDIRECT_DESC table. DPDK uses 8 for TX; 16 covers a 9000-byte frame in
    /// 2 KiB buffers plus its header, and txpkts lists of up to 16 segments. A longer chain is
    /// posted direct.
    public static let indirectMaxSegments = 16

    /// Shared-memory bytes the INDIRECT_DESC tables of one port take: one table area per TX
    /// vring of the `queues` pairs asked for (RX posts single buffers or writable chains,
    /// which stay direct).
    public static func indirectTableBytes(queueSize: Int, queuePairs: Int) -> Int {
        queuePairs * indirectTableStride(queueSize: queueSize) + 64
    }

    /// One TX vring's tables, room for either ring kind, rounded to a cache line.
    static func indirectTableStride(queueSize: Int) -> Int {
        let bytes = max(SplitRing.indirectTableSize(queueSize: queueSize, maxSegments: indirectMaxSegments),
                        PackedRing.indirectTableSize(queueSize: queueSize, maxSegments: indirectMaxSegments))
        return (bytes + 63) & ~63
    }

    public let options: VirtioUserOptions
    public var path: String { options.path }
    public let backend: any VhostBackend
    public let kind: VhostBackendKind
    let memory: SharedMemory

    /// What the device offers, after the unsupported mask (`device_features`).
    public private(set) var deviceFeatures: VirtioFeatures = []
    /// What virtio-user itself claims on the device's behalf (`frontend_features`).
    public private(set) var frontendFeatures: VirtioFeatures = []
    /// What virtio-user refuses whatever the device offers (`unsupported_features`).
    public private(set) var unsupportedFeatures: VirtioFeatures = []
    /// The negotiated set (`features`).
    public private(set) var features: VirtioFeatures = []

    public private(set) var mac: [UInt8] = []
    public private(set) var macSpecified = false
    public private(set) var maxQueuePairs = 1
    /// Pairs currently enabled (`queue_pairs`).
    public private(set) var queuePairs = 1
    public private(set) var status: DeviceStatus = []
    public private(set) var started = false

    public private(set) var kickFDs: [EventFD] = []
    public private(set) var callFDs: [EventFD] = []
    /// The driver side of each vring, RX at 2·pair and TX at 2·pair+1. Allocated at
    /// FEATURES_OK, when the ring flags are known. Workers hold these pointers.
    public private(set) var rings: [VirtqueueRing] = []
    private var ringMemory: [UnsafeMutableRawPointer] = []
    /// INDIRECT_DESC tables per TX vring (index = pair), carved at init when the device offers
    /// the feature and the options accept it; attached to the rings at FEATURES_OK.
    private var indirectTableMemory: [UnsafeMutableRawPointer] = []

    /// The control queue is claimed (`cq`), explicitly or because of multi-queue.
    public private(set) var controlQueue = false
    /// The driver side of the control virtqueue (vring 2 × max pairs), which virtio-user
    /// emulates: the backend never sees it. Built at FEATURES_OK when CTRL_VQ is negotiated.
    public private(set) var controlRing: VirtqueueRing?
    private var controlRingMemory: UnsafeMutableRawPointer?
    private var packedControlEmulator: PackedControlQueueEmulator?
    /// Where the driver builds each command: header, data, then the status byte.
    private var controlBuffer: UnsafeMutableRawPointer?
    private var controlEmulator: SplitControlQueueEmulator?
    /// The device's own control queue, when it has one (vDPA); commands are mirrored there.
    public var shadowControlQueue: (any ShadowControlQueue)?
    /// Control commands handled, and malformed chains rejected, by the emulated queue.
    public private(set) var controlCommandsHandled = 0
    public var controlChainsRejected: UInt64 {
        (controlEmulator?.malformedChains ?? 0) + (packedControlEmulator?.malformedChains ?? 0)
    }
    /// Whether the rings are packed (RING_PACKED negotiated). Known from FEATURES_OK.
    public var usesPackedRings: Bool { features.contains(.ringPacked) }

    /// Entries in the control virtqueue. Commands are sent one at a time, so few are needed.
    public static let controlQueueSize = 64
    static let controlBufferSize = 2 + SplitControlQueueEmulator.maxDataBytes + 64

    public var vringCount: Int { 2 * maxQueuePairs }

    /// Opens the backend and runs the seed's `virtio_user_dev_init`.
    public init(options: VirtioUserOptions, memory: SharedMemory) throws {
        self.options = options
        self.memory = memory
        kind = try VhostBackendKind.detect(path: options.path)
        if options.server && kind != .vhostUser {
            throw VirtioUserError.serverModeNeedsVhostUser(path: options.path)
        }
        switch kind {
        case .vhostUser where options.server:
            backend = try VhostUserBackend(listeningAt: options.path, acceptTimeoutMs: options.acceptTimeoutMs)
        case .vhostUser:
            backend = try VhostUserBackend(connectingTo: options.path)
        case .vhostKernel:
            backend = try VhostKernelBackend(path: options.path, queuePairs: max(1, options.queues),
                                             interfaceName: options.iface)
        case .vhostVdpa:
            backend = try VhostVdpaBackend(path: options.path)
        }
        do {
            try initialize()
        } catch {
            backend.close()
            throw error
        }
    }

    private func initialize() throws {
        let size = options.queueSize
        guard size >= 1, size <= 32768 else {
            throw VirtioUserError.invalidState(path: path, detail: "queue_size \(size): must be 1 to 32768")
        }
        try backend.setOwner()
        unsupportedFeatures = VirtioFeatures(rawValue: ~(VirtioFeatures.virtioUserSupported.rawValue | backend.backendFeatures))
        deviceFeatures = VirtioFeatures(rawValue: try backend.getFeatures())
        unsupportedFeatures.formUnion(VirtioFeatures(rawValue: backend.unsupportedFeatures))

        initMAC()
        // DPDK gives the tap the port's MAC at the first start.
        (backend as? VhostKernelBackend)?.macAddress = mac
        if !initMaxQueuePairs() { unsupportedFeatures.insert(.mq) }
        // A vDPA device with its own control queue gets a shadow of the emulated one
        // (DPDK 23.03), which forces the control queue on.
        hasHardwareControlQueue = kind == .vhostVdpa && deviceFeatures.contains(.ctrlVq)
        guard options.queues <= maxQueuePairs else {
            throw VirtioUserError.tooManyQueuePairs(path: path, requested: options.queues, supported: maxQueuePairs)
        }
        controlQueue = options.cq || maxQueuePairs > 1 || hasHardwareControlQueue

        for _ in 0..<vringCount {
            kickFDs.append(try EventFD.make())
            callFDs.append(try EventFD.make())
        }

        if !options.mrgRxbuf { unsupportedFeatures.insert(.mrgRxbuf) }
        if !options.inOrder { unsupportedFeatures.insert(.inOrder) }
        if !options.packedVq { unsupportedFeatures.insert(.ringPacked) }
        if !options.indirect { unsupportedFeatures.insert(.ringIndirectDesc) }
        if macSpecified { frontendFeatures.insert(.mac) } else { unsupportedFeatures.insert(.mac) }
        if controlQueue {
            // The device needs to know nothing of the control queue: virtio-user emulates it.
            frontendFeatures.insert(.ctrlVq)
        } else {
            unsupportedFeatures.formUnion([.ctrlVq, .ctrlRx, .ctrlVlan, .guestAnnounce, .mq, .ctrlMacAddr])
        }
        // A vhost-user backend does not report STATUS; virtio-user provides it.
        if kind == .vhostUser { frontendFeatures.insert(.status) }

        frontendFeatures.subtract(unsupportedFeatures)
        deviceFeatures.subtract(unsupportedFeatures)

        // Split rings need a power of two (virtio 1.2 §2.7); packed rings take any size
        // (§2.8). Packed is used when asked for and offered.
        let packed = options.packedVq && deviceFeatures.contains(.ringPacked)
        guard packed || SplitRing.supportsQueueSize(size) else {
            throw VirtioUserError.invalidState(path: path, detail: "queue_size \(size): split rings need a power of two from 1 to 32768" + (options.packedVq ? " (the backend does not offer packed rings)" : ""))
        }

        // Ring memory is laid out now, room for either kind; the rings themselves are built
        // at FEATURES_OK, when the kind is known.
        let ringBytes = max(SplitRing.memorySize(queueSize: size), PackedRing.memorySize(queueSize: size))
        for _ in 0..<vringCount {
            ringMemory.append(try memory.allocate(bytes: ringBytes, alignment: SplitRingLayout.alignment))
        }
        if controlQueue {
            controlRingMemory = try memory.allocate(bytes: max(SplitRing.memorySize(queueSize: Self.controlQueueSize),
                                                               PackedRing.memorySize(queueSize: Self.controlQueueSize)),
                                                    alignment: SplitRingLayout.alignment)
            controlBuffer = try memory.allocate(bytes: Self.controlBufferSize, alignment: 64)
        }
        if hasHardwareControlQueue, let vdpa = backend as? VhostVdpaBackend {
            let ring = try memory.allocate(bytes: SplitRingLayout.totalSize(queueSize: VhostVdpaShadowControlQueue.defaultQueueSize),
                                           alignment: SplitRingLayout.alignment)
            let buffer = try memory.allocate(bytes: VhostVdpaShadowControlQueue.defaultBufferSize, alignment: 64)
            shadowControlQueue = try VhostVdpaShadowControlQueue(backend: vdpa, vringIndex: 2 * maxQueuePairs,
                                                                 ringMemory: ring, buffer: buffer)
        }
        // Indirect tables live in the same shared memory: the device translates a table's
        // address through the memory table like any buffer's. Only when the feature can be
        // negotiated, and after everything the port cannot do without: without room for them
        // the feature is refused, not the port.
        if deviceFeatures.contains(.ringIndirectDesc) {
            // For the pairs asked for; a TX ring without tables posts every chain direct.
            let pairs = min(maxQueuePairs, max(1, options.queues))
            let stride = Self.indirectTableStride(queueSize: size)
            // One block, so a refusal leaves the memory untouched.
            if let block = try? memory.allocate(bytes: stride * pairs, alignment: 64) {
                indirectTableMemory = (0..<pairs).map { block + $0 * stride }
            } else {
                FerryLog.warning("\(path): no shared memory left for indirect descriptor tables (\(stride * pairs) bytes); INDIRECT_DESC refused")
                unsupportedFeatures.insert(.ringIndirectDesc)
                deviceFeatures.remove(.ringIndirectDesc)
            }
        }
        FerryLog.info("\(path): \(kind) backend, device features \(deviceFeatures), \(maxQueuePairs) queue pair(s) max")
    }

    /// The seed's `virtio_user_dev_init_mac`: the configured MAC is written to the device when
    /// it can take one; otherwise the device's; otherwise a random, locally administered one.
    private func initMAC() {
        if let configured = options.mac {
            mac = configured
            macSpecified = true
            if deviceFeatures.contains(.mac) {
                try? backend.setConfig(offset: UInt32(VirtioNetConfig.macOffset), bytes: configured)
                if let read = try? backend.getConfig(offset: UInt32(VirtioNetConfig.macOffset), size: 6),
                   read.count == 6, read != configured {
                    FerryLog.info("\(path): device MAC update failed")
                }
            }
        } else if deviceFeatures.contains(.mac),
                  let read = try? backend.getConfig(offset: UInt32(VirtioNetConfig.macOffset), size: 6),
                  read.count == 6 {
            mac = read
            macSpecified = true
        } else {
            var random = (0..<6).map { _ in UInt8.random(in: 0...255) }
            random[0] = (random[0] & 0xfe) | 0x02 // unicast, locally administered
            mac = random
            FerryLog.info("\(path): no MAC in config or device, using random \(Self.format(mac: mac))")
        }
    }

    /// The seed's `virtio_user_dev_init_max_queue_pairs`. Returns false when MQ must be masked.
    private func initMaxQueuePairs() -> Bool {
        // Masked first: a vhost-user backend without the MQ protocol feature cannot carry more
        // than one pair, whatever its feature bits say.
        guard deviceFeatures.subtracting(unsupportedFeatures).contains(.mq) else {
            maxQueuePairs = 1
            return true
        }
        do {
            let bytes = try backend.getConfig(offset: UInt32(VirtioNetConfig.maxVirtqueuePairsOffset), size: 2)
            guard bytes.count == 2 else { maxQueuePairs = 1; return false }
            let value = Int(bytes[0]) | Int(bytes[1]) << 8
            // Untrusted: 1...0x8000 is what the spec allows (virtio 1.2 §5.1.4).
            guard value >= 1 && value <= 0x8000 else {
                FerryLog.error("\(path): device advertises \(value) queue pairs; disabling MQ")
                maxQueuePairs = 1
                return false
            }
            maxQueuePairs = value
        } catch VhostError.notSupported {
            maxQueuePairs = max(1, options.queues)
        } catch {
            FerryLog.error("\(path): failed to get max queue pairs from device: \(error)")
            maxQueuePairs = 1
            return false
        }
        return true
    }

    // MARK: - Driver status

    /// Resets, then ACK, DRIVER and FEATURES_OK, as virtio-net's probe does. Builds the rings.
    public func negotiate() throws {
        try setStatus([])
        try setStatus([.acknowledge])
        try setStatus([.acknowledge, .driver])
        let host = deviceFeatures.union(frontendFeatures)
        features = host.intersection(Self.driverFeatures)
        try setStatus([.acknowledge, .driver, .featuresOK])
        if let reported = try? readStatus(), !reported.contains(.featuresOK) {
            throw VirtioUserError.featuresRejected(path: path, status: reported.rawValue)
        }
        buildRings()
    }

    /// DRIVER_OK: shares memory, programs every vring and enables pair 0. RX rings should be
    /// filled before this, so the backend finds buffers as soon as it sees the kick fd.
    ///
    /// Then the status is read back: a device may refuse DRIVER_OK (FAILED or NEEDS_RESET).
    /// The read also orders what follows: DPDK's vhost answers SET_STATUS before it runs its
    /// `new_device` callback, but handles one message at a time, so the GET_STATUS reply means
    /// the backend is ready to forward. Without it the first `tx_first` burst races the
    /// backend and is dropped.
    public func start() throws {
        try setStatus([.acknowledge, .driver, .featuresOK, .driverOK])
        if let reported = try? readStatus(),
           reported.contains(.failed) || reported.contains(.deviceNeedsReset) {
            throw VirtioUserError.driverRejected(path: path, status: reported.rawValue)
        }
        // The operator's MAC reaches a device that filters on it (vDPA) through the control
        // queue, and so through the shadow queue to the device itself.
        if let configured = options.mac, features.contains(.ctrlMacAddr), controlRing != nil {
            if (try? sendControlCommand(.macAddrSet(configured))) != VirtioNetControl.ackOK {
                FerryLog.warning("\(path): the device refused MAC \(Self.format(mac: configured))")
            }
        }
    }

    /// The seed's `virtio_user_dev_set_status`, with the side effects of virtio_user_ethdev's
    /// `virtio_user_set_status`: FEATURES_OK sets features, DRIVER_OK starts, 0 resets.
    public func setStatus(_ new: DeviceStatus) throws {
        let old = status
        if new.contains(.featuresOK) && !old.contains(.featuresOK) {
            try setFeatures()
        }
        if new.contains(.driverOK) {
            try startDevice()
        } else if new.isEmpty {
            _ = try? stop()
        }
        status = new
        // vhost-user: until FEATURES_OK we do not know whether the backend has STATUS, so the
        // status is not sent (DPDK's vhost_user_set_status does the same).
        guard kind != .vhostUser || new.contains(.featuresOK) else { return }
        do {
            try backend.setStatus(new.rawValue)
        } catch VhostError.notSupported {
        }
    }

    /// GET_STATUS where the backend has it.
    public func readStatus() throws -> DeviceStatus {
        guard kind != .vhostUser || status.contains(.featuresOK) else { return status }
        do {
            return DeviceStatus(rawValue: try backend.getStatus())
        } catch VhostError.notSupported {
            return status
        }
    }

    /// The seed's `virtio_user_dev_set_features`.
    private func setFeatures() throws {
        for i in 0..<vringCount {
            try backend.setVringCall(index: UInt32(i), fd: callFDs[i].fd)
        }
        try vdpaShadow?.setCall()
        var wire = features
        wire.remove(.mac)
        if !hasHardwareControlQueue { wire.remove(.ctrlVq) }
        wire.remove(.status)
        // Keep the transport's own bits the device offered (PROTOCOL_FEATURES for vhost-user).
        let transportBits = backend.backendFeatures & rawDeviceOffer
        try backend.setFeatures(wire.rawValue | transportBits)
        FerryLog.info("\(path): set features 0x\(String(wire.rawValue | transportBits, radix: 16)) (\(features))")
    }

    /// The device has a control queue of its own (vDPA with CTRL_VQ): CTRL_VQ is then kept in
    /// SET_FEATURES and accepted commands are mirrored to it. vhost-user and vhost-kernel
    /// backends never have one.
    public private(set) var hasHardwareControlQueue = false

    private var vdpaShadow: VhostVdpaShadowControlQueue? { shadowControlQueue as? VhostVdpaShadowControlQueue }

    /// The device's offer after the masks; transport bits (bit 30) survive the mask because
    /// `unsupportedFeatures` excludes the backend's own features.
    private var rawDeviceOffer: UInt64 { deviceFeatures.rawValue }

    private func buildRings() {
        guard rings.isEmpty else { return }
        let size = UInt16(truncatingIfNeeded: options.queueSize)
        let eventIdx = features.contains(.ringEventIdx), inOrder = features.contains(.inOrder)
        for i in 0..<vringCount {
            let ring = Self.makeRing(packed: usesPackedRings, memory: ringMemory[i], queueSize: size,
                                     eventIdx: eventIdx, inOrder: inOrder)
            // Ferry polls: ask the device not to interrupt.
            ring.disableInterrupts()
            // TX vrings (odd) post chained frames through indirect tables when negotiated.
            if features.contains(.ringIndirectDesc), i % 2 == 1, i / 2 < indirectTableMemory.count {
                ring.attachIndirect(tables: indirectTableMemory[i / 2], maxSegments: Self.indirectMaxSegments)
            }
            rings.append(ring)
        }
        if features.contains(.ctrlVq), let memoryStart = controlRingMemory {
            let ring = Self.makeRing(packed: usesPackedRings, memory: memoryStart, queueSize: UInt16(Self.controlQueueSize),
                                     eventIdx: false, inOrder: false)
            controlRing = ring
            let shared = memory
            let translate: (UInt64, Int) -> UnsafeMutableRawPointer? = { address, length in
                guard shared.contains(address: address, length: length) else { return nil }
                return UnsafeMutableRawPointer(bitPattern: UInt(address))
            }
            if usesPackedRings {
                packedControlEmulator = PackedControlQueueEmulator(queueSize: Self.controlQueueSize, desc: ring.descTable,
                                                                   translate: translate)
            } else {
                controlEmulator = SplitControlQueueEmulator(queueSize: Self.controlQueueSize, desc: ring.descTable,
                                                            avail: ring.availRing, used: ring.usedRing, translate: translate)
            }
        }
    }

    private static func makeRing(packed: Bool, memory: UnsafeMutableRawPointer, queueSize: UInt16,
                                 eventIdx: Bool, inOrder: Bool) -> VirtqueueRing {
        if packed {
            let r = UnsafeMutablePointer<PackedRing>.allocate(capacity: 1)
            r.initialize(to: PackedRing(memory: memory, queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder))
            return .packed(r)
        }
        let r = UnsafeMutablePointer<SplitRing>.allocate(capacity: 1)
        r.initialize(to: SplitRing(memory: memory, queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder))
        return .split(r)
    }

    // MARK: - Control queue

    /// Sends a control command the way a virtio-net driver does: a chain of header, data and
    /// status on the control virtqueue, then a notify. virtio-user intercepts the notify and
    /// handles the queue at once (the seed's `virtio_user_handle_cq`), so the ack is there on
    /// return. Returns VIRTIO_NET_OK (0) or VIRTIO_NET_ERR (1).
    public func sendControlCommand(_ command: VirtioNetControlCommand) throws -> UInt8 {
        guard let ring = controlRing, let buffer = controlBuffer else {
            throw VirtioUserError.invalidState(path: path, detail: "no control queue (CTRL_VQ not negotiated)")
        }
        let bytes = command.encoded
        guard bytes.count <= Self.controlBufferSize - 1 else {
            throw VirtioUserError.invalidState(path: path, detail: "control command too large (\(bytes.count) bytes)")
        }
        // SAFETY: the buffer was carved with controlBufferSize bytes; bytes.count + 1 fits.
        buffer.copyMemory(from: bytes, byteCount: bytes.count)
        let status = buffer + (Self.controlBufferSize - 1)
        status.storeBytes(of: 0xff, as: UInt8.self)
        let base = UInt64(UInt(bitPattern: buffer))
        var segments = [RingSegment(address: base, length: UInt32(VirtioNetControl.headerSize), deviceWritable: false)]
        if !command.data.isEmpty {
            segments.append(RingSegment(address: base + UInt64(VirtioNetControl.headerSize),
                                        length: UInt32(command.data.count), deviceWritable: false))
        }
        segments.append(RingSegment(address: UInt64(UInt(bitPattern: status)), length: 1, deviceWritable: true))
        let added = segments.withUnsafeBufferPointer { chain in
            ring.with({ $0.pointee.addChain(chain, cookie: 0) }, packed: { $0.pointee.addChain(chain, cookie: 0) })
        }
        guard added else { throw VirtioUserError.invalidState(path: path, detail: "control queue full") }
        ring.with({ $0.pointee.publish() }, packed: { $0.pointee.publish() })
        notifyControlQueue()
        var cookie: UInt32 = 0, length: UInt32 = 0
        let completed = ring.with({ $0.pointee.dequeueUsed(cookies: &cookie, lengths: &length, max: 1) },
                                  packed: { $0.pointee.dequeueUsed(cookies: &cookie, lengths: &length, max: 1) })
        guard completed == 1, length >= 1 else {
            throw VirtioUserError.invalidState(path: path, detail: "control command got no answer")
        }
        return status.load(as: UInt8.self)
    }

    /// The driver's notify on the control queue: virtio-user handles it synchronously.
    public func notifyControlQueue() {
        if var emulator = controlEmulator {
            emulator.process { command in self.handleControlCommand(command) }
            controlEmulator = emulator
        }
        if var emulator = packedControlEmulator {
            emulator.process { command in self.handleControlCommand(command) }
            packedControlEmulator = emulator
        }
    }

    /// The seed's `virtio_user_handle_ctrl_msg`: MQ_VQ_PAIRS_SET enables or disables pairs,
    /// RX, MAC and VLAN commands are acknowledged, anything else is an error. A command that
    /// succeeded locally is replayed on the shadow control queue, whose ack then stands.
    public func handleControlCommand(_ command: VirtioNetControlCommand) -> UInt8 {
        controlCommandsHandled += 1
        var status = VirtioNetControl.ackErr
        switch command.class {
        case VirtioNetControl.Mq.class where command.command == VirtioNetControl.Mq.vqPairsSet:
            if let pairs = command.mqPairs {
                status = handleMQ(pairs: Int(pairs))
            }
        case VirtioNetControl.Rx.class, VirtioNetControl.Mac.class, VirtioNetControl.Vlan.class:
            status = VirtioNetControl.ackOK
        default:
            break
        }
        if status == VirtioNetControl.ackOK, let shadow = shadowControlQueue {
            do {
                status = try shadow.replay(command)
            } catch {
                FerryLog.error("\(path): shadow control queue: \(error)")
                status = VirtioNetControl.ackErr
            }
        }
        return status
    }

    /// Enables `pairs` queue pairs through the control queue, as the driver does at start.
    public func setQueuePairs(_ pairs: Int) throws {
        let status = try sendControlCommand(.mqPairsSet(UInt16(clamping: pairs)))
        guard status == VirtioNetControl.ackOK else {
            throw VirtioUserError.invalidState(path: path, detail: "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET \(pairs) refused")
        }
    }

    /// The seed's `virtio_user_start_device`.
    private func startDevice() throws {
        guard !started else { return }
        guard rings.count == vringCount else {
            throw VirtioUserError.invalidState(path: path, detail: "DRIVER_OK before FEATURES_OK")
        }
        try backend.setMemoryTable(memory.regions)
        for i in 0..<vringCount { try kickQueue(i) }
        try backend.enableQueuePair(0, enable: true)
        try vdpaShadow?.start(features: features.rawValue)
        queuePairs = 1
        started = true
    }

    /// The seed's `virtio_user_kick_queue`: NUM, BASE, ADDR, then KICK last.
    private func kickQueue(_ index: Int) throws {
        let ring = rings[index]
        let i = UInt32(index)
        try backend.setVringNum(VhostVringState(index: i, num: UInt32(ring.queueSize)))
        // The seed sends 0 (split) or 1 << 15 (packed) for a fresh ring. Ferry sends where the
        // device must resume, which is the same on a fresh ring and, after a reconnect, right
        // after the last buffer the device returned.
        try backend.setVringBase(VhostVringState(index: i, num: ring.resumeBase))
        try backend.setVringAddr(VhostVringAddr(
            index: i,
            descUserAddr: UInt64(UInt(bitPattern: ring.descTable)),
            usedUserAddr: UInt64(UInt(bitPattern: ring.usedRing)),
            availUserAddr: UInt64(UInt(bitPattern: ring.availRing))))
        try backend.setVringKick(index: i, fd: kickFDs[index].fd)
    }

    /// The seed's `virtio_user_handle_mq`: enables the first `pairs` pairs and disables the
    /// rest. Returns the control-queue ack (0 OK, 1 ERR).
    @discardableResult
    public func handleMQ(pairs: Int) -> UInt8 {
        guard pairs >= 1, pairs <= maxQueuePairs else {
            FerryLog.error("\(path): multi-queue config \(pairs), but only \(maxQueuePairs) supported")
            return 1
        }
        var failed = false
        for i in 0..<pairs where (try? backend.enableQueuePair(i, enable: true)) == nil { failed = true }
        for i in pairs..<maxQueuePairs where (try? backend.enableQueuePair(i, enable: false)) == nil { failed = true }
        queuePairs = pairs
        // As after DRIVER_OK: the status read-back orders what follows after the backend has
        // applied the enables (DPDK's vhost runs its queue-state callback while handling
        // them), so frames sent on a new pair right away are not dropped.
        _ = try? readStatus()
        return failed ? 1 : 0
    }

    /// The seed's `virtio_user_stop_device`: disables every pair, then GET_VRING_BASE per
    /// vring. Returns each vring's base: the device's next avail index.
    @discardableResult
    public func stop() throws -> [UInt32] {
        guard started else { return [] }
        for i in 0..<maxQueuePairs { try backend.enableQueuePair(i, enable: false) }
        try vdpaShadow?.stop()
        var bases: [UInt32] = []
        for i in 0..<vringCount { bases.append(try backend.getVringBase(index: UInt32(i))) }
        started = false
        return bases
    }

    /// The seed's memory event callback: when Ferry's shared memory changes, pause the active
    /// pairs, send SET_MEM_TABLE again, and resume them.
    public func updateMemoryTable() throws {
        guard started else { return }
        let regions = memory.regions
        guard regions.count <= backend.maxMemoryRegions else {
            throw VhostError.tooManyRegions(path: path, count: regions.count, max: backend.maxMemoryRegions)
        }
        for i in 0..<queuePairs { try backend.enableQueuePair(i, enable: false) }
        try backend.setMemoryTable(regions)
        for i in 0..<queuePairs { try backend.enableQueuePair(i, enable: true) }
    }

    /// Marks the device stopped without talking to the backend (it has gone away).
    public func markBackendLost() {
        started = false
    }

    /// Waits up to `timeoutMs` for the backend to come back (server mode: it connects again;
    /// client mode: Ferry connects again), then runs the seed's
    /// `virtio_user_dev_server_reconnect`. Returns false when the backend is not back yet.
    ///
    /// The sequence: SET_OWNER (the vhost-user spec opens every session with it; DPDK's
    /// reconnect skips it and DPDK's vhost accepts either), reset, ACK, DRIVER, the features
    /// again with the same masks, FEATURES_OK, DRIVER_OK, then the pairs that were active.
    ///
    /// What is guaranteed, on split and packed rings alike: the rings keep all of Ferry's
    /// state (avail and used positions, wrap counters, buffer ids), and each vring is
    /// re-programmed with SET_VRING_BASE = where the device must resume (`resumeBase`: right
    /// after the last buffer it returned). So every buffer Ferry still owns stays on its ring
    /// and is eventually returned. DPDK instead resets packed rings and drops what is in
    /// flight. An RX buffer the device had filled but not yet
    /// marked used is filled again (that frame is lost in the backend, not in Ferry); a TX
    /// frame it had sent but not marked used is sent again.
    public func reconnect(timeoutMs: Int, beforeRings: () -> Void = {}) throws -> Bool {
        guard let user = backend as? VhostUserBackend else {
            throw VirtioUserError.invalidState(path: path, detail: "reconnect needs a vhost-user backend")
        }
        do {
            if user.isServer {
                try user.acceptAgain(timeoutMs: timeoutMs)
            } else {
                try user.connectAgain()
            }
        } catch VhostError.timeout, VhostError.backendMissing {
            return false
        }
        started = false
        status = []
        beforeRings()
        let activePairs = queuePairs
        try backend.setOwner()
        try setStatus([])
        try setStatus([.acknowledge])
        try setStatus([.acknowledge, .driver])
        var offered = VirtioFeatures(rawValue: try backend.getFeatures())
        offered.subtract(unsupportedFeatures)
        offered.subtract(VirtioFeatures(rawValue: backend.unsupportedFeatures))
        deviceFeatures = offered
        let renegotiated = features.intersection(deviceFeatures.union(frontendFeatures))
        if renegotiated != features {
            FerryLog.warning("\(path): backend now offers less: features \(features) become \(renegotiated)")
            throw VirtioUserError.invalidState(path: path, detail: "backend dropped features Ferry's rings were built with")
        }
        try setStatus([.acknowledge, .driver, .featuresOK])
        if let reported = try? readStatus(), !reported.contains(.featuresOK) {
            throw VirtioUserError.featuresRejected(path: path, status: reported.rawValue)
        }
        try start()
        if activePairs > 1 {
            guard handleMQ(pairs: activePairs) == VirtioNetControl.ackOK else {
                throw VirtioUserError.invalidState(path: path, detail: "could not re-enable \(activePairs) queue pairs")
            }
        }
        return true
    }

    /// Closes the backend and the notifiers, and frees the rings' side tables. Ring and
    /// buffer memory belongs to `SharedMemory` and outlives the device.
    public func close() {
        vdpaShadow?.close()
        shadowControlQueue = nil
        backend.close()
        for fd in kickFDs { fd.close() }
        for fd in callFDs { fd.close() }
        kickFDs = []
        callFDs = []
        for ring in rings + (controlRing.map { [$0] } ?? []) { ring.deallocate() }
        rings = []
        controlRing = nil
        controlEmulator = nil
        packedControlEmulator = nil
    }

    deinit {
        if !rings.isEmpty || !kickFDs.isEmpty { close() }
    }

    public static func format(mac: [UInt8]) -> String {
        mac.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
}
