import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// SET_MEM_TABLE and the ring addresses: one memfd region, Ferry's virtual addresses as
/// guest-physical ones, and memory the device really shares.
final class MemoryTableTests: VirtioUserTestCase {
    private func startedSession() throws -> (VhostUserDeviceDouble, VirtioUserDevice, SharedMemory) {
        let double = try startDouble()
        let memory = try makeMemory()
        let device = try openDevice(double, memory: memory)
        try device.negotiate()
        try device.start()
        return (double, device, memory)
    }

    func testMemoryTableIsExactlyTheSharedMemoryRegion() throws {
        let (double, _, memory) = try startedSession()
        let received = double.memoryRegions
        XCTAssertEqual(received.count, 1)
        XCTAssertLessThanOrEqual(received.count, VhostUserConstants.memoryMaxRegions)
        XCTAssertEqual(memory.regions.count, 1)
        guard let region = received.first, let sent = memory.regions.first else { return }
        let base = UInt64(UInt(bitPattern: memory.base))
        XCTAssertEqual(region.guestPhysAddr, region.userAddr, "Ferry addresses are its own virtual addresses")
        XCTAssertEqual(region.userAddr, base)
        XCTAssertEqual(region.memorySize, UInt64(memory.size))
        XCTAssertEqual(region.mmapOffset, 0)
        XCTAssertEqual(sent.fd, memory.fd)
        XCTAssertEqual(VhostMemoryRegion(guestPhysAddr: region.guestPhysAddr, memorySize: region.memorySize,
                                         userAddr: region.userAddr, mmapOffset: region.mmapOffset, fd: memory.fd),
                       sent)
        XCTAssertEqual(double.errors, [])
    }

    func testVringAddressesLieInsideTheRegionAndMatchTheDriverRings() throws {
        let (double, device, memory) = try startedSession()
        let n = 256
        for i in 0..<device.vringCount {
            guard let addr = double.vring(UInt32(i))?.addr else { return XCTFail("vring \(i) has no address") }
            let ring = device.rings[i]
            XCTAssertEqual(addr.descUserAddr, UInt64(UInt(bitPattern: ring.descTable)), "vring \(i)")
            XCTAssertEqual(addr.availUserAddr, UInt64(UInt(bitPattern: ring.availRing)), "vring \(i)")
            XCTAssertEqual(addr.usedUserAddr, UInt64(UInt(bitPattern: ring.usedRing)), "vring \(i)")
            XCTAssertTrue(memory.contains(address: addr.descUserAddr, length: 16 * n), "vring \(i) desc")
            XCTAssertTrue(memory.contains(address: addr.availUserAddr, length: 6 + 2 * n), "vring \(i) avail")
            XCTAssertTrue(memory.contains(address: addr.usedUserAddr, length: 6 + 8 * n), "vring \(i) used")
            XCTAssertEqual(addr.descUserAddr % UInt64(SplitRingLayout.alignment), 0, "vring \(i) desc alignment")
            XCTAssertEqual(addr.flags, 0, "no dirty logging")
            XCTAssertEqual(addr.logGuestAddr, 0)
        }
        // The vrings do not overlap each other.
        let starts = (0..<device.vringCount).compactMap { double.vring(UInt32($0))?.addr?.descUserAddr }.sorted()
        for (a, b) in zip(starts, starts.dropFirst()) {
            XCTAssertGreaterThanOrEqual(b - a, UInt64(SplitRingLayout.totalSize(queueSize: n)))
        }
    }

