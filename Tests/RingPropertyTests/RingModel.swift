import FerryTestSupport
import Testing
import Virtio

/// One operation of a random run, decoded from a random integer: the low bits pick the kind,
/// the rest parameterise it.
enum RingOperation: CustomStringConvertible {
    case addSingle(writable: Bool, length: UInt32)
    case addChain(segments: Int, writable: Int)
    case addMisordered
    case publish
    case kick
    case take(Int)
    case complete(Int, seed: UInt32, batch: Bool)
    case reclaim(max: Int)
    case lap(seed: UInt32)

    init(_ raw: Int) {
        let r = UInt32(truncatingIfNeeded: raw)
        let p = r >> 4
        switch r & 15 {
        case 0, 1, 2: self = .addSingle(writable: p & 1 != 0, length: 1 + (p >> 1) % 2048)
        case 3, 4: self = .addChain(segments: 2 + Int(p % 4), writable: Int((p >> 2) % 6))
        case 5: self = .addMisordered
        case 6, 7: self = .publish
        case 8: self = .kick
        case 9, 10: self = .take(1 + Int(p % 8))
        case 11, 12: self = .complete(1 + Int(p % 8), seed: p >> 3, batch: p & 4 != 0)
        case 13, 14: self = .reclaim(max: 1 + Int(p % 8))
        default: self = .lap(seed: p)
        }
    }

    var description: String {
        switch self {
        case let .addSingle(w, l): return "addSingle(\(w ? "w" : "r"), \(l))"
        case let .addChain(s, w): return "addChain(\(s), writable \(min(w, s)))"
        case .addMisordered: return "addMisordered"
        case .publish: return "publish"
        case .kick: return "kick"
        case let .take(n): return "take(\(n))"
        case let .complete(n, _, b): return "complete(\(n)\(b ? ", batch" : ""))"
        case let .reclaim(m): return "reclaim(\(m))"
        case .lap: return "lap"
        }
    }
}

/// The reference model: what a correct driver ring must report given what the device did.
///
/// It tracks every buffer from add to reclaim: added (published or not), taken by the device,
/// completed by the device (the expected completions, in the order the device wrote them), and
/// reclaimed. After every operation it checks the ring against it: descriptors conserved
/// (numFree + descriptors in use == queueSize), chains in flight, no invalid ids or lengths from
/// an honest device; on every reclaim, that the ring reports exactly the next expected
/// completions (cookie and length); with IN_ORDER, that reclaim order is add order; and at the
/// end, that every buffer accepted was reclaimed exactly once.
struct RingModel {
    struct Posted {
        var cookie: UInt32
        var segments: [RingSegment]
        var writable: UInt32
        var published: Bool
    }

    struct Taken {
        var id: UInt16
        var posted: Posted
    }

    struct Expected: Equatable {
        var cookie: UInt32
        var length: UInt32
        var descriptors: Int
    }

    let queueSize: Int
    let inOrder: Bool
    let eventIdx: Bool
    /// Added and not yet taken by the device, in add order; published ones form a prefix.
    var waiting: [Posted] = []
    /// Taken by the device and not yet returned, in take order.
    var outstanding: [Taken] = []
    /// Returned by the device, not yet reclaimed: what the ring must report next, in order.
    var expected: [Expected] = []
    var descriptorsInUse = 0
    var chainsInFlight = 0
    var nextCookie: UInt32 = 0
    var accepted = 0
    var reclaimed = Set<UInt32>()
    var lastReclaimed: UInt32?
    var publishedSinceKick = false

    init(queueSize: Int, inOrder: Bool, eventIdx: Bool) {
        self.queueSize = queueSize
        self.inOrder = inOrder
        self.eventIdx = eventIdx
    }

    var freeDescriptors: Int { queueSize - descriptorsInUse }
}

