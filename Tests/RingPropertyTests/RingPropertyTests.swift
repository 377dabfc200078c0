import FerryTestSupport
import PropertyBased
import Testing
import Virtio

/// Random sequences of add (single and chained), publish, kick check, device take, device
/// return (out of order without IN_ORDER; in order, singly or batched, with it), reclaim and
/// whole-ring laps, on both ring kinds, checked step by step against `RingModel`.
@Suite("Driver rings against a reference model")
struct RingPropertyTests {
    /// Operation sequences: raw integers decoded by `RingOperation`.
    static let operations = Gen.int(in: 0...Int(UInt32.max)).array(of: 1...160)

    static let packedSizes: [UInt16] = [1, 2, 3, 255, 256, 1025]
    static let splitSizes: [UInt16] = [1, 2, 4, 256, 1024]

    /// Fewer runs on the big rings: each lap there moves a thousand buffers.
    static func runs(_ size: UInt16) -> Int { size > 256 ? 20 : 100 }

    @Test("packed ring", arguments: packedSizes, [false, true])
    func packed(size: UInt16, inOrder: Bool) async {
        await propertyCheck(count: Self.runs(size), input: Self.operations, Gen.bool) { ops, eventIdx in
            let rut = RingUnderTest(packed: size, eventIdx: eventIdx, inOrder: inOrder)
            try runModel(rut, ops)
        }
    }

    @Test("split ring", arguments: splitSizes, [false, true])
    func split(size: UInt16, inOrder: Bool) async {
        await propertyCheck(count: Self.runs(size), input: Self.operations, Gen.bool) { ops, eventIdx in
            let rut = RingUnderTest(split: size, eventIdx: eventIdx, inOrder: inOrder)
            try runModel(rut, ops)
        }
    }

    /// TX-style reclaim (`reclaimUsed`): with IN_ORDER the split ring reads only used->idx and
    /// the packed ring one descriptor per batch; the same model checks every cookie and order.
    @Test("reclaim-only (TX) path", arguments: [UInt16(1), 3, 256], [false, true])
    func reclaimOnly(size: UInt16, inOrder: Bool) async {
        await propertyCheck(count: 60, input: Self.operations, Gen.bool) { ops, eventIdx in
            let packed = RingUnderTest(packed: size, eventIdx: eventIdx, inOrder: inOrder)
            packed.reclaimOnly = true
            try runModel(packed, ops)
            if size & (size - 1) == 0 {
                let split = RingUnderTest(split: size, eventIdx: eventIdx, inOrder: inOrder)
                split.reclaimOnly = true
                try runModel(split, ops)
            }
        }
    }

    /// The checks can fail: a device that silently drops one completion (the driver then
    /// never reports that buffer) is caught, on both ring kinds.
    @Test("the model catches a lost completion")
    func modelCatchesALostCompletion() {
        let lap = 15 // RingOperation: fill the ring and run it all through
        withKnownIssue {
            let rut = RingUnderTest(queueSize: 8, eventIdx: false, inOrder: false) { (ring: PackedRing) in
                DroppingDevice(inner: DevicePackedRing(queueSize: 8, desc: ring.descTable, driverEvent: ring.availRing,
                                                       deviceEvent: ring.usedRing,
                                                       translate: RingUnderTest<PackedRing, DevicePackedRing>.identity))
            }
            try runModel(rut, [lap])
        }
        withKnownIssue {
            let rut = RingUnderTest(queueSize: 8, eventIdx: false, inOrder: false) { (ring: SplitRing) in
                DroppingDevice(inner: DeviceSplitRing(queueSize: 8, desc: ring.descTable, avail: ring.availRing,
                                                      used: ring.usedRing,
                                                      translate: RingUnderTest<SplitRing, DeviceSplitRing>.identity))
            }
            try runModel(rut, [lap])
        }
    }
}

/// A broken device: forgets to return its second completion.
struct DroppingDevice<Inner: DeviceDouble>: DeviceDouble {
    var inner: Inner
    var completions = 0
    mutating func take() throws -> DeviceChain? { try inner.take() }
    mutating func complete(id: UInt16, length: UInt32) {
        completions += 1
        if completions != 2 { inner.complete(id: id, length: length) }
    }
    mutating func completeBatch(lastID: UInt16, count: Int, length: UInt32) {
        inner.completeBatch(lastID: lastID, count: count, length: length)
    }
}
