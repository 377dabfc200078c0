import FerryTestSupport
import Virtio

/// The device side of either ring kind behind one face, so one reference model drives both.
protocol DeviceDouble {
    /// Takes the next chain the driver made available, or nil.
    mutating func take() throws -> DeviceChain?
    /// Returns one chain by id (any outstanding chain without IN_ORDER).
    mutating func complete(id: UInt16, length: UInt32)
    /// IN_ORDER batching: one used entry naming the last of the `count` oldest outstanding
    /// chains, completing all of them (split: one used ring entry, used->idx advanced by
    /// `count`; packed: one used descriptor that skips the whole batch).
    mutating func completeBatch(lastID: UInt16, count: Int, length: UInt32)
}

extension DeviceSplitRing: DeviceDouble {
    mutating func take() throws -> DeviceChain? { try popAvail() }
    mutating func complete(id: UInt16, length: UInt32) { pushUsed(id: id, length: length) }
    mutating func completeBatch(lastID: UInt16, count: Int, length: UInt32) {
        pushUsedBatch(lastID: lastID, count: count, length: length)
    }
}

extension DevicePackedRing: DeviceDouble {
    mutating func take() throws -> DeviceChain? { try popAvail() }
    mutating func complete(id: UInt16, length: UInt32) { pushUsed(id: id, length: length) }
    mutating func completeBatch(lastID: UInt16, count: Int, length: UInt32) {
        pushUsedBatch(lastID: lastID, length: length)
    }
}

/// A driver ring of kind `R` and its device double over the same heap memory, with identity
/// address translation. Buffer addresses are fake and never dereferenced: they encode the cookie
/// and segment index, so the device's view of every chain can be checked against what was
/// posted.
final class RingUnderTest<R: DriverRing, D: DeviceDouble> {
    let queueSize: UInt16
    let eventIdx: Bool
    let inOrder: Bool
    /// Reclaim as TX does (`reclaimUsed`: cookies only, the IN_ORDER fast path) instead of
    /// `dequeueUsed`.
    var reclaimOnly = false
    let memory: UnsafeMutableRawPointer
    var ring: R
    var device: D

    init(queueSize: UInt16, eventIdx: Bool, inOrder: Bool, makeDevice: (R) -> D) {
        self.queueSize = queueSize
        self.eventIdx = eventIdx
        self.inOrder = inOrder
        let size = R.memorySize(queueSize: Int(queueSize))
        memory = .allocate(byteCount: size, alignment: R.memoryAlignment)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        ring = R(memory: memory, queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder)
        device = makeDevice(ring)
    }

    deinit {
        ring.deallocate()
        memory.deallocate()
    }

    /// The fake address of segment `index` of the buffer with `cookie`.
    static func address(cookie: UInt32, segment index: Int) -> UInt64 {
        0x1_0000_0000 + UInt64(cookie) << 8 + UInt64(index)
    }

    /// The cookie and segment index a fake address encodes.
    static func decode(_ pointer: UnsafeMutableRawPointer) -> (cookie: UInt32, segment: Int) {
        let a = UInt64(UInt(bitPattern: pointer)) - 0x1_0000_0000
        return (UInt32(truncatingIfNeeded: a >> 8), Int(a & 0xFF))
    }

    static var identity: (UInt64, Int) -> UnsafeMutableRawPointer? {
        { address, _ in UnsafeMutableRawPointer(bitPattern: UInt(address)) }
    }

    func add(_ segments: [RingSegment], cookie: UInt32) -> Bool {
        segments.withUnsafeBufferPointer { ring.addChain($0, cookie: cookie) }
    }

    /// `dequeueUsed`, or with `reclaimOnly` `reclaimUsed` (lengths reported as nil).
    func dequeue(max: Int) -> [(cookie: UInt32, length: UInt32?)] {
        var cookies = [UInt32](repeating: 0, count: max)
        if reclaimOnly {
            let n = cookies.withUnsafeMutableBufferPointer { ring.reclaimUsed(cookies: $0.baseAddress!, max: max) }
            return (0..<n).map { (cookies[$0], nil) }
        }
        var lengths = [UInt32](repeating: 0, count: max)
        let n = cookies.withUnsafeMutableBufferPointer { c in
            lengths.withUnsafeMutableBufferPointer { l in
                ring.dequeueUsed(cookies: c.baseAddress!, lengths: l.baseAddress!, max: max)
            }
        }
        return (0..<n).map { (cookies[$0], lengths[$0]) }
    }

    var inFlightCookies: [UInt32] {
        var out: [UInt32] = []
        ring.forEachInFlight { out.append($0) }
        return out
    }
}

extension RingUnderTest where R == SplitRing, D == DeviceSplitRing {
    convenience init(split queueSize: UInt16, eventIdx: Bool, inOrder: Bool) {
        self.init(queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder) { ring in
            var device = DeviceSplitRing(queueSize: queueSize, desc: ring.descTable, avail: ring.availRing,
                                         used: ring.usedRing, translate: Self.identity)
            device.eventIdx = eventIdx
            return device
        }
    }
}

extension RingUnderTest where R == PackedRing, D == DevicePackedRing {
    convenience init(packed queueSize: UInt16, eventIdx: Bool, inOrder: Bool) {
        self.init(queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder) { ring in
            var device = DevicePackedRing(queueSize: queueSize, desc: ring.descTable, driverEvent: ring.availRing,
                                          deviceEvent: ring.usedRing, translate: Self.identity)
            device.eventIdx = eventIdx
            return device
        }
    }
}
