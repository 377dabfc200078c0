import CFerry
import FerryTestSupport
import Vhost
import Virtio
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The in-process vhost-user device double looping frames on packed rings (RING_PACKED acked):
/// PackedRing on the driver side, DevicePackedRing inside the double, a real vhost-user session
/// in between (SET_VRING_ADDR with the desc/driver/device areas, SET_VRING_BASE with the wrap
/// counter in bit 15), over many laps of a 255-slot ring.
final class PackedRingDoubleLoopbackTests: XCTestCase {
    static let queueSize: UInt16 = 255
    static let memorySize = 1 << 20
    static let bufferBase = 64 * 1024
    static let bufferSize = 2048
    static let header = 12

    private var double: VhostUserDeviceDouble?
    private var backend: VhostUserBackend?
    private var fds: [Int32] = []
    private var mapping: (base: UnsafeMutableRawPointer, fd: Int32)?

    override func tearDown() {
        backend?.close()
        double?.stop()
        fds.forEach { close($0) }
        if let m = mapping {
            munmap(m.base, Self.memorySize)
            close(m.fd)
        }
    }

    private func sharedMemory() throws -> UnsafeMutableRawPointer {
        let fd = ferry_memfd_create("ferry-packed-test", FERRY_MFD_CLOEXEC)
        guard fd >= 0 else { throw XCTSkip("memfd_create unavailable: errno \(errno)") }
        guard ftruncate(fd, off_t(Self.memorySize)) == 0,
              let p = mmap(nil, Self.memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            close(fd)
            throw XCTSkip("shared memory unavailable: errno \(errno)")
        }
        mapping = (p, fd)
        return p
    }

    private func eventFD() throws -> Int32 {
        let fd = ferry_eventfd(0, FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK)
        guard fd >= 0 else { throw XCTSkip("eventfd unavailable") }
        fds.append(fd)
        return fd
    }