    /// Bytes Ferry writes into its memory after SET_MEM_TABLE are visible to the device
    /// through the mapping it made from the fd.
    func testTheDeviceReadsWhatFerryWroteIntoSharedMemory() throws {
        let (double, _, memory) = try startedSession()
        let block = try memory.allocate(bytes: 256, alignment: 64)
        let pattern = (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        pattern.withUnsafeBytes { block.copyMemory(from: $0.baseAddress!, byteCount: 256) }
        let address = UInt64(UInt(bitPattern: block))
        XCTAssertEqual(double.readGuestMemory(at: address, length: 256), pattern)

        // And the last bytes of the region too: the whole memfd is shared.
        let end = UInt64(UInt(bitPattern: memory.base)) + UInt64(memory.size)
        (memory.base + memory.size - 4).storeBytes(of: 0xdead_beef as UInt32, as: UInt32.self)
        XCTAssertEqual(double.readGuestMemory(at: end - 4, length: 4), [0xef, 0xbe, 0xad, 0xde])
        XCTAssertNil(double.readGuestMemory(at: end - 4, length: 5), "nothing beyond the region is shared")
    }

    /// Ferry's ring writes are what the device sees: the driver asked for no interrupts
    /// (avail->flags = NO_INTERRUPT) when it built the rings.
    func testTheDeviceSeesTheDriverRingFlags() throws {
        let (double, device, _) = try startedSession()
        for i in 0..<device.vringCount {
            guard let addr = double.vring(UInt32(i))?.addr else { return XCTFail("vring \(i) has no address") }
            let flags = double.readGuestMemory(at: addr.availUserAddr + UInt64(SplitRingLayout.availFlagsOffset), length: 2)
            XCTAssertEqual(flags, [UInt8(VringFlags.availNoInterrupt), 0], "vring \(i)")
        }
    }

    /// Rings are carved from the shared memory at init, before any traffic.
    func testRingMemoryIsCarvedFromTheSharedMemoryAtInit() throws {
        let double = try startDouble()
        let memory = try makeMemory()
        let before = memory.remaining
        let device = try openDevice(double, memory: memory) {
            $0.queueSize = 512
            $0.indirect = false
        }
        let perRing = SplitRingLayout.totalSize(queueSize: 512)
        XCTAssertLessThanOrEqual(memory.remaining, before - 2 * perRing)
        XCTAssertGreaterThanOrEqual(memory.remaining, before - 2 * perRing - 2 * SplitRingLayout.alignment)
        XCTAssertEqual(device.vringCount, 2)
    }

    /// With INDIRECT_DESC offered and accepted, the TX ring's tables are carved too, at init
    /// and from the same shared memory (the backend translates table addresses through the
    /// memory table): 16 descriptors of 16 bytes per ring slot.
    func testIndirectTablesAreCarvedFromTheSharedMemoryAtInit() throws {
        let double = try startDouble()
        let memory = try makeMemory()
        let before = memory.remaining
        _ = try openDevice(double, memory: memory) { $0.queueSize = 512 }
        let perRing = SplitRingLayout.totalSize(queueSize: 512)
        let tables = 512 * VirtioUserDevice.indirectMaxSegments * 16
        XCTAssertLessThanOrEqual(memory.remaining, before - 2 * perRing - tables)
        XCTAssertGreaterThanOrEqual(memory.remaining, before - 2 * perRing - tables - 2 * SplitRingLayout.alignment - 64)
        XCTAssertLessThanOrEqual(VirtioUserDevice.indirectTableBytes(queueSize: 512, queuePairs: 1), tables + 64)
        XCTAssertGreaterThanOrEqual(VirtioUserDevice.indirectTableBytes(queueSize: 512, queuePairs: 1), tables)
    }

    /// Without room for the tables the feature is refused, not the port.
    func testNoRoomForIndirectTablesRefusesTheFeature() throws {
        let double = try startDouble()
        let memory = try makeMemory()
        let ringBytes = 2 * (SplitRingLayout.totalSize(queueSize: 512) + SplitRingLayout.alignment)
        // Leave room for the rings but not for the 128 KiB of tables.
        _ = try memory.allocate(bytes: memory.remaining - ringBytes - 4096)
        let device = try openDevice(double, memory: memory) { $0.queueSize = 512 }
        try device.negotiate()
        XCTAssertFalse(device.features.contains(.ringIndirectDesc), "\(device.features)")
        XCTAssertEqual(device.rings[1].indirectCapacity, 0)
    }
}
