import Vhost
import Virtio

/// The shadow control queue against vdpa_sim_net's own control queue (vring 2): a MAC set
/// through it changes the MAC in the device's config space and its receive filter; a command
/// the simulator rejects comes back as VIRTIO_NET_ERR; a queue the device ignores is a bounded
/// timeout, not a hang.
enum ShadowControlQueueChecks {
    static func run(path: String, mac: [UInt8], newMAC: [UInt8], log: @escaping (String) -> Void) throws {
        let backend = try VhostVdpaBackend(path: path)
        defer { backend.close() }
        let port = try LabPort(backend: backend, pairs: 1, log: log)
        let ringMemory = try port.memory.allocate(bytes: SplitRingLayout.totalSize(queueSize: VhostVdpaShadowControlQueue.defaultQueueSize),
                                                  alignment: SplitRingLayout.alignment)
        let buffer = try port.memory.allocate(bytes: VhostVdpaShadowControlQueue.defaultBufferSize, alignment: 64)
        let shadow = try VhostVdpaShadowControlQueue(backend: backend, vringIndex: 2 * port.pairs,
                                                     ringMemory: ringMemory, buffer: buffer)
        defer { shadow.close() }
        let wanted = VirtioFeatures([.version1, .mac, .ctrlVq, .ctrlMacAddr]).rawValue
        try port.start(wanted: wanted, withCalls: { try shadow.setCall() },
                       withRings: { try shadow.start(features: port.features) })
        guard port.features & VirtioFeatures.ctrlVq.rawValue != 0 else {
            throw LabError.failed("the device did not offer CTRL_VQ")
        }
        log("shadow control queue at vring \(shadow.vringIndex), features 0x\(String(port.features, radix: 16))")

        // MAC_ADDR_SET: acked, and visible in config space.
        let ack = try shadow.replay(.macAddrSet(newMAC))
        guard ack == VirtioNetControl.ackOK else { throw LabError.failed("MAC_ADDR_SET answered \(ack)") }
        let configMAC = try backend.getConfig(offset: UInt32(VirtioNetConfig.macOffset), size: 6)
        guard configMAC == newMAC else {
            throw LabError.failed("after MAC_ADDR_SET the config MAC is \(VdpaChecks.hex(configMAC)), expected \(VdpaChecks.hex(newMAC))")
        }
        log("MAC_ADDR_SET \(VdpaChecks.hex(newMAC)): OK, config space now \(VdpaChecks.hex(configMAC))")

        // The receive filter follows: frames to the new MAC loop back, to the old one not.
        let toOld = LabFrames.make(seq: 1, tag: LabFrames.tagLoopback, queue: 0, destination: mac, source: LabFrames.ferryMAC)
        let toNew = LabFrames.make(seq: 2, tag: LabFrames.tagLoopback, queue: 0, destination: newMAC, source: LabFrames.ferryMAC)
        guard port.send(toOld, pair: 0), port.send(toNew, pair: 0) else { throw LabError.failed("TX ring full") }
        var back: [[UInt8]] = []
        let deadline = Deadline(seconds: 10)
        while port.txInFlight(pair: 0) > 0 || back.isEmpty {
            guard !deadline.expired else { throw LabError.failed("nothing came back after the MAC change") }
            back += port.receive(pair: 0)
            port.reclaimTx(pair: 0)
            yieldToDevice()
        }
        back += port.receive(pair: 0)
        guard back == [toNew] else {
            throw LabError.failed("after the MAC change \(back.count) frame(s) came back; expected only the one to the new MAC")
        }
        log("receive filter: the frame to the new MAC looped back, the one to the old MAC was dropped")

        // RX_PROMISC: vdpa_sim_net handles only MAC_ADDR_SET, so this must be an error.
        let promisc = try shadow.replay(.rxMode(VirtioNetControl.Rx.promisc, on: true))
        guard promisc == VirtioNetControl.ackErr else {
            throw LabError.failed("RX_PROMISC answered \(promisc), the simulator rejects it")
        }
        log("RX_PROMISC on: VIRTIO_NET_ERR, as the simulator answers")

        // With the device's control queue disabled nothing answers: a timeout, bounded.
        try backend.setVringEnable(index: UInt32(shadow.vringIndex), enable: false)
        shadow.timeoutMs = 300
        do {
            _ = try shadow.replay(.macAddrSet(mac))
            throw LabError.failed("a command on a disabled control queue was answered")
        } catch VhostError.timeout(_, let what) {
            log("disabled control queue: timed out (\(what))")
        }
        guard shadow.stalled else { throw LabError.failed("the queue should refuse commands after a timeout") }
    }
}
