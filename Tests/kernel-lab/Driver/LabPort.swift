import CFerry
import Vhost
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A minimal virtio-net driver over one `VhostBackend`, for the kernel lab: Ferry's shared
/// memory, split rings and eventfds, driven in the order the seed's virtio_user_dev.c uses
/// (the order `VirtioUserDevice` follows):
///
/// SET_OWNER, GET_FEATURES; status reset, ACK, DRIVER; SET_VRING_CALL per vring;
/// SET_FEATURES; FEATURES_OK (read back); SET_MEM_TABLE; per vring NUM, BASE, ADDR, KICK;
/// enable the pairs; DRIVER_OK (read back). Stop: disable, GET_VRING_BASE per vring.
///
/// It drives the backend directly so the lab tests the transports on their own; the
/// backend-agnostic lifecycle is `VirtioUserDevice`'s, tested on the host.
final class LabPort {
    static let queueSize = 256
    static let headerSize = VirtioNetHeader.fullSize

    let backend: any VhostBackend
    let pairs: Int
    let memory: LabMemory
    var cache: LabBuffers
    private(set) var rings: [UnsafeMutablePointer<SplitRing>] = []
    private(set) var kicks: [LabEventFD] = []
    private(set) var calls: [LabEventFD] = []
    private(set) var features: UInt64 = 0
    private(set) var status: UInt8 = 0
    var log: (String) -> Void

    init(backend: any VhostBackend, pairs: Int, log: @escaping (String) -> Void) throws {
        self.backend = backend
        self.pairs = pairs
        self.log = log
        memory = try LabMemory(size: 16 << 20)
        cache = try LabBuffers(memory: memory, count: 2048)
        for _ in 0..<(2 * pairs) {
            let area = try memory.allocate(bytes: SplitRingLayout.totalSize(queueSize: Self.queueSize),
                                           alignment: SplitRingLayout.alignment)
            let ring = UnsafeMutablePointer<SplitRing>.allocate(capacity: 1)
            ring.initialize(to: SplitRing(memory: area, queueSize: UInt16(Self.queueSize), eventIdx: false, inOrder: false))
            ring.pointee.disableInterrupts()
            rings.append(ring)
            kicks.append(try LabEventFD())
            calls.append(try LabEventFD())
        }
    }

    deinit {
        for r in rings {
            r.pointee.deallocate()
            r.deinitialize(count: 1)
            r.deallocate()
        }
        for e in kicks + calls { e.close() }
    }

    /// Writes a status where the backend has one (vhost-kernel has none).
    func setStatus(_ new: UInt8) throws {
        status = new
        do { try backend.setStatus(new) } catch VhostError.notSupported {}
    }

    func readStatus() throws -> UInt8? {
        do { return try backend.getStatus() } catch VhostError.notSupported { return nil }
    }

