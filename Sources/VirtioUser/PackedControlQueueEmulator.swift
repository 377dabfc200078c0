import CFerry
import Virtio

/// The device side of the emulated control virtqueue on a packed ring (the seed's
/// `virtio_user_handle_cq_packed`, virtio 1.2 §2.8).
///
/// Chains are read in ring order from the device's position while their descriptors are
/// available; each is answered with one used descriptor written at its first slot (the chain's
/// buffer id, the bytes written, and flags stored last with a release). As on split rings,
/// every chain length, address and size is checked and a malformed chain is answered
/// VIRTIO_NET_ERR where its status can be found, never with a crash or an endless loop.
struct PackedControlQueueEmulator {
    let queueSize: Int
    let desc: UnsafeMutableRawPointer
    let translate: (UInt64, Int) -> UnsafeMutableRawPointer?
    /// The device's next position and its wrap counter (starts at 1, §2.8.1).
    private(set) var position = 0
    private(set) var wrap = true
    private(set) var malformedChains: UInt64 = 0

    init(queueSize: Int, desc: UnsafeMutableRawPointer, translate: @escaping (UInt64, Int) -> UnsafeMutableRawPointer?) {
        self.queueSize = queueSize
        self.desc = desc
        self.translate = translate
    }

    private func descriptor(_ slot: Int) -> UnsafeMutableRawPointer {
        desc + slot * PackedRingLayout.descriptorSize
    }

    private func flags(at slot: Int) -> UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(descriptor(slot) + PackedRingLayout.descFlagsOffset))
    }

    @discardableResult
    mutating func process(_ handle: (VirtioNetControlCommand) -> UInt8) -> Int {
        var handled = 0
        // At most one lap per call: the driver cannot have more outstanding.
        while handled < queueSize, PackedRingFlags.isAvailable(flags: flags(at: position), wrap: wrap) {
            let head = position
            var chain: [ControlChain.Segment] = []
            var slot = head
            var slotWrap = wrap
            var lastID: UInt16 = 0
            var complete = false
            while chain.count < min(ControlChain.maxDescriptors, queueSize) {
                let d = descriptor(slot)
                let f = flags(at: slot)
                guard PackedRingFlags.isAvailable(flags: f, wrap: slotWrap) else { break }
                chain.append(.init(address: d.loadUnaligned(fromByteOffset: PackedRingLayout.descAddrOffset, as: UInt64.self),
                                   length: d.loadUnaligned(fromByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self),
                                   writable: f & PackedRingFlags.descWrite != 0))
                lastID = d.loadUnaligned(fromByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self)
                slot += 1
                if slot == queueSize { slot = 0; slotWrap.toggle() }
                if f & PackedRingFlags.descIndirect != 0 { break }
                if f & PackedRingFlags.descNext == 0 { complete = true; break }
            }
            var written: UInt32 = 0
            let parsed: ControlChain.Parsed = complete ? ControlChain.parse(chain, translate: translate) : .malformed(status: nil)
            switch parsed {
            case let .command(command, status):
                status.storeBytes(of: handle(command), as: UInt8.self)
                written = 1
            case let .malformed(status):
                malformedChains &+= 1
                if let status {
                    status.storeBytes(of: VirtioNetControl.ackErr, as: UInt8.self)
                    written = 1
                }
            }
            // The used descriptor goes in the chain's first slot; the flags go last.
            let d = descriptor(head)
            d.storeBytes(of: lastID, toByteOffset: PackedRingLayout.descIdOffset, as: UInt16.self)
            d.storeBytes(of: written, toByteOffset: PackedRingLayout.descLenOffset, as: UInt32.self)
            var usedFlags = PackedRingFlags.usedBits(wrap: wrap)
            if written > 0 { usedFlags |= PackedRingFlags.descWrite }
            ferry_store_release_u16(d + PackedRingLayout.descFlagsOffset, usedFlags.littleEndian)
            // Move past the whole chain (at least one slot, so a broken chain cannot stall us).
            let consumed = max(1, chain.count)
            position += consumed
            if position >= queueSize { position -= queueSize; wrap.toggle() }
            handled += 1
        }
        return handled
    }
}
