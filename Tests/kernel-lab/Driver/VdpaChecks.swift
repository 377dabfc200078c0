import Vhost
import Virtio

/// vhost-vdpa against vdpa_sim_net, Ferry's side: config space, IOTLB mapping, and frames to
/// the device's own MAC looped back byte-identical (vdpa_sim_net drops other unicast frames).
enum VdpaChecks {
    static func loopback(path: String, mac: [UInt8], count: Int, log: @escaping (String) -> Void) throws {
        let backend = try VhostVdpaBackend(path: path)
        defer { backend.close() }
        log("vDPA device id \(backend.deviceID), \(backend.virtqueueCount.map(String.init) ?? "?") virtqueues, ring max \(backend.maxQueueSize.map(String.init) ?? "?"), config \(backend.configSize.map(String.init) ?? "?") bytes")

        // Config space: the MAC given to `vdpa dev add`, LINK_UP, and a SET_CONFIG round trip.
        let configMAC = try backend.getConfig(offset: UInt32(VirtioNetConfig.macOffset), size: 6)
        guard configMAC == mac else {
            throw LabError.failed("config MAC \(hex(configMAC)), expected \(hex(mac))")
        }
        let linkStatus = try backend.getConfig(offset: UInt32(VirtioNetConfig.statusOffset), size: 2)
        guard linkStatus == [UInt8(VirtioNetConfig.statusLinkUp), 0] else {
            throw LabError.failed("config status \(hex(linkStatus)), expected LINK_UP")
        }
        let probe: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x42]
        try backend.setConfig(offset: UInt32(VirtioNetConfig.macOffset), bytes: probe)
        guard try backend.getConfig(offset: UInt32(VirtioNetConfig.macOffset), size: 6) == probe else {
            throw LabError.failed("SET_CONFIG of the MAC did not read back")
        }
        try backend.setConfig(offset: UInt32(VirtioNetConfig.macOffset), bytes: mac)
        log("config: MAC \(hex(mac)), status LINK_UP, SET_CONFIG reads back")

        let port = try LabPort(backend: backend, pairs: 1, log: log)
        try port.start(wanted: VirtioFeatures([.version1, .mac, .mrgRxbuf]).rawValue)
        guard backend.negotiatedBackendFeatures == VhostBackendFeatures.ferrySupported else {
            throw LabError.failed("backend features 0x\(String(backend.negotiatedBackendFeatures.rawValue, radix: 16)), expected IOTLB_MSG_V2|IOTLB_BATCH")
        }
        let kinds = backend.sentIotlbMessages.map(\.kind)
        guard kinds == [.batchBegin, .invalidate, .update, .batchEnd] else {
            throw LabError.failed("IOTLB sequence \(kinds)")
        }
        log("IOTLB: \(kinds.map { "\($0)" }.joined(separator: ", ")); status 0x\(String(try backend.getStatus(), radix: 16))")

        // Frames to the device's MAC come back; every fifth goes to another unicast MAC and is
        // dropped by the simulator's receive filter. That filter compares MACs with strncmp, so
        // it stops at the first zero byte: the stranger must differ before one.
        let stranger: [UInt8] = [0x06, 0x12, 0x34, 0x56, 0x78, 0x9a]
        var expected: [[UInt8]] = []
        var sent = 0
        var sentToOwn = 0
        var received = 0
        var seq: UInt32 = 0
        let deadline = Deadline(seconds: 60)
        while received < count {
            guard !deadline.expired else {
                throw LabError.failed("looped back \(received)/\(count) frames")
            }
            // At most 64 frames outstanding, so RX always has room for what comes back.
            while expected.count < 64 && sentToOwn < count {
                let toStranger = seq % 5 == 4
                let frame = LabFrames.make(seq: seq, tag: LabFrames.tagLoopback, queue: 0,
                                           destination: toStranger ? stranger : mac, source: LabFrames.ferryMAC)
                guard port.send(frame, pair: 0) else { break }
                if !toStranger {
                    expected.append(frame)
                    sentToOwn += 1
                }
                sent += 1
                seq += 1
            }
            var any = false
            for frame in port.receive(pair: 0) {
                any = true
                guard !expected.isEmpty else {
                    throw LabError.failed("an unexpected frame came back (\(frame.count) bytes)")
                }
                let want = expected.removeFirst()
                guard frame == want else {
                    throw LabError.failed("looped frame \(LabFrames.isLabFrame(frame) ? LabFrames.sequence(frame) : 0) differs from frame \(LabFrames.sequence(want)) sent (\(frame.count) vs \(want.count) bytes)")
                }
                received += 1
            }
            port.reclaimTx(pair: 0)
            if !any { yieldToDevice() }
        }
        log("looped back \(received)/\(count) frames byte-identical; \(sent - received) to another MAC dropped")

        let bases = try port.stop()
        guard bases[1] == UInt32(sent) else {
            throw LabError.failed("GET_VRING_BASE of TX is \(bases[1]), sent \(sent)")
        }
        log("GET_VRING_BASE after stop: \(bases.map(String.init).joined(separator: ","))")
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
}
