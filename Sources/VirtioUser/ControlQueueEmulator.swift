import CFerry
import Virtio

/// The device side of the control virtqueue, which virtio-user emulates: the backend never
/// sees this ring (the seed's `virtio_user_handle_cq_split`).
///
/// It reads what the driver placed on the ring, hands each well-formed command to a handler
/// and writes the ack back. The ring lives in Ferry's own memory, but its contents are treated
/// as untrusted all the same, as a device must treat them (virtio 1.2 §2.7.5): every index,
/// chain length, address and size is checked, and a malformed chain is answered
/// VIRTIO_NET_ERR where its status byte can be found, and skipped otherwise. Never a crash, a
/// loop or a write outside shared memory.
struct SplitControlQueueEmulator {
    static var maxDataBytes: Int { ControlChain.maxDataBytes }

    let queueSize: Int
    let desc: UnsafeMutableRawPointer
    let avail: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer
    /// Maps a driver address and length to a pointer, or nil when outside shared memory.
    let translate: (UInt64, Int) -> UnsafeMutableRawPointer?
    private(set) var lastAvailIndex: UInt16 = 0
    /// Chains rejected as malformed.
    private(set) var malformedChains: UInt64 = 0

    init(queueSize: Int, desc: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer,
         used: UnsafeMutableRawPointer, translate: @escaping (UInt64, Int) -> UnsafeMutableRawPointer?) {
        self.queueSize = queueSize
        self.desc = desc
        self.avail = avail
        self.used = used
        self.translate = translate
    }

    /// Handles every command made available since the last call. Returns how many chains
    /// were consumed.
    @discardableResult
    mutating func process(_ handle: (VirtioNetControlCommand) -> UInt8) -> Int {
        let availIndex = ferry_load_acquire_u16(avail + SplitRingLayout.availIdxOffset)
        var pending = Int(availIndex &- lastAvailIndex)
        // A driver cannot have more chains outstanding than the ring has entries.
        if pending > queueSize { pending = queueSize }
        var handled = 0
        while handled < pending {
            let slot = Int(lastAvailIndex) % queueSize
            let head = avail.loadUnaligned(fromByteOffset: SplitRingLayout.availRingOffset + 2 * slot, as: UInt16.self)
            var writtenLength: UInt32 = 0
            switch parse(head: head) {
            case let .command(command, status):
                status.storeBytes(of: handle(command), as: UInt8.self)
                writtenLength = 1
            case let .malformed(status):
                malformedChains &+= 1
                if let status {
                    status.storeBytes(of: VirtioNetControl.ackErr, as: UInt8.self)
                    writtenLength = 1
                }
            }
            pushUsed(id: UInt32(head), length: writtenLength)
            lastAvailIndex &+= 1
            handled += 1
        }
        return handled
    }

    private func parse(head: UInt16) -> ControlChain.Parsed {
        // Collect the chain: at most header + data + status descriptors, each index in range.
        var chain: [ControlChain.Segment] = []
        var index = Int(head)
        while true {
            guard index < queueSize, chain.count < ControlChain.maxDescriptors else { return .malformed(status: nil) }
            let d = desc + index * SplitRingLayout.descriptorSize
            let address = d.loadUnaligned(fromByteOffset: SplitRingLayout.descAddrOffset, as: UInt64.self)
            let length = d.loadUnaligned(fromByteOffset: SplitRingLayout.descLenOffset, as: UInt32.self)
            let flags = d.loadUnaligned(fromByteOffset: SplitRingLayout.descFlagsOffset, as: UInt16.self)
            let next = d.loadUnaligned(fromByteOffset: SplitRingLayout.descNextOffset, as: UInt16.self)
            guard flags & VringFlags.descIndirect == 0 else { return .malformed(status: nil) }
            chain.append(.init(address: address, length: length, writable: flags & VringFlags.descWrite != 0))
            guard flags & VringFlags.descNext != 0 else { break }
            index = Int(next)
        }
        return ControlChain.parse(chain, translate: translate)
    }

    private func pushUsed(id: UInt32, length: UInt32) {
        let usedIndex = ferry_load_relaxed_u16(used + SplitRingLayout.usedIdxOffset)
        let slot = Int(usedIndex) % queueSize
        let entry = used + SplitRingLayout.usedRingOffset + slot * SplitRingLayout.usedElemSize
        entry.storeBytes(of: id, as: UInt32.self)
        entry.storeBytes(of: length, toByteOffset: 4, as: UInt32.self)
        ferry_store_release_u16(used + SplitRingLayout.usedIdxOffset, usedIndex &+ 1)
    }
}

/// What both control-queue emulators do once a chain is collected: check it and decode the
/// command (virtio 1.2 §5.1.6.5). Shared so split and packed rings judge chains alike.
enum ControlChain {
    /// The most data descriptors one command may carry (DPDK's CVQ_MAX_DATA_DESCS).
    static let maxDataDescriptors = 32
    /// Header, data and status.
    static let maxDescriptors = maxDataDescriptors + 2
    /// The most data bytes one command may carry. MAC_TABLE_SET is the largest real command.
    static let maxDataBytes = 4096

    struct Segment {
        var address: UInt64
        var length: UInt32
        var writable: Bool
    }

    enum Parsed {
        case command(VirtioNetControlCommand, status: UnsafeMutableRawPointer)
        case malformed(status: UnsafeMutableRawPointer?)
    }

    static func parse(_ chain: [Segment], translate: (UInt64, Int) -> UnsafeMutableRawPointer?) -> Parsed {
        // The status is the last descriptor: device-writable, at least one byte.
        guard let last = chain.last, last.writable, last.length >= 1,
              let status = translate(last.address, 1) else { return .malformed(status: nil) }
        // Header and data are driver-readable; the header has class and command.
        guard chain.count >= 2, chain.dropLast().allSatisfy({ !$0.writable }),
              chain[0].length >= UInt32(VirtioNetControl.headerSize),
              chain.count - 2 <= maxDataDescriptors else { return .malformed(status: status) }
        var bytes: [UInt8] = []
        for segment in chain.dropLast() {
            guard segment.length > 0 else { return .malformed(status: status) }
            guard bytes.count + Int(segment.length) <= VirtioNetControl.headerSize + maxDataBytes,
                  let p = translate(segment.address, Int(segment.length)) else { return .malformed(status: status) }
            bytes.append(contentsOf: UnsafeRawBufferPointer(start: p, count: Int(segment.length)))
        }
        guard let command = VirtioNetControlCommand(decoding: bytes) else { return .malformed(status: status) }
        return .command(command, status: status)
    }
}
