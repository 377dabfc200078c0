import Vhost
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// vhost-net + tap, Ferry's side. tap-peer (already bound to the interface) captures what Ferry
/// sends and then writes frames back; Ferry checks both directions, and GET_VRING_BASE.
enum KernelChecks {
    /// Sends `count` frames on every TX queue, then expects `expect` frames from the tap,
    /// spread over the RX queues however the tap steers them.
    static func traffic(iface: String, pairs: Int, count: Int, expect: Int, log: @escaping (String) -> Void) throws {
        let backend = try VhostKernelBackend(path: VhostKernelBackend.defaultPath, queuePairs: pairs, interfaceName: iface)
        defer { backend.close() }
        log("vhost-net: \(pairs) fd(s), tap \(backend.interfaceName), max \(backend.maxMemoryRegions) memory regions")
        guard backend.interfaceName == iface else {
            throw LabError.failed("tap opened as \(backend.interfaceName), asked for \(iface)")
        }
        backend.macAddress = LabFrames.ferryMAC
        let port = try LabPort(backend: backend, pairs: pairs, log: log)
        let wanted = VirtioFeatures([.version1, .mrgRxbuf, .mq]).rawValue
        try port.start(wanted: wanted)
        guard port.features & VirtioFeatures.version1.rawValue != 0 else {
            throw LabError.failed("vhost-net did not offer VERSION_1")
        }
        if pairs > 1 && port.features & VirtioFeatures.mq.rawValue == 0 {
            throw LabError.failed("a multi-queue tap should make the backend report MQ")
        }

        // Ferry -> tap.
        var seq: UInt32 = 0
        var sentPerQueue = [Int](repeating: 0, count: pairs)
        for q in 0..<pairs {
            for _ in 0..<count {
                let frame = LabFrames.make(seq: seq, tag: LabFrames.tagToTap, queue: UInt8(q),
                                           destination: LabFrames.peerMAC, source: LabFrames.ferryMAC)
                let deadline = Deadline(seconds: 10)
                while !port.send(frame, pair: q) {
                    guard !deadline.expired else { throw LabError.failed("TX queue \(q) stayed full") }
                    yieldToDevice()
                }
                sentPerQueue[q] += 1
                seq += 1
            }
        }
        let txDeadline = Deadline(seconds: 20)
        while true {
            var inFlight = 0
            for q in 0..<pairs {
                port.reclaimTx(pair: q)
                inFlight += port.txInFlight(pair: q)
            }
            if inFlight == 0 { break }
            guard !txDeadline.expired else { throw LabError.failed("vhost-net left \(inFlight) TX buffers incomplete") }
            yieldToDevice()
        }
        log("sent \(seq) frames (\(sentPerQueue.map(String.init).joined(separator: "+")) per queue), all completed")

        // tap -> Ferry.
        var received = 0
        var perQueue = [Int](repeating: 0, count: pairs)
        var seen = Set<UInt32>()
        var other = 0
        let rxDeadline = Deadline(seconds: 30)
        while received < expect {
            guard !rxDeadline.expired else {
                throw LabError.failed("received \(received)/\(expect) frames from the tap (\(other) other frames)")
            }
            var any = false
            for q in 0..<pairs {
                for frame in port.receive(pair: q) {
                    any = true
                    guard LabFrames.isLabFrame(frame), frame.count >= 20, frame[18] == LabFrames.tagFromTap else {
                        other += 1
                        continue
                    }
                    let s = LabFrames.sequence(frame)
                    let want = LabFrames.make(seq: s, tag: LabFrames.tagFromTap, queue: 0,
                                              destination: LabFrames.ferryMAC, source: LabFrames.peerMAC)
                    guard frame == want else {
                        throw LabError.failed("frame \(s) from the tap differs from what tap-peer wrote (\(frame.count) bytes, expected \(want.count))")
                    }
                    guard seen.insert(s).inserted else { throw LabError.failed("frame \(s) from the tap arrived twice") }
                    received += 1
                    perQueue[q] += 1
                }
            }
            if !any { yieldToDevice() }
        }
        log("received \(received)/\(expect) frames from the tap, byte-identical (\(perQueue.map(String.init).joined(separator: "+")) per queue, \(other) other)")

        // GET_VRING_BASE is the device's next avail index: on TX, every frame sent.
        let bases = try port.stop()
        for q in 0..<pairs where bases[2 * q + 1] != UInt32(sentPerQueue[q]) {
            throw LabError.failed("GET_VRING_BASE of TX vring \(2 * q + 1) is \(bases[2 * q + 1]), sent \(sentPerQueue[q])")
        }
        log("GET_VRING_BASE after stop: \(bases.map(String.init).joined(separator: ","))")
    }

    /// With no name the kernel picks tap%d; the interface exists while the port is open.
    static func defaultName(log: (String) -> Void) throws {
        let backend = try VhostKernelBackend()
        let name = backend.interfaceName
        log("tap%d resolved to \(name)")
        guard name.hasPrefix("tap"), Int(name.dropFirst(3)) != nil else {
            throw LabError.failed("default tap name \(name) is not tapN")
        }
        guard if_nametoindex(name) > 0 else { throw LabError.failed("interface \(name) does not exist") }
        try backend.setOwner()
        let features = try backend.getFeatures()
        guard features & VhostKernelFeatureBits.mq == 0 else {
            throw LabError.failed("a single-queue tap must not report MQ")
        }
        backend.close()
        do {
            _ = try backend.getFeatures()
            throw LabError.failed("GET_FEATURES after close() succeeded")
        } catch VhostError.closed {
        }
    }
}