    /// Negotiates `wanted` (intersected with the offer) and starts every pair. RX rings are
    /// filled before the rings are enabled, so the device has buffers from its first frame.
    /// `withCalls` runs with the SET_VRING_CALLs (before SET_FEATURES) and `withRings` after
    /// the data vrings are programmed and enabled (before DRIVER_OK): where a device's own
    /// control queue is set up.
    func start(wanted: UInt64, withCalls: () throws -> Void = {}, withRings: () throws -> Void = {}) throws {
        try backend.setOwner()
        let offered = try backend.getFeatures()
        features = offered & wanted
        log("features offered 0x\(String(offered, radix: 16)), driver takes 0x\(String(features, radix: 16))")
        try setStatus(0)
        try setStatus(DeviceStatus.acknowledge.rawValue)
        try setStatus(DeviceStatus([.acknowledge, .driver]).rawValue)
        for i in 0..<rings.count { try backend.setVringCall(index: UInt32(i), fd: calls[i].fd) }
        try withCalls()
        try backend.setFeatures(features)
        try setStatus(DeviceStatus([.acknowledge, .driver, .featuresOK]).rawValue)
        if let s = try readStatus(), s & DeviceStatus.featuresOK.rawValue == 0 {
            throw LabError.failed("device did not accept the features (status 0x\(String(s, radix: 16)))")
        }
        try backend.setMemoryTable(memory.regions)
        for i in 0..<rings.count {
            let ring = rings[i].pointee
            try backend.setVringNum(VhostVringState(index: UInt32(i), num: UInt32(Self.queueSize)))
            try backend.setVringBase(VhostVringState(index: UInt32(i), num: 0))
            try backend.setVringAddr(VhostVringAddr(index: UInt32(i),
                                                    descUserAddr: address(ring.descTable),
                                                    usedUserAddr: address(ring.usedRing),
                                                    availUserAddr: address(ring.availRing)))
            try backend.setVringKick(index: UInt32(i), fd: kicks[i].fd)
        }
        for p in 0..<pairs { fillRx(pair: p) }
        for p in 0..<pairs { try backend.enableQueuePair(p, enable: true) }
        try withRings()
        try setStatus(DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
        if let s = try readStatus() {
            guard s & DeviceStatus.driverOK.rawValue != 0, s & DeviceStatus.failed.rawValue == 0 else {
                throw LabError.failed("device did not accept DRIVER_OK (status 0x\(String(s, radix: 16)))")
            }
        }
    }

    /// Disables every pair and returns each vring's base (the device's next avail index).
    func stop() throws -> [UInt32] {
        for p in 0..<pairs { try backend.enableQueuePair(p, enable: false) }
        return try (0..<rings.count).map { try backend.getVringBase(index: UInt32($0)) }
    }

    /// Posts every free RX descriptor of `pair` with a whole buffer (header + data room).
    func fillRx(pair: Int) {
        let ring = rings[2 * pair]
        var posted = 0
        while ring.pointee.numFree > 0, let b = cache.get() {
            let ok = ring.pointee.addBuffer(address: cache.address(b) - UInt64(Self.headerSize),
                                            length: UInt32(Self.headerSize + LabBuffers.dataRoom),
                                            deviceWritable: true, cookie: b)
            if !ok { cache.put(b); break }
            posted += 1
        }
        ring.pointee.publish()
        if posted > 0 && ring.pointee.kickNeeded() { kicks[2 * pair].signal() }
    }

    /// Sends `frame` on pair `pair`'s TX ring with a zeroed 12-byte header. False when full.
    func send(_ frame: [UInt8], pair: Int) -> Bool {
        reclaimTx(pair: pair)
        let ring = rings[2 * pair + 1]
        guard frame.count <= LabBuffers.dataRoom, let b = cache.get() else { return false }
        let data = cache.data(b)
        // SAFETY: the header goes in the buffer's headroom (128 bytes), the frame in its data
        // room (checked above).
        memset(data - Self.headerSize, 0, Self.headerSize)
        frame.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        guard ring.pointee.addBuffer(address: cache.address(b) - UInt64(Self.headerSize),
                                     length: UInt32(Self.headerSize + frame.count), deviceWritable: false, cookie: b) else {
            cache.put(b)
            return false
        }
        ring.pointee.publish()
        if ring.pointee.kickNeeded() { kicks[2 * pair + 1].signal() }
        return true
    }

    /// Returns completed TX buffers to the cache; how many.
    @discardableResult
    func reclaimTx(pair: Int) -> Int {
        var cookies = [UInt32](repeating: 0, count: 64)
        var lengths = [UInt32](repeating: 0, count: 64)
        let n = rings[2 * pair + 1].pointee.dequeueUsed(cookies: &cookies, lengths: &lengths, max: 64)
        for i in 0..<n { cache.put(cookies[i]) }
        return n
    }

    /// TX chains still in flight on `pair`.
    func txInFlight(pair: Int) -> Int { rings[2 * pair + 1].pointee.inFlight }

    /// Received frames of `pair` (header stripped), refilling the ring.
    func receive(pair: Int) -> [[UInt8]] {
        var cookies = [UInt32](repeating: 0, count: 64)
        var lengths = [UInt32](repeating: 0, count: 64)
        let n = rings[2 * pair].pointee.dequeueUsed(cookies: &cookies, lengths: &lengths, max: 64)
        var frames: [[UInt8]] = []
        for i in 0..<n {
            let length = Int(lengths[i])
            if length > Self.headerSize {
                let data = cache.data(cookies[i])
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: min(length - Self.headerSize, LabBuffers.dataRoom))))
            }
            cache.put(cookies[i])
        }
        if n > 0 { fillRx(pair: pair) }
        return frames
    }

    private func address(_ p: UnsafeMutableRawPointer) -> UInt64 { UInt64(UInt(bitPattern: p)) }
}

enum LabError: Error, CustomStringConvertible {
    case failed(String)
    case usage(String)
    var description: String {
        switch self {
        case let .failed(s): return s
        case let .usage(s): return "usage: \(s)"
        }
    }
}

/// Monotonic deadline helper: every wait in the lab is bounded.
struct Deadline {
    let end: UInt64
    init(seconds: Double) { end = ferry_monotonic_ns() + UInt64(seconds * 1e9) }
    var expired: Bool { ferry_monotonic_ns() >= end }
}

/// Lets the vhost worker threads run: the guest has two vCPUs under TCG.
func yieldToDevice() { usleep(200) }
