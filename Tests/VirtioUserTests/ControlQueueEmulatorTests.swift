import XCTest
import Virtio
@testable import VirtioUser

/// The emulated control queue reads chains the driver built, and must survive any of them:
/// bad chains, zero lengths, out-of-range ids, loops, addresses outside memory.
final class ControlQueueEmulatorTests: XCTestCase {
    static let queueSize = 8
    private var ringMemory: UnsafeMutableRawPointer!
    private var data: UnsafeMutableRawPointer!
    private let dataSize = 4096
    private var emulator: SplitControlQueueEmulator!
    private var availIndex: UInt16 = 0

    override func setUp() {
        let size = SplitRingLayout.totalSize(queueSize: Self.queueSize)
        ringMemory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        ringMemory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        data = UnsafeMutableRawPointer.allocate(byteCount: dataSize, alignment: 64)
        data.initializeMemory(as: UInt8.self, repeating: 0, count: dataSize)
        let lo = UInt64(UInt(bitPattern: data)), size64 = UInt64(dataSize)
        emulator = SplitControlQueueEmulator(
            queueSize: Self.queueSize, desc: ringMemory,
            avail: ringMemory + SplitRingLayout.availOffset(queueSize: Self.queueSize),
            used: ringMemory + SplitRingLayout.usedOffset(queueSize: Self.queueSize),
            translate: { address, length in
                guard address >= lo, length >= 0, address - lo <= size64 - UInt64(length) else { return nil }
                return UnsafeMutableRawPointer(bitPattern: UInt(address))
            })
    }

    override func tearDown() {
        ringMemory.deallocate()
        data.deallocate()
    }

    private var avail: UnsafeMutableRawPointer { ringMemory + SplitRingLayout.availOffset(queueSize: Self.queueSize) }
    private var used: UnsafeMutableRawPointer { ringMemory + SplitRingLayout.usedOffset(queueSize: Self.queueSize) }

    private func address(_ offset: Int) -> UInt64 { UInt64(UInt(bitPattern: data)) + UInt64(offset) }

    private func writeDesc(_ i: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) {
        let d = ringMemory + i * SplitRingLayout.descriptorSize
        d.storeBytes(of: address, toByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self)
        d.storeBytes(of: length, toByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self)
        d.storeBytes(of: flags, toByteOffset: SplitRingLayout.descFlagsOffset, as: UInt16.self)
        d.storeBytes(of: next, toByteOffset: SplitRingLayout.descNextOffset, as: UInt16.self)
    }

    private func makeAvailable(_ head: UInt16) {
        let slot = Int(availIndex) % Self.queueSize
        avail.storeBytes(of: head, toByteOffset: SplitRingLayout.availRingOffset + 2 * slot, as: UInt16.self)
        availIndex &+= 1
        avail.storeBytes(of: availIndex, toByteOffset: SplitRingLayout.availIdxOffset, as: UInt16.self)
    }

    private func usedEntry(_ slot: Int) -> (id: UInt32, length: UInt32) {
        let e = used + SplitRingLayout.usedRingOffset + slot * SplitRingLayout.usedElemSize
        return (e.load(as: UInt32.self), e.load(fromByteOffset: 4, as: UInt32.self))
    }

    private var usedIndex: UInt16 { used.load(fromByteOffset: SplitRingLayout.usedIdxOffset, as: UInt16.self) }

    /// header at data+0, payload at data+16, status at data+100.
    private func writeCommand(class c: UInt8, command: UInt8, payload: [UInt8], head: Int = 0) {
        data.storeBytes(of: c, as: UInt8.self)
        data.storeBytes(of: command, toByteOffset: 1, as: UInt8.self)
        (data + 16).copyMemory(from: payload, byteCount: payload.count)
        data.storeBytes(of: 0xee, toByteOffset: 100, as: UInt8.self)
        writeDesc(head, address: address(0), length: 2, flags: VringFlags.descNext, next: UInt16(head + 1))
        writeDesc(head + 1, address: address(16), length: UInt32(payload.count), flags: VringFlags.descNext, next: UInt16(head + 2))
        writeDesc(head + 2, address: address(100), length: 1, flags: VringFlags.descWrite)
    }

    private var status: UInt8 { data.load(fromByteOffset: 100, as: UInt8.self) }