    func testFramesLoopOnPackedRingsAcrossManyLaps() throws {
        let base = try sharedMemory()
        let address = UInt64(UInt(bitPattern: base))
        let region = VhostMemoryRegion(guestPhysAddr: address, memorySize: UInt64(Self.memorySize),
                                       userAddr: address, mmapOffset: 0, fd: mapping!.fd)
        let ringBytes = PackedRingLayout.totalSize(queueSize: Int(Self.queueSize))
        var rx = PackedRing(memory: base, queueSize: Self.queueSize, eventIdx: false, inOrder: false)
        var tx = PackedRing(memory: base + ringBytes, queueSize: Self.queueSize, eventIdx: false, inOrder: false)
        defer {
            rx.deallocate()
            tx.deallocate()
        }

        let path = "/tmp/ferry-packed-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let features = VhostUserDeviceDouble.defaultFeatures | VhostUserDeviceDouble.featureRingPacked
        let double = try VhostUserDeviceDouble(listeningAt: path, configuration: .init(features: features))
        self.double = double
        let backend = try VhostUserBackend(connectingTo: path)
        self.backend = backend

        // The seed's session, packed flavour.
        try backend.setOwner()
        let offered = try backend.getFeatures()
        XCTAssertNotEqual(offered & VhostUserDeviceDouble.featureRingPacked, 0)
        let calls = [try eventFD(), try eventFD()], kicks = [try eventFD(), try eventFD()]
        for i in 0..<2 { try backend.setVringCall(index: UInt32(i), fd: calls[i]) }
        try backend.setFeatures(offered & (VhostUserDeviceDouble.featureVersion1 | VhostUserDeviceDouble.featureMrgRxbuf
                                           | VhostUserDeviceDouble.featureRingPacked))
        try backend.setMemoryTable([region])
        for (i, ring) in [rx, tx].enumerated() {
            let index = UInt32(i)
            XCTAssertEqual(ring.initialBase, 0x8000, "a fresh packed ring: position 0, wrap counter 1")
            try backend.setVringNum(VhostVringState(index: index, num: UInt32(ring.queueSize)))
            try backend.setVringBase(VhostVringState(index: index, num: ring.initialBase))
            try backend.setVringAddr(VhostVringAddr(index: index,
                                                    descUserAddr: UInt64(UInt(bitPattern: ring.descTable)),
                                                    usedUserAddr: UInt64(UInt(bitPattern: ring.usedRing)),
                                                    availUserAddr: UInt64(UInt(bitPattern: ring.availRing))))
            try backend.setVringKick(index: index, fd: kicks[i])
        }
        try backend.enableQueuePair(0, enable: true)

        // Buffers: 64 RX buffers (cookies 0..<64), 64 TX buffers (cookies 64..<128).
        func buffer(_ cookie: UInt32) -> UnsafeMutableRawPointer { base + Self.bufferBase + Int(cookie) * Self.bufferSize }
        func bufferAddress(_ cookie: UInt32) -> UInt64 { address + UInt64(Self.bufferBase + Int(cookie) * Self.bufferSize) }
        func postRx(_ cookie: UInt32) {
            XCTAssertTrue(rx.addBuffer(address: bufferAddress(cookie), length: UInt32(Self.bufferSize),
                                       deviceWritable: true, cookie: cookie))
        }
        for c in UInt32(0)..<64 { postRx(c) }
        rx.publish()
        var freeTx = Array(UInt32(64)..<128)
        var cookies = [UInt32](repeating: 0, count: 64), lengths = [UInt32](repeating: 0, count: 64)

        var sent: [[UInt8]] = []
        var received: [[UInt8]] = []
        let total = 1200 // about five laps of each ring
        var rng = SplitMix(seed: 7)
        while received.count < total {
            // Send a burst: even frames as one descriptor, odd ones as header + frame.
            var burst = 0
            while burst < 16 && sent.count < total, let t = freeTx.popLast() {
                let size = 60 + Int(rng.next() % 1400)
                let n = sent.count
                let frame = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ n) }
                let p = buffer(t)
                memset(p, 0, Self.header)
                frame.withUnsafeBytes { (p + Self.header).copyMemory(from: $0.baseAddress!, byteCount: size) }
                let ok: Bool
                if n % 2 == 0 {
                    ok = tx.addBuffer(address: bufferAddress(t), length: UInt32(Self.header + size),
                                      deviceWritable: false, cookie: t)
                } else {
                    let segments = [RingSegment(address: bufferAddress(t), length: UInt32(Self.header), deviceWritable: false),
                                    RingSegment(address: bufferAddress(t) + UInt64(Self.header), length: UInt32(size),
                                                deviceWritable: false)]
                    ok = segments.withUnsafeBufferPointer { tx.addChain($0, cookie: t) }
                }
                XCTAssertTrue(ok)
                sent.append(frame)
                burst += 1
            }
            tx.publish()
            _ = tx.kickNeeded()
            // A memory table change mid-run: the device must carry its packed positions over.
            if sent.count == 600 {
                try backend.enableQueuePair(0, enable: false)
                try backend.setMemoryTable([region])
                try backend.enableQueuePair(0, enable: true)
            }
            // Wait for the device to loop what was sent.
            let want = sent.count
            let looped = double.waitUntil(timeoutMs: 10_000) {
                received.count + rx.pendingUsed() >= want
            }
            XCTAssertTrue(looped, "device stuck: looped \(double.framesLooped), dropped \(double.framesDropped), "
                          + "errors \(double.errors)")
            guard looped else { return }
            let n = cookies.withUnsafeMutableBufferPointer { c in
                lengths.withUnsafeMutableBufferPointer { l in rx.dequeueUsed(cookies: c.baseAddress!, lengths: l.baseAddress!, max: 64) }
            }
            for i in 0..<n {
                let length = Int(lengths[i])
                XCTAssertGreaterThanOrEqual(length, Self.header)
                let p = buffer(cookies[i])
                XCTAssertEqual(p.load(fromByteOffset: 10, as: UInt16.self), 1, "num_buffers")
                received.append(Array(UnsafeRawBufferPointer(start: p + Self.header, count: length - Self.header)))
                postRx(cookies[i])
            }
            rx.publish()
            _ = rx.kickNeeded()
            let m = cookies.withUnsafeMutableBufferPointer { c in
                lengths.withUnsafeMutableBufferPointer { l in tx.dequeueUsed(cookies: c.baseAddress!, lengths: l.baseAddress!, max: 64) }
            }
            freeTx += cookies[0..<m]
        }
        XCTAssertEqual(received.count, sent.count)
        XCTAssertTrue(received == sent, "every frame back byte for byte, in order")
        XCTAssertEqual(double.framesLooped, UInt64(total))
        XCTAssertEqual(double.framesDropped, 0)
        XCTAssertEqual(double.errors, [])
        XCTAssertEqual(rx.invalidUsedIds + tx.invalidUsedIds + rx.invalidUsedLengths, 0)

        // Stop as the seed does. GET_VRING_BASE carries position | wrap << 15: TX was consumed
        // entirely, RX still has its 64 posted buffers ahead of the device.
        try backend.enableQueuePair(0, enable: false)
        let txBase = try backend.getVringBase(index: 1)
        let rxBase = try backend.getVringBase(index: 0)
        XCTAssertEqual(txBase, tx.availBase)
        XCTAssertEqual(tx.pendingAvail(deviceBase: txBase), 0)
        XCTAssertEqual(rx.pendingAvail(deviceBase: rxBase), 64)
        XCTAssertEqual(rxBase, rx.usedBase, "RX: the device stopped where the driver reads next")
    }
}