/// Runs `operations` on `rut` against the model, then drains everything. Throws (through
/// `#require`) at the first divergence, so one failure does not cascade.
func runModel<R: DriverRing, D: DeviceDouble>(_ rut: RingUnderTest<R, D>, _ operations: [Int]) throws {
    var model = RingModel(queueSize: Int(rut.queueSize), inOrder: rut.inOrder, eventIdx: rut.eventIdx)
    var step = 0
    for raw in operations {
        let op = RingOperation(raw)
        try apply(op, to: rut, model: &model, step: step)
        try checkInvariants(rut, model, step: step, op: op)
        step += 1
    }
    try drain(rut, model: &model, seed: UInt32(truncatingIfNeeded: operations.count))
    try checkInvariants(rut, model, step: step, op: .lap(seed: 0))
    #expect(model.reclaimed.count == model.accepted, "every accepted buffer reclaimed exactly once")
    #expect(rut.ring.inFlight == 0)
    #expect(rut.ring.numFree == Int(rut.queueSize))
    // Both sides meet once all is reclaimed: a packed ring's used position reaches the avail
    // position, and a split ring's used index counts chains (IN_ORDER batches advance it by
    // their size, §2.7.9), so both reach the avail index.
    #expect(rut.ring.lastUsedIndex == rut.ring.availIndex, "both sides meet once all is reclaimed")
}

private func apply<R: DriverRing, D: DeviceDouble>(_ op: RingOperation, to rut: RingUnderTest<R, D>,
                                                   model: inout RingModel, step: Int) throws {
    switch op {
    case let .addSingle(writable, length):
        let segment = RingSegment(address: RingUnderTest<R, D>.address(cookie: model.nextCookie, segment: 0),
                                  length: length, deviceWritable: writable)
        try add([segment], rut: rut, model: &model, step: step)
    case let .addChain(count, writableCount):
        let w = min(writableCount, count)
        let segments = (0..<count).map { i in
            RingSegment(address: RingUnderTest<R, D>.address(cookie: model.nextCookie, segment: i),
                        length: UInt32(64 + 16 * i), deviceWritable: i >= count - w)
        }
        try add(segments, rut: rut, model: &model, step: step)
    case .addMisordered:
        // A writable segment before a readable one is refused and leaves no trace.
        let before = (rut.ring.numFree, rut.ring.inFlight, rut.ring.availIndex)
        let segments = [RingSegment(address: 0x1000, length: 8, deviceWritable: true),
                        RingSegment(address: 0x2000, length: 8, deviceWritable: false)]
        try #require(!rut.add(segments, cookie: 0xDEAD), "step \(step): misordered chain accepted")
        let after = (rut.ring.numFree, rut.ring.inFlight, rut.ring.availIndex)
        try #require(before == after, "step \(step): refused chain changed the ring")
    case .publish:
        rut.ring.publish()
        if model.waiting.contains(where: { !$0.published }) { model.publishedSinceKick = true }
        for i in model.waiting.indices { model.waiting[i].published = true }
    case .kick:
        let kick = rut.ring.kickNeeded()
        if !model.publishedSinceKick {
            try #require(!kick, "step \(step): kick with nothing published since the last check")
        } else if !model.eventIdx {
            // The device never suppresses notifications in these runs.
            try #require(kick, "step \(step): no kick although the device asks for every one")
        }
        model.publishedSinceKick = false
    case let .take(n):
        try take(n, rut: rut, model: &model, step: step)
    case let .complete(n, seed, batch):
        complete(n, seed: seed, batch: batch, rut: rut, model: &model)
    case let .reclaim(max):
        try reclaim(max: max, rut: rut, model: &model, step: step)
    case let .lap(seed):
        // Fill the ring with single buffers, then run everything through: with many of these
        // in a run the ring laps (split: indices advance, packed: both wrap counters flip).
        var cookie = model.nextCookie
        while model.freeDescriptors > 0 {
            let segment = RingSegment(address: RingUnderTest<R, D>.address(cookie: cookie, segment: 0),
                                      length: 100, deviceWritable: seed & 1 != 0)
            try add([segment], rut: rut, model: &model, step: step)
            cookie = model.nextCookie
        }
        try drain(rut, model: &model, seed: seed)
    }
}

