@testable import BenchCore
import CFerry
import Virtio
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The generator's device-side ring against Ferry's driver-side `SplitRing`, over one memfd
/// mapped twice: once for the driver, once through `MemoryMap` as SET_MEM_TABLE maps it.
final class GeneratorRingTests: XCTestCase {
    let size = 1 << 20
    var fd: Int32 = -1
    var driver: UnsafeMutableRawPointer!
    var map = MemoryMap()
    var base: UInt64 { UInt64(UInt(bitPattern: driver)) }

    override func setUpWithError() throws {
        fd = ferry_memfd_create("bench-ring-test", 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw XCTSkip("mmap failed") }
        driver = p
        XCTAssertNil(map.map(guestPhys: [base], user: [base], sizes: [UInt64(size)], offsets: [0], fds: [dup(fd)]))
    }

    override func tearDown() {
        map.deallocate()
        munmap(driver, size)
        close(fd)
    }

    func deviceRing(for ring: SplitRing, queueSize: Int) -> GenRing {
        func local(_ p: UnsafeMutableRawPointer, _ length: Int) -> UnsafeMutableRawPointer {
            map.translate(user: UInt64(UInt(bitPattern: p)), length: length)!
        }
        return GenRing(size: UInt16(queueSize), desc: local(ring.descTable, 16 * queueSize),
                       avail: local(ring.availRing, 6 + 2 * queueSize), used: local(ring.usedRing, 6 + 8 * queueSize),
                       base: 0)
    }

    func testTranslationIsBoundedByTheRegion() {
        XCTAssertNotNil(map.translate(guest: base, length: size))
        XCTAssertNil(map.translate(guest: base, length: size + 1))
        XCTAssertNil(map.translate(guest: base + UInt64(size) - 8, length: 16))
        XCTAssertNil(map.translate(guest: base &- 1, length: 1))
        XCTAssertNil(map.translate(user: base + UInt64(size), length: 0))
    }

    func testReceiveDirection_GeneratorFillsDriverBuffers() {
        var ring = SplitRing(memory: driver, queueSize: 8, eventIdx: false, inOrder: true)
        defer { ring.deallocate() }
        var dev = deviceRing(for: ring, queueSize: 8)
        let buffers = base + 65536
        for i in 0..<2 {
            XCTAssertTrue(ring.addBuffer(address: buffers + UInt64(i * 2048), length: 2048, deviceWritable: true,
                                         cookie: UInt32(i)))
        }
        XCTAssertEqual(dev.available(), 0, "nothing is available before the driver publishes")
        ring.publish()
        XCTAssertEqual(dev.available(), 2)

        let head = dev.popHead()!
        let d = dev.descriptor(head)
        XCTAssertEqual(d.flags & VringFlags.descWrite, VringFlags.descWrite)
        XCTAssertEqual(d.length, 2048)
        let p = map.translate(guest: d.address, length: 12 + 64)!
        GenFrame.write(at: p + 12, job: 7, seq: 42, intended: 1000, sent: 1100)
        dev.pushUsed(id: head, length: 76)
        XCTAssertEqual(ring.pendingUsed(), 0, "entries are invisible until publishUsed")
        dev.publishUsed()

        var cookies = [UInt32](repeating: 99, count: 8)
        var lengths = [UInt32](repeating: 99, count: 8)
        let n = ring.dequeueUsed(cookies: &cookies, lengths: &lengths, max: 8)
        XCTAssertEqual(n, 1)
        XCTAssertEqual(cookies[0], 0)
        XCTAssertEqual(lengths[0], 76)
        let f = GenFrame.read(at: UnsafeRawPointer(driver + 65536 + 12))
        XCTAssertEqual(f?.job, 7)
        XCTAssertEqual(f?.seq, 42)
        XCTAssertEqual(f?.intended, 1000)
        XCTAssertEqual(f?.sent, 1100)
        XCTAssertEqual(dev.available(), 1)
    }

    func testTransmitDirection_GeneratorReadsDriverFrames() {
        var ring = SplitRing(memory: driver, queueSize: 8, eventIdx: false, inOrder: true)
        defer { ring.deallocate() }
        var dev = deviceRing(for: ring, queueSize: 8)
        let frame = driver + 131072
        GenFrame.write(at: frame + 12, job: 3, seq: 9, intended: 5, sent: 6)
        XCTAssertTrue(ring.addBuffer(address: base + 131072, length: 12 + 64, deviceWritable: false, cookie: 77))
        ring.publish()
        XCTAssertEqual(dev.available(), 1)
        let head = dev.popHead()!
        let d = dev.descriptor(head)
        XCTAssertEqual(d.flags & VringFlags.descWrite, 0)
        let p = map.translate(guest: d.address, length: Int(d.length))!
        XCTAssertEqual(GenFrame.read(at: UnsafeRawPointer(p + 12))?.seq, 9)
        dev.pushUsed(id: head, length: 0)
        dev.publishUsed()
        var cookies = [UInt32](repeating: 0, count: 8)
        var lengths = [UInt32](repeating: 0, count: 8)
        XCTAssertEqual(ring.dequeueUsed(cookies: &cookies, lengths: &lengths, max: 8), 1)
        XCTAssertEqual(cookies[0], 77)
    }

    func testImpossibleAvailIndexOrHeadBreaksTheRing() {
        let ring = SplitRing(memory: driver, queueSize: 8, eventIdx: false, inOrder: true)
        defer { ring.deallocate() }
        var dev = deviceRing(for: ring, queueSize: 8)
        // avail->idx 9 ahead of a ring of 8.
        (ring.availRing + SplitRingLayout.availIdxOffset).storeBytes(of: UInt16(9), as: UInt16.self)
        XCTAssertEqual(dev.available(), 0)
        XCTAssertTrue(dev.broken)

        var dev2 = deviceRing(for: ring, queueSize: 8)
        (ring.availRing + SplitRingLayout.availIdxOffset).storeBytes(of: UInt16(1), as: UInt16.self)
        (ring.availRing + SplitRingLayout.availRingOffset).storeBytes(of: UInt16(8), as: UInt16.self)
        XCTAssertEqual(dev2.available(), 1)
        XCTAssertNil(dev2.popHead(), "head 8 is outside a table of 8")
        XCTAssertTrue(dev2.broken)
    }

    func testNoNotifyAndInterruptRequest() {
        var ring = SplitRing(memory: driver, queueSize: 8, eventIdx: false, inOrder: true)
        defer { ring.deallocate() }
        let dev = deviceRing(for: ring, queueSize: 8)
        dev.setNoNotify()
        XCTAssertTrue(ring.addBuffer(address: base + 65536, length: 64, deviceWritable: false, cookie: 1))
        ring.publish()
        XCTAssertFalse(ring.kickNeeded(), "the driver skips the kick once the device set NO_NOTIFY")
        ring.disableInterrupts()
        XCTAssertFalse(dev.driverWantsInterrupt())
        _ = ring.enableInterrupts()
        XCTAssertTrue(dev.driverWantsInterrupt())
    }

    func testFrameHeaderAndForeignFrames() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        XCTAssertNil(GenFrame.read(at: UnsafeRawPointer(buffer)), "a frame without the magic is not the generator's")
        GenFrame.write(at: buffer, job: 1, seq: 2, intended: 3, sent: 4)
        let bytes = Array(UnsafeRawBufferPointer(start: buffer, count: 14))
        XCTAssertEqual(bytes, [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xB5])
    }
}
