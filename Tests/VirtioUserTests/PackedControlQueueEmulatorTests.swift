import XCTest
import Virtio
@testable import VirtioUser

/// The emulated control queue on a packed ring (the seed's `virtio_user_handle_cq_packed`)
/// reads chains in ring order and must survive any of them: unterminated chains, zero
/// lengths, missing status, addresses outside memory, chains longer than the ring.
final class PackedControlQueueEmulatorTests: XCTestCase {
    static let queueSize = 8
    private var ringMemory: UnsafeMutableRawPointer!
    private var data: UnsafeMutableRawPointer!
    private let dataSize = 4096
    private var emulator: PackedControlQueueEmulator!
    /// The driver's next slot and wrap counter, as a driver would keep them.
    private var slot = 0
    private var wrap = true

    override func setUp() {
        let size = PackedRingLayout.totalSize(queueSize: Self.queueSize)
        ringMemory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        ringMemory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        data = UnsafeMutableRawPointer.allocate(byteCount: dataSize, alignment: 64)
        data.initializeMemory(as: UInt8.self, repeating: 0, count: dataSize)
        let lo = UInt64(UInt(bitPattern: data)), size64 = UInt64(dataSize)
        emulator = PackedControlQueueEmulator(queueSize: Self.queueSize, desc: ringMemory, translate: { address, length in
            guard address >= lo, length >= 0, address - lo <= size64 - UInt64(length) else { return nil }
            return UnsafeMutableRawPointer(bitPattern: UInt(address))
        })
    }

    override func tearDown() {
        ringMemory.deallocate()
        data.deallocate()
    }

    private func address(_ offset: Int) -> UInt64 { UInt64(UInt(bitPattern: data)) + UInt64(offset) }

    /// Writes the next descriptor as available, driver-style.
    private func push(address: UInt64, length: UInt32, writable: Bool = false, next: Bool, id: UInt16 = 7) {
        let d = ringMemory + slot * PackedRingLayout.descriptorSize
        d.storeBytes(of: address, toByteOffset: PackedRingLayout.descAddrOffset, as: UInt64.self)
        d.storeBytes(of: length, toByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)
        d.storeBytes(of: id, toByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self)
        var flags = PackedRingFlags.availBits(wrap: wrap)
        if writable { flags |= PackedRingFlags.descWrite }
        if next { flags |= PackedRingFlags.descNext }
        d.storeBytes(of: flags, toByteOffset: PackedRingLayout.descFlagsOffset, as: UInt16.self)
        slot += 1
        if slot == Self.queueSize { slot = 0; wrap.toggle() }
    }

    private func usedDescriptor(at s: Int) -> (id: UInt16, length: UInt32, flags: UInt16) {
        let d = ringMemory + s * PackedRingLayout.descriptorSize
        return (d.load(fromByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self),
                d.load(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self),
                d.load(fromByteOffset: PackedRingLayout.descFlagsOffset, as: UInt16.self))
    }

    private var status: UInt8 { data.load(fromByteOffset: 100, as: UInt8.self) }

    /// header at data+0, payload at data+16, status at data+100.
    private func pushCommand(class c: UInt8, command: UInt8, payload: [UInt8], id: UInt16 = 7) {
        data.storeBytes(of: c, as: UInt8.self)
        data.storeBytes(of: command, toByteOffset: 1, as: UInt8.self)
        (data + 16).copyMemory(from: payload, byteCount: payload.count)
        data.storeBytes(of: 0xee, toByteOffset: 100, as: UInt8.self)
        push(address: address(0), length: 2, next: true, id: id)
        push(address: address(16), length: UInt32(payload.count), next: true, id: id)
        push(address: address(100), length: 1, writable: true, next: false, id: id)
    }

    func testWellFormedCommandIsHandledAndUsedInTheFirstSlot() {
        pushCommand(class: VirtioNetControl.Mq.class, command: VirtioNetControl.Mq.vqPairsSet, payload: [2, 0], id: 5)
        var seen: [VirtioNetControlCommand] = []
        XCTAssertEqual(emulator.process { seen.append($0); return VirtioNetControl.ackOK }, 1)
        XCTAssertEqual(seen, [.mqPairsSet(2)])
        XCTAssertEqual(status, VirtioNetControl.ackOK)
        let used = usedDescriptor(at: 0)
        XCTAssertEqual(used.id, 5)
        XCTAssertEqual(used.length, 1)
        XCTAssertTrue(PackedRingFlags.isUsed(flags: used.flags, wrap: true))
        XCTAssertEqual(emulator.position, 3, "the device moves past the whole chain")
    }

    func testCommandsAcrossTheRingEndAndWrap() {
        // 3 commands of 3 descriptors on an 8-slot ring: the third crosses the end.
        for i in 0..<3 {
            pushCommand(class: VirtioNetControl.Rx.class, command: VirtioNetControl.Rx.promisc, payload: [1], id: UInt16(i))
            var calls = 0
            XCTAssertEqual(emulator.process { _ in calls += 1; return 0 }, 1)
            XCTAssertEqual(calls, 1)
        }
        XCTAssertEqual(emulator.position, 1)
        XCTAssertFalse(emulator.wrap, "the device's wrap counter flipped at the ring end")
    }

    func testUnterminatedChainIsBoundedByTheRing() {
        // Every slot available with NEXT set: no end. The emulator reads at most one lap.
        for _ in 0..<Self.queueSize { push(address: address(0), length: 2, next: true) }
        var called = false
        emulator.process { _ in called = true; return 0 }
        XCTAssertFalse(called)
        XCTAssertGreaterThanOrEqual(emulator.malformedChains, 1)
    }

    func testZeroLengthDataIsRejectedWithErr() {
        pushCommand(class: VirtioNetControl.Rx.class, command: VirtioNetControl.Rx.promisc, payload: [])
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(status, VirtioNetControl.ackErr)
        XCTAssertEqual(emulator.malformedChains, 1)
    }

    func testReadOnlyStatusIsNeverWritten() {
        push(address: address(0), length: 2, next: true)
        push(address: address(16), length: 1, next: true)
        push(address: address(100), length: 1, writable: false, next: false)
        data.storeBytes(of: 0xee, toByteOffset: 100, as: UInt8.self)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(status, 0xee)
        XCTAssertEqual(usedDescriptor(at: 0).length, 0)
    }

    func testAddressOutsideMemoryIsRejected() {
        push(address: address(0), length: 2, next: true)
        push(address: 0x1000, length: 8, next: true)
        push(address: address(100), length: 1, writable: true, next: false)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(status, VirtioNetControl.ackErr)
    }

    func testDescriptorsOfTheWrongLapAreNotRead() {
        // Flags as the previous lap's available pattern: not available to this device.
        wrap = false
        pushCommand(class: 0, command: 0, payload: [1])
        XCTAssertEqual(emulator.process { _ in XCTFail("handler must not run"); return 0 }, 0)
        XCTAssertEqual(emulator.malformedChains, 0)
    }

    func testMalformedThenValidCommandStillWorks() {
        pushCommand(class: VirtioNetControl.Rx.class, command: 0, payload: [])
        pushCommand(class: VirtioNetControl.Vlan.class, command: VirtioNetControl.Vlan.add, payload: [1, 0], id: 3)
        var seen = 0
        XCTAssertEqual(emulator.process { _ in seen += 1; return 0 }, 2)
        XCTAssertEqual(seen, 1)
        XCTAssertEqual(usedDescriptor(at: 3).id, 3)
        XCTAssertEqual(status, VirtioNetControl.ackOK)
    }
}
