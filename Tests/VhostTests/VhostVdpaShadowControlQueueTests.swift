import XCTest
import CFerry
import FerryTestSupport
import Foundation
import Virtio
@testable import Vhost
#if canImport(Glibc)
import Glibc
#endif

/// The shadow control queue against a recording vDPA device and, for the answers, a device
/// thread that serves the ring through the real kick and call eventfds, as vdpa_sim_net does.
final class VhostVdpaShadowControlQueueTests: XCTestCase {
    var memory: SharedTestMemory!
    var device: RecordingIoctlDevice!
    var backend: VhostVdpaBackend!

    override func setUpWithError() throws {
        memory = try SharedTestMemory(size: 64 * 1024)
        device = RecordingIoctlDevice()
        device.replies[VhostIoctl.vdpaGetDeviceID] = bytes(of: UInt32(1))
        device.replies[VhostIoctl.vdpaGetVqsCount] = bytes(of: UInt32(3))
        backend = try VhostVdpaBackend(path: "/dev/vhost-vdpa-0", device: device)
    }

    override func tearDown() {
        backend = nil
        device = nil
        memory = nil
    }

    func makeQueue(timeoutMs: Int = 5000) throws -> VhostVdpaShadowControlQueue {
        try VhostVdpaShadowControlQueue(backend: backend, vringIndex: 2, queueSize: 16,
                                        ringMemory: memory.base, buffer: memory.base + 16384,
                                        bufferSize: 1024, timeoutMs: timeoutMs)
    }

    /// The fd the queue gave the device with `request` (SET_VRING_KICK or SET_VRING_CALL).
    func fd(_ request: UInt) -> Int32 {
        load(Int32.self, device.calls(request).last!.bytes, at: 4)
    }

    /// Serves `answers.count` commands on another thread: waits for a kick, pops the chain,
    /// records the command bytes, writes the status (or nothing) and signals the call fd.
    final class DeviceThread {
        private(set) var commands: [[UInt8]] = []
        let done = DispatchSemaphore(value: 0)

        /// `answers`: the status byte to write, or nil to complete without writing one.
        init(queue: VhostVdpaShadowControlQueue, memory: SharedTestMemory, kick: Int32, call: Int32, answers: [UInt8?]) {
            let n = UInt16(queue.queueSize)
            // Addresses cross to the thread as integers (pointers are not Sendable).
            let baseAddress = UInt(bitPattern: memory.base)
            let size = memory.size
            let thread = Thread { [self] in
                let base = UnsafeMutableRawPointer(bitPattern: baseAddress)!
                var ring = DeviceSplitRing(
                    queueSize: n, desc: base, avail: base + SplitRingLayout.availOffset(queueSize: Int(n)),
                    used: base + SplitRingLayout.usedOffset(queueSize: Int(n)),
                    translate: { address, length in
                        let lo = UInt64(baseAddress)
                        guard address >= lo, length >= 0, address - lo + UInt64(length) <= UInt64(size) else { return nil }
                        return UnsafeMutableRawPointer(bitPattern: UInt(address))
                    })
                for answer in answers {
                    var chain: DeviceChain?
                    while chain == nil {
                        var p = pollfd(fd: kick, events: Int16(POLLIN), revents: 0)
                        _ = poll(&p, 1, 100)
                        var v: UInt64 = 0
                        _ = read(kick, &v, 8)
                        chain = try? ring.popAvail()
                    }
                    self.commands.append(chain!.readableBytes())
                    var written: UInt32 = 0
                    if let answer { written = UInt32(chain!.writeWritable([answer])) }
                    ring.pushUsed(id: chain!.head, length: written)
                    var one: UInt64 = 1
                    _ = write(call, &one, 8)
                }
                self.done.signal()
            }
            thread.start()
        }
    }

    func testStartProgramsTheDevicesControlVring() throws {
        let q = try makeQueue()
        try q.setCall()
        try q.start(features: 1 << 32)
        let forIndex2 = device.calls.filter { [VhostIoctl.setVringNum, VhostIoctl.setVringBase, VhostIoctl.setVringAddr,
                                               VhostIoctl.setVringKick, VhostIoctl.setVringCall,
                                               VhostIoctl.vdpaSetVringEnable].contains($0.request) }
        XCTAssertEqual(forIndex2.map(\.request), [VhostIoctl.setVringCall, VhostIoctl.setVringNum, VhostIoctl.setVringBase,
                                                  VhostIoctl.setVringAddr, VhostIoctl.setVringKick, VhostIoctl.vdpaSetVringEnable])
        XCTAssertTrue(forIndex2.allSatisfy { load(UInt32.self, $0.bytes) == 2 }, "every call is for vring 2")
        XCTAssertEqual(load(UInt32.self, device.calls(VhostIoctl.setVringNum)[0].bytes, at: 4), 16)
        XCTAssertEqual(load(UInt64.self, device.calls(VhostIoctl.setVringAddr)[0].bytes, at: 8), memory.address,
                       "the descriptor table is the ring memory given")
        XCTAssertEqual(load(UInt32.self, device.calls(VhostIoctl.vdpaSetVringEnable)[0].bytes, at: 4), 1)
        try q.stop()
        XCTAssertEqual(load(UInt32.self, device.calls(VhostIoctl.vdpaSetVringEnable).last!.bytes, at: 4), 0)
        q.close()
    }