    func testWellFormedCommandReachesHandlerAndIsAcked() {
        writeCommand(class: VirtioNetControl.Mq.class, command: VirtioNetControl.Mq.vqPairsSet, payload: [2, 0])
        makeAvailable(0)
        var seen: [VirtioNetControlCommand] = []
        XCTAssertEqual(emulator.process { seen.append($0); return VirtioNetControl.ackOK }, 1)
        XCTAssertEqual(seen, [.mqPairsSet(2)])
        XCTAssertEqual(status, VirtioNetControl.ackOK)
        XCTAssertEqual(usedIndex, 1)
        XCTAssertEqual(usedEntry(0).id, 0)
        XCTAssertEqual(usedEntry(0).length, 1)
        XCTAssertEqual(emulator.malformedChains, 0)
    }

    func testHandlerErrorIsWrittenToStatus() {
        writeCommand(class: 9, command: 9, payload: [1])
        makeAvailable(0)
        emulator.process { _ in VirtioNetControl.ackErr }
        XCTAssertEqual(status, VirtioNetControl.ackErr)
    }

    func testOutOfRangeHeadIsSkippedWithoutTouchingMemory() {
        makeAvailable(UInt16(Self.queueSize + 3))
        var called = false
        XCTAssertEqual(emulator.process { _ in called = true; return 0 }, 1)
        XCTAssertFalse(called)
        XCTAssertEqual(emulator.malformedChains, 1)
        XCTAssertEqual(usedIndex, 1, "the chain is still returned so the driver can reclaim it")
        XCTAssertEqual(usedEntry(0).length, 0)
    }

    func testZeroLengthDataIsRejectedWithErr() {
        writeCommand(class: VirtioNetControl.Rx.class, command: VirtioNetControl.Rx.promisc, payload: [])
        makeAvailable(0)
        var called = false
        emulator.process { _ in called = true; return 0 }
        XCTAssertFalse(called)
        XCTAssertEqual(status, VirtioNetControl.ackErr)
        XCTAssertEqual(emulator.malformedChains, 1)
    }

    func testShortHeaderIsRejected() {
        writeCommand(class: 0, command: 0, payload: [1])
        writeDesc(0, address: address(0), length: 1, flags: VringFlags.descNext, next: 1)
        makeAvailable(0)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(status, VirtioNetControl.ackErr)
    }

    func testStatusThatIsNotWritableIsNotWritten() {
        writeCommand(class: 0, command: 0, payload: [1])
        writeDesc(2, address: address(100), length: 1, flags: 0)
        makeAvailable(0)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(status, 0xee, "a read-only status descriptor is never written")
        XCTAssertEqual(emulator.malformedChains, 1)
    }

    func testChainLoopIsBounded() {
        writeDesc(0, address: address(0), length: 2, flags: VringFlags.descNext, next: 1)
        writeDesc(1, address: address(16), length: 1, flags: VringFlags.descNext, next: 0)
        makeAvailable(0)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(emulator.malformedChains, 1)
    }

    func testNextOutOfRangeIsRejected() {
        writeDesc(0, address: address(0), length: 2, flags: VringFlags.descNext, next: 200)
        makeAvailable(0)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(emulator.malformedChains, 1)
    }

    func testAddressOutsideMemoryIsRejected() {
        writeCommand(class: 0, command: 0, payload: [1])
        writeDesc(1, address: address(dataSize - 2), length: 64, flags: VringFlags.descNext, next: 2)
        makeAvailable(0)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(status, VirtioNetControl.ackErr)
    }

    func testStatusOutsideMemoryIsNeverWritten() {
        writeCommand(class: 0, command: 0, payload: [1])
        writeDesc(2, address: 0x10, length: 1, flags: VringFlags.descWrite)
        makeAvailable(0)
        emulator.process { _ in XCTFail("handler must not run"); return 0 }
        XCTAssertEqual(emulator.malformedChains, 1)
        XCTAssertEqual(usedEntry(0).length, 0)
    }

    func testAvailIndexJumpIsBoundedByRingSize() {
        writeCommand(class: 0, command: 0, payload: [1])
        for _ in 0..<3 { makeAvailable(0) }
        avail.storeBytes(of: UInt16(60_000), toByteOffset: SplitRingLayout.availIdxOffset, as: UInt16.self)
        var calls = 0
        XCTAssertEqual(emulator.process { _ in calls += 1; return 0 }, Self.queueSize)
        XCTAssertEqual(calls, Self.queueSize)
    }

    func testMaliciousThenValidCommandStillWorks() {
        makeAvailable(UInt16(999))
        writeCommand(class: VirtioNetControl.Vlan.class, command: VirtioNetControl.Vlan.add, payload: [1, 0], head: 3)
        makeAvailable(3)
        var seen = 0
        XCTAssertEqual(emulator.process { _ in seen += 1; return 0 }, 2)
        XCTAssertEqual(seen, 1)
        XCTAssertEqual(usedEntry(1).id, 3)
        XCTAssertEqual(status, VirtioNetControl.ackOK)
    }
}