private func add<R: DriverRing, D: DeviceDouble>(_ segments: [RingSegment], rut: RingUnderTest<R, D>,
                                                 model: inout RingModel, step: Int) throws {
    let cookie = model.nextCookie
    let fits = segments.count <= model.freeDescriptors
    let ok = rut.add(segments, cookie: cookie)
    try #require(ok == fits, "step \(step): add of \(segments.count) with \(model.freeDescriptors) free returned \(ok)")
    guard ok else { return }
    let writable = segments.reduce(UInt32(0)) { $0 + ($1.deviceWritable ? $1.length : 0) }
    model.waiting.append(RingModel.Posted(cookie: cookie, segments: segments, writable: writable, published: false))
    model.descriptorsInUse += segments.count
    model.chainsInFlight += 1
    model.nextCookie += 1
    model.accepted += 1
}

/// The device takes up to `n` chains; it must see exactly the published ones, in add order,
/// with the segments as posted.
private func take<R: DriverRing, D: DeviceDouble>(_ n: Int, rut: RingUnderTest<R, D>,
                                                  model: inout RingModel, step: Int) throws {
    for _ in 0..<n {
        let chain = try rut.device.take()
        guard let next = model.waiting.first, next.published else {
            try #require(chain == nil, "step \(step): device took a chain that was not published")
            return
        }
        let c = try #require(chain, "step \(step): published chain \(next.cookie) not visible to the device")
        try #require(c.segments.count == next.segments.count, "step \(step): chain length differs")
        for (i, s) in c.segments.enumerated() {
            let (cookie, index) = RingUnderTest<R, D>.decode(s.pointer)
            try #require(cookie == next.cookie && index == i, "step \(step): device saw a foreign buffer")
            try #require(s.length == Int(next.segments[i].length) && s.deviceWritable == next.segments[i].deviceWritable,
                         "step \(step): segment \(i) differs")
        }
        try #require(!model.outstanding.contains { $0.id == c.head }, "step \(step): id \(c.head) in flight twice")
        try #require(c.head < rut.queueSize, "step \(step): id \(c.head) out of range")
        model.waiting.removeFirst()
        model.outstanding.append(RingModel.Taken(id: c.head, posted: next))
    }
}

/// The device returns up to `n` chains: any of them without IN_ORDER (in an order `seed`
/// picks); the oldest ones with IN_ORDER, individually or as one batch.
private func complete<R: DriverRing, D: DeviceDouble>(_ n: Int, seed: UInt32, batch: Bool, rut: RingUnderTest<R, D>,
                                                      model: inout RingModel) {
    let count = min(n, model.outstanding.count)
    guard count > 0 else { return }
    var s = seed
    func length(for posted: RingModel.Posted) -> UInt32 {
        s = s &* 1_103_515_245 &+ 12_345
        return posted.writable == 0 ? 0 : (s >> 8) % (posted.writable + 1)
    }
    if model.inOrder {
        let done = Array(model.outstanding.prefix(count))
        model.outstanding.removeFirst(count)
        if batch && count > 1 {
            let last = done[count - 1]
            let l = length(for: last.posted)
            rut.device.completeBatch(lastID: last.id, count: count, length: l)
            // The chains before the last were used completely (§2.7.9): their posted length.
            for (i, t) in done.enumerated() {
                model.expected.append(RingModel.Expected(cookie: t.posted.cookie,
                                                         length: i == count - 1 ? l : t.posted.writable,
                                                         descriptors: t.posted.segments.count))
            }
        } else {
            for t in done {
                let l = length(for: t.posted)
                rut.device.complete(id: t.id, length: l)
                model.expected.append(RingModel.Expected(cookie: t.posted.cookie, length: l,
                                                         descriptors: t.posted.segments.count))
            }
        }
        return
    }
    for _ in 0..<count {
        s = s &* 1_103_515_245 &+ 12_345
        let k = Int((s >> 8) % UInt32(model.outstanding.count))
        let t = model.outstanding.remove(at: k)
        let l = length(for: t.posted)
        rut.device.complete(id: t.id, length: l)
        model.expected.append(RingModel.Expected(cookie: t.posted.cookie, length: l,
                                                 descriptors: t.posted.segments.count))
    }
}

