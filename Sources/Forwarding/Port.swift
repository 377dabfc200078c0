import CFerry
import FerryConfig
import Virtio
import VirtioUser

/// A forwarding port: a virtio-user device, its queues and its link state.
///
/// Setup and teardown run on the control thread; the queues are handed to one worker each.
final class Port {
    let index: Int
    let config: PortConfig
    let device: VirtioUserDevice
    /// 1 while the backend is connected. Workers read it once per stream per loop.
    let link: UnsafeMutablePointer<UInt8>
    let macBytes: UnsafeMutablePointer<UInt8>
    let peerMacBytes: UnsafeMutablePointer<UInt8>
    private(set) var rxQueues: [UnsafeMutablePointer<RxQueue>] = []
    private(set) var txQueues: [UnsafeMutablePointer<TxQueue>] = []
    /// Frames Ferry put on a TX ring that the backend had not taken when it stopped.
    private(set) var txInFlightAtStop: UInt64 = 0
    /// Frames the backend put on an RX ring that Ferry had not read when it stopped.
    private(set) var rxUnreadAtStop: UInt64 = 0
    /// Times the link came back; stored for other threads, which read it in a stats snapshot.
    private let reconnectCount: UnsafeMutablePointer<UInt32>
    var reconnects: Int { Int(ferry_load_acquire_u32(reconnectCount)) }

    var queues: Int { config.queues }
    var isLinkUp: Bool { ferry_load_acquire_u8(link) != 0 }
    var mac: [UInt8] { device.mac }

    init(config: PortConfig, memory: SharedMemory, peerMAC: [UInt8]) throws {
        index = config.index
        self.config = config
        let options = VirtioUserOptions(path: config.path, queues: config.queues, queueSize: config.queueSize,
                                        mac: config.mac?.octets, server: config.server, mrgRxbuf: config.mrgRxbuf,
                                        inOrder: config.inOrder, packedVq: config.packedVq, cq: config.cq,
                                        iface: config.iface, indirect: config.indirect)
        device = try VirtioUserDevice(options: options, memory: memory)
        link = .allocate(capacity: 1)
        link.initialize(to: 0)
        reconnectCount = .allocate(capacity: 1)
        reconnectCount.initialize(to: 0)
        macBytes = .allocate(capacity: 6)
        peerMacBytes = .allocate(capacity: 6)
        peerMacBytes.initialize(from: peerMAC, count: 6)
    }

    deinit {
        for q in rxQueues { q.deallocate() }
        for q in txQueues {
            q.pointee.deallocate()
            q.deallocate()
        }
        link.deallocate()
        reconnectCount.deallocate()
        macBytes.deallocate()
        peerMacBytes.deallocate()
        device.close()
    }

    /// Negotiates features and builds the queues on the device's rings.
    func prepare(burst: Int, dataRoom: Int, maxFrameLength: Int = FerryConfiguration.largestFrame) throws {
        try device.negotiate()
        macBytes.initialize(from: device.mac, count: 6)
        let headerSize = VirtioNetHeader.size(for: device.features)
        let mergeable = device.features.contains(.mrgRxbuf)
        for q in 0..<queues {
            let rx = UnsafeMutablePointer<RxQueue>.allocate(capacity: 1)
            rx.initialize(to: RxQueue(ring: device.rings[2 * q], kickFD: device.kickFDs[2 * q], callFD: device.callFDs[2 * q],
                                      headerSize: headerSize, dataRoom: dataRoom, mergeable: mergeable, burst: burst,
                                      maxFrameLength: maxFrameLength))
            rxQueues.append(rx)
            let tx = UnsafeMutablePointer<TxQueue>.allocate(capacity: 1)
            // num_buffers on TX: left as received for software backends, which never read it;
            // cleared for vDPA, whose hardware may check it (virtio 1.2 §5.1.6.2.1).
            tx.initialize(to: TxQueue(ring: device.rings[2 * q + 1], kickFD: device.kickFDs[2 * q + 1],
                                      headerSize: headerSize, clearNumBuffers: device.kind == .vhostVdpa))
            txQueues.append(tx)
        }
        FerryLog.info("port \(index) (\(config.path)): \(device.usesPackedRings ? "packed" : "split") ring, queue_size \(config.queueSize), queues \(queues), mrg_rxbuf \(mergeable ? "on" : "off"), in_order \(device.features.contains(.inOrder) ? "on" : "off"), indirect \(device.features.contains(.ringIndirectDesc) ? "on" : "off"), MAC \(VirtioUserDevice.format(mac: device.mac))")
    }

