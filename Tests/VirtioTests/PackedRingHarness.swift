import FerryTestSupport
import Virtio
import XCTest

/// A packed driver ring and a device ring over the same heap memory, with identity address
/// translation (driver addresses are this process's pointers).
final class PackedRingHarness {
    let queueSize: UInt16
    let memory: UnsafeMutableRawPointer
    var ring: PackedRing
    var device: DevicePackedRing

    init(queueSize: UInt16, eventIdx: Bool = false, inOrder: Bool = false) {
        self.queueSize = queueSize
        let size = PackedRingLayout.totalSize(queueSize: Int(queueSize))
        memory = .allocate(byteCount: size, alignment: PackedRingLayout.alignment)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        ring = PackedRing(memory: memory, queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder)
        device = DevicePackedRing(queueSize: queueSize, desc: ring.descTable, driverEvent: ring.availRing,
                                  deviceEvent: ring.usedRing,
                                  translate: { address, _ in UnsafeMutableRawPointer(bitPattern: UInt(address)) })
        device.eventIdx = eventIdx
    }

    deinit {
        ring.deallocate()
        memory.deallocate()
    }

    /// A fake but non-null buffer address; the device double only translates it.
    static func fakeAddress(_ i: Int) -> UInt64 { 0x10_0000 + UInt64(i) * 0x800 }

    /// Adds `count` one-descriptor buffers with consecutive cookies; returns how many fitted.
    @discardableResult
    func add(count: Int, firstCookie: UInt32, length: UInt32 = 64, writable: Bool = false) -> Int {
        var added = 0
        for i in 0..<count {
            let cookie = firstCookie &+ UInt32(i)
            guard ring.addBuffer(address: Self.fakeAddress(Int(cookie % 1024)), length: length,
                                 deviceWritable: writable, cookie: cookie) else { break }
            added += 1
        }
        return added
    }

    /// Adds a chain; returns whether it fitted.
    func addChain(_ segments: [RingSegment], cookie: UInt32) -> Bool {
        segments.withUnsafeBufferPointer { ring.addChain($0, cookie: cookie) }
    }

    /// A chain of `count` segments of `length` bytes, the last `writable` of them writable.
    static func segments(_ count: Int, length: UInt32 = 32, writable: Int = 0, base: Int = 0) -> [RingSegment] {
        (0..<count).map { i in
            RingSegment(address: fakeAddress(base + i), length: length, deviceWritable: i >= count - writable)
        }
    }

    /// Reads completions from the driver ring.
    func dequeue(max: Int = 4096) -> [Completion] {
        var cookies = [UInt32](repeating: 0, count: max)
        var lengths = [UInt32](repeating: 0, count: max)
        let n = cookies.withUnsafeMutableBufferPointer { c in
            lengths.withUnsafeMutableBufferPointer { l in
                ring.dequeueUsed(cookies: c.baseAddress!, lengths: l.baseAddress!, max: max)
            }
        }
        return (0..<n).map { Completion(cookie: cookies[$0], length: lengths[$0]) }
    }

    /// Takes every available chain on the device side.
    func popAll() throws -> [DeviceChain] {
        var chains: [DeviceChain] = []
        while let chain = try device.popAvail() { chains.append(chain) }
        return chains
    }

    /// The raw descriptor at `position`: (addr, len, id, flags).
    func descriptor(_ position: Int) -> (address: UInt64, length: UInt32, id: UInt16, flags: UInt16) {
        let d = memory + position * PackedRingLayout.descriptorSize
        return (d.load(fromByteOffset: 0, as: UInt64.self), d.load(fromByteOffset: 8, as: UInt32.self),
                d.load(fromByteOffset: 12, as: UInt16.self), d.load(fromByteOffset: 14, as: UInt16.self))
    }

    /// Every cookie still in flight, in the ring's reporting order.
    var inFlightCookies: [UInt32] {
        var out: [UInt32] = []
        ring.forEachInFlight { out.append($0) }
        return out
    }
}