/// The driver reclaims up to `max`: exactly the next expected completions, in order.
private func reclaim<R: DriverRing, D: DeviceDouble>(max: Int, rut: RingUnderTest<R, D>,
                                                     model: inout RingModel, step: Int) throws {
    let got = rut.dequeue(max: max)
    let want = Array(model.expected.prefix(max))
    try #require(got.count == want.count,
                 "step \(step): reclaimed \(got.count), expected \(want.count): \(got.map(\.cookie)) vs \(want.map(\.cookie))")
    for (g, w) in zip(got, want) {
        try #require(g.cookie == w.cookie && (g.length == nil || g.length == w.length),
                     "step \(step): reclaimed (\(g.cookie), \(String(describing: g.length))), expected (\(w.cookie), \(w.length))")
        try #require(!model.reclaimed.contains(g.cookie), "step \(step): cookie \(g.cookie) reclaimed twice")
        if model.inOrder, let last = model.lastReclaimed {
            try #require(g.cookie > last, "step \(step): IN_ORDER reclaim out of add order")
        }
        model.reclaimed.insert(g.cookie)
        model.lastReclaimed = g.cookie
        model.descriptorsInUse -= w.descriptors
        model.chainsInFlight -= 1
    }
    model.expected.removeFirst(got.count)
}

/// Publishes, lets the device take and return everything, and reclaims it all.
private func drain<R: DriverRing, D: DeviceDouble>(_ rut: RingUnderTest<R, D>, model: inout RingModel,
                                                   seed: UInt32) throws {
    try apply(.publish, to: rut, model: &model, step: -1)
    _ = rut.ring.kickNeeded()
    model.publishedSinceKick = false
    try take(model.waiting.count, rut: rut, model: &model, step: -1)
    complete(model.outstanding.count, seed: seed, batch: seed & 2 != 0, rut: rut, model: &model)
    while !model.expected.isEmpty {
        let before = model.expected.count
        try reclaim(max: 1 + Int(seed % 64), rut: rut, model: &model, step: -1)
        try #require(model.expected.count < before, "drain made no progress")
    }
}

private func checkInvariants<R: DriverRing, D: DeviceDouble>(_ rut: RingUnderTest<R, D>, _ model: RingModel,
                                                             step: Int, op: RingOperation) throws {
    try #require(rut.ring.numFree + model.descriptorsInUse == Int(rut.queueSize),
                 "step \(step) \(op): numFree \(rut.ring.numFree) + in use \(model.descriptorsInUse) != \(rut.queueSize)")
    try #require(rut.ring.inFlight == model.chainsInFlight, "step \(step) \(op): inFlight")
    try #require(rut.ring.invalidUsedIds == 0, "step \(step) \(op): an honest device produced an invalid id")
    try #require(rut.ring.invalidUsedLengths == 0, "step \(step) \(op): an honest device produced an invalid length")
    // The ring's own list of buffers in flight matches the model's (cheap enough on small rings).
    if rut.queueSize <= 256 || step % 16 == 0 {
        var modelCookies = model.waiting.map(\.cookie) + model.outstanding.map(\.posted.cookie)
            + model.expected.map(\.cookie)
        modelCookies.sort()
        try #require(rut.inFlightCookies.sorted() == modelCookies, "step \(step) \(op): forEachInFlight")
        if model.inOrder {
            try #require(rut.inFlightCookies == rut.inFlightCookies.sorted(), "step \(step): IN_ORDER in-flight order")
        }
    }
    // Completed chains waiting: both ring kinds count chains, a batch for all of its chains.
    let pending = rut.ring.pendingUsed()
    try #require(pending == model.expected.count, "step \(step) \(op): pendingUsed counts chains")
}
