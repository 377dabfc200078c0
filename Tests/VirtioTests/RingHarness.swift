import FerryTestSupport
import Virtio
import XCTest

/// One completion as the driver reported it.
struct Completion: Equatable, CustomStringConvertible {
    var cookie: UInt32
    var length: UInt32
    var description: String { "(\(cookie), \(length))" }
}

/// A driver ring and a device ring over the same heap memory, with identity address
/// translation (driver addresses are this process's pointers).
final class RingHarness {
    let queueSize: UInt16
    let memory: UnsafeMutableRawPointer
    var ring: SplitRing
    var device: DeviceSplitRing

    init(queueSize: UInt16, eventIdx: Bool = false, inOrder: Bool = false) {
        self.queueSize = queueSize
        let size = SplitRingLayout.totalSize(queueSize: Int(queueSize))
        memory = .allocate(byteCount: size, alignment: SplitRingLayout.alignment)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        ring = SplitRing(memory: memory, queueSize: queueSize, eventIdx: eventIdx, inOrder: inOrder)
        device = DeviceSplitRing(queueSize: queueSize, desc: ring.descTable, avail: ring.availRing,
                                 used: ring.usedRing,
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

    /// Reads completions from the driver ring.
    func dequeue(max: Int = 256) -> [Completion] {
        var cookies = [UInt32](repeating: 0, count: max)
        var lengths = [UInt32](repeating: 0, count: max)
        let n = cookies.withUnsafeMutableBufferPointer { c in
            lengths.withUnsafeMutableBufferPointer { l in
                ring.dequeueUsed(cookies: c.baseAddress!, lengths: l.baseAddress!, max: max)
            }
        }
        return (0..<n).map { Completion(cookie: cookies[$0], length: lengths[$0]) }
    }

    /// Pops every available chain on the device side.
    func popAll() throws -> [DeviceChain] {
        var chains: [DeviceChain] = []
        while let chain = try device.popAvail() { chains.append(chain) }
        return chains
    }

    /// Fills the used ring's entries with an id no ring can have, so reads of unwritten
    /// entries are recognisably invalid.
    func poisonUsedRing() {
        for slot in 0..<queueSize { device.writeUsedEntry(slot: slot, id: 0xFFFF_FFFF, length: 0xFFFF_FFFF) }
    }
}