    /// Fills every RX ring, then DRIVER_OK, then enables the configured pairs.
    func start(cache: inout PoolCache) throws {
        for rx in rxQueues { rx.pointee.refill(cache: &cache) }
        try device.start()
        if queues > 1 {
            // As a virtio-net driver does: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET on the control
            // queue, which virtio-user turns into SET_VRING_ENABLE per pair.
            try device.setQueuePairs(queues)
        }
        ferry_store_release_u8(link, 1)
    }

    /// What the control thread polls for this port's link going down: the backend connection,
    /// while the link is up and the transport has one.
    var linkFileDescriptor: Int32? { isLinkUp ? device.backend.peerFileDescriptor : nil }

    /// What the control thread polls for this port coming back without waiting: server mode's
    /// listening socket, while the link is down.
    var reconnectFileDescriptor: Int32? {
        !isLinkUp && config.server ? device.backend.reconnectFileDescriptor : nil
    }

    /// Takes the link down, with one log line, when the backend has gone: its connection hung
    /// up (`hungUp`, from poll), or it is closed. Returns true when the link just went down.
    ///
    /// A hang-up is trusted over `isPeerClosed`, whose peek sees bytes a hostile backend sent
    /// unasked before closing as a live connection.
    @discardableResult
    func checkLink(hungUp: Bool) -> Bool {
        guard isLinkUp, hungUp || device.backend.isPeerClosed() else { return false }
        ferry_store_release_u8(link, 0)
        device.markBackendLost()
        lastReconnectAttemptNs = 0
        FerryLog.warning("port \(index) (\(config.path)): link down: backend closed the connection")
        return true
    }

    /// Whether this port can come back by itself: server mode always (the backend connects
    /// again), client mode with `reconnect_ms`.
    var reconnects_enabled: Bool { config.server || config.reconnectMs > 0 }
    private var lastReconnectAttemptNs: UInt64 = 0

    /// When the next reconnect attempt is due, in monotonic ns: nil when none will be made,
    /// 0 when one is due as soon as there is something to accept (server mode). Client mode
    /// tries every `reconnect_ms`, from the link going down.
    var nextReconnectNs: UInt64? {
        guard !isLinkUp, reconnects_enabled else { return nil }
        if config.server { return 0 }
        return lastReconnectAttemptNs &+ UInt64(config.reconnectMs) * 1_000_000
    }

    /// Whether a reconnect attempt is due at `nowNs`. In server mode that is when the listening
    /// socket is readable (`connectable`), or always when there is no socket to watch.
    func reconnectDue(nowNs: UInt64, connectable: Bool) -> Bool {
        guard let next = nextReconnectNs else { return false }
        if config.server { return connectable || reconnectFileDescriptor == nil }
        return nowNs >= next
    }

    /// Tries to bring the link back (workers must have quiesced on this port). Logs one line
    /// when the link comes up. Failures leave the link down for a later attempt.
    func attemptReconnect(nowNs: UInt64, pool: PacketPool) {
        lastReconnectAttemptNs = nowNs
        do {
            guard try device.reconnect(timeoutMs: 0, beforeRings: {
                // The workers are quiesced on this port: settle what the old backend returned.
                let drained = self.device.rings.reduce(0) { $0 + $1.drainUsed(into: pool) }
                if drained > 0 {
                    FerryLog.info("port \(self.index) (\(self.config.path)): \(drained) buffers returned by the previous backend taken back")
                }
            }) else { return }
            ferry_store_release_u32(reconnectCount, UInt32(truncatingIfNeeded: reconnects + 1))
            ferry_store_release_u8(link, 1)
            FerryLog.info("port \(index) (\(config.path)): link up (reconnect \(reconnects))")
        } catch {
            device.markBackendLost()
            FerryLog.warning("port \(index) (\(config.path)): reconnect failed: \(error)")
        }
    }

    /// Stops the device (GET_VRING_BASE) and works out what was left in flight. Workers must
    /// have stopped.
    func stop() {
        guard isLinkUp else { return }
        ferry_store_release_u8(link, 0)
        do {
            let bases = try device.stop()
            guard bases.count >= 2 * queues else { return }
            for q in 0..<queues {
                let txRing = device.rings[2 * q + 1]
                // The TX base is the device's next avail position: what it consumed. The
                // backend is untrusted, so the answer is bounded by what Ferry has in flight.
                let notTaken = txRing.pendingAvail(deviceBase: bases[2 * q + 1])
                txInFlightAtStop += UInt64(min(notTaken, txRing.inFlight))
                rxUnreadAtStop += UInt64(device.rings[2 * q].pendingUsed())
            }
        } catch {
            FerryLog.warning("port \(index) (\(config.path)): stop: \(error)")
        }
    }
}