    func testReplayReturnsTheDevicesAck() throws {
        let q = try makeQueue()
        try q.setCall()
        try q.start(features: 1 << 32)
        let server = DeviceThread(queue: q, memory: memory, kick: fd(VhostIoctl.setVringKick),
                                  call: fd(VhostIoctl.setVringCall), answers: [0, 1])
        let mac: [UInt8] = [0x02, 0, 0, 0, 0, 0x42]
        XCTAssertEqual(try q.replay(.macAddrSet(mac)), VirtioNetControl.ackOK)
        XCTAssertEqual(try q.replay(.rxMode(VirtioNetControl.Rx.promisc, on: true)), VirtioNetControl.ackErr)
        XCTAssertEqual(server.done.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(server.commands, [[1, 1] + mac, [0, 0, 1]], "header then data, as the driver sent them")
        XCTAssertEqual(q.commandsReplayed, 2)
        q.close()
    }

    func testAStatusOtherThanOkOrErrIsErr() throws {
        let q = try makeQueue()
        try q.start(features: 1 << 32)
        let server = DeviceThread(queue: q, memory: memory, kick: fd(VhostIoctl.setVringKick),
                                  call: -1, answers: [7])
        XCTAssertEqual(try q.replay(.vlanAdd(5)), VirtioNetControl.ackErr)
        XCTAssertEqual(server.done.wait(timeout: .now() + 10), .success)
        q.close()
    }

    func testAnAnswerWithoutStatusIsAnError() throws {
        let q = try makeQueue()
        try q.start(features: 1 << 32)
        let server = DeviceThread(queue: q, memory: memory, kick: fd(VhostIoctl.setVringKick),
                                  call: -1, answers: [nil])
        XCTAssertThrowsError(try q.replay(.announceAck)) { error in
            guard case .protocolViolation = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(server.done.wait(timeout: .now() + 10), .success)
        q.close()
    }

    func testASilentDeviceIsATimeoutAndStallsTheQueue() throws {
        let q = try makeQueue(timeoutMs: 20)
        try q.start(features: 1 << 32)
        XCTAssertThrowsError(try q.replay(.macAddrSet([2, 0, 0, 0, 0, 1]))) { error in
            guard case .timeout = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertTrue(q.stalled)
        XCTAssertThrowsError(try q.replay(.macAddrSet([2, 0, 0, 0, 0, 1]))) { error in
            guard case let .timeout(_, what) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertTrue(what.contains("stalled"), what)
        }
        // A restart (after a device reset) makes it usable again.
        try q.start(features: 1 << 32)
        XCTAssertFalse(q.stalled)
        q.close()
    }

    func testReplayBeforeStartAndAfterCloseAreErrors() throws {
        let q = try makeQueue()
        XCTAssertThrowsError(try q.replay(.announceAck)) { error in
            guard case .notSupported = error as? VhostError else { return XCTFail("\(error)") }
        }
        q.close()
        XCTAssertThrowsError(try q.replay(.announceAck)) { error in
            XCTAssertEqual(error as? VhostError, .closed(path: "/dev/vhost-vdpa-0"))
        }
    }

    func testACommandLargerThanTheBufferIsRefused() throws {
        let q = try VhostVdpaShadowControlQueue(backend: backend, vringIndex: 2, queueSize: 16, ringMemory: memory.base,
                                                buffer: memory.base + 16384, bufferSize: 8)
        try q.start(features: 1 << 32)
        XCTAssertThrowsError(try q.replay(.macAddrSet([2, 0, 0, 0, 0, 1]))) { error in
            guard case let .io(_, _, e) = error as? VhostError else { return XCTFail("\(error)") }
            XCTAssertEqual(e, EMSGSIZE)
        }
        q.close()
    }

    func testAQueueBeyondTheDevicesVirtqueuesIsRefused() {
        XCTAssertThrowsError(try VhostVdpaShadowControlQueue(backend: backend, vringIndex: 3, ringMemory: memory.base,
                                                             buffer: memory.base + 16384)) { error in
            guard case .notSupported = error as? VhostError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try VhostVdpaShadowControlQueue(backend: backend, vringIndex: 2, queueSize: 12,
                                                             ringMemory: memory.base, buffer: memory.base + 16384))
    }
}
