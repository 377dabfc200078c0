/// What a DUT and the backend actually agreed on, to check a configuration ran as asked.
///
/// A DUT may drop a feature it was told to offer (a driver without packed-ring support
/// negotiates a split ring; virtio_user masks features it cannot use), and the backend may not
/// offer one. The rate of such a run belongs to another configuration, so a run whose features
/// differ from the request is flagged, never reported as the requested combination.
public struct NegotiatedFeatures: Codable, Sendable, Equatable {
    /// The feature bits, when the source gives them (the backend's log does; Ferry's line
    /// gives only the three flags).
    public var bits: UInt64?
    public var packedVq: Bool
    public var mrgRxbuf: Bool
    public var inOrder: Bool

    /// Feature bit numbers (virtio 1.2 §5.1.3 for MRG_RXBUF, §6 for the reserved bits).
    static let mrgRxbufBit: UInt64 = 15
    static let ringPackedBit: UInt64 = 34
    static let inOrderBit: UInt64 = 35

    public init(bits: UInt64?, packedVq: Bool, mrgRxbuf: Bool, inOrder: Bool) {
        self.bits = bits
        self.packedVq = packedVq
        self.mrgRxbuf = mrgRxbuf
        self.inOrder = inOrder
    }

    public init(bits: UInt64) {
        self.init(bits: bits, packedVq: bits >> Self.ringPackedBit & 1 == 1,
                  mrgRxbuf: bits >> Self.mrgRxbufBit & 1 == 1, inOrder: bits >> Self.inOrderBit & 1 == 1)
    }

    /// The features the backend (DPDK's vhost library) accepted last in `log`: its
    /// `negotiated Virtio features: 0x…` line, printed on each VHOST_USER_SET_FEATURES when
    /// `lib.vhost.config` logs at info or debug. The last one is the one the rings ran with
    /// (a driver may set features again after a reset). nil when there is none.
    public static func fromBackendLog(_ log: String) -> NegotiatedFeatures? {
        let marker = "negotiated Virtio features: 0x"
        var last: NegotiatedFeatures?
        for line in log.split(separator: "\n") {
            guard let r = line.range(of: marker) else { continue }
            let hex = line[r.upperBound...].prefix { $0.isHexDigit }
            if let v = UInt64(hex, radix: 16) { last = NegotiatedFeatures(bits: v) }
        }
        return last
    }

    /// What Ferry says it runs port 0 with: its `port 0 (…): packed ring, …, mrg_rxbuf on,
    /// in_order off, …` line (Forwarding/Port.swift). nil when there is none.
    public static func fromFerryLog(_ log: String) -> NegotiatedFeatures? {
        var last: NegotiatedFeatures?
        for line in log.split(separator: "\n") where line.contains("port 0 (") && line.contains(" ring, ") {
            let packed: Bool
            if line.contains(": packed ring,") { packed = true } else if line.contains(": split ring,") { packed = false } else { continue }
            guard let mrg = flag("mrg_rxbuf", in: line), let inOrder = flag("in_order", in: line) else { continue }
            last = NegotiatedFeatures(bits: nil, packedVq: packed, mrgRxbuf: mrg, inOrder: inOrder)
        }
        return last
    }

    static func flag(_ name: String, in line: Substring) -> Bool? {
        if line.contains("\(name) on") { return true }
        if line.contains("\(name) off") { return false }
        return nil
    }

    /// The requested features that differ, e.g. ["in_order: asked 1, got 0"]; empty when all
    /// three match.
    public func differences(from config: BenchConfig) -> [String] {
        var out: [String] = []
        func check(_ name: String, _ asked: Bool, _ got: Bool) {
            if asked != got { out.append("\(name): asked \(asked ? 1 : 0), got \(got ? 1 : 0)") }
        }
        check("packed_vq", config.packed, packedVq)
        check("mrg_rxbuf", config.mrgRxbuf, mrgRxbuf)
        check("in_order", config.inOrder, inOrder)
        return out
    }

    /// "packed_vq=1,mrg_rxbuf=0,in_order=1", the request's form.
    public var summary: String {
        "packed_vq=\(packedVq ? 1 : 0),mrg_rxbuf=\(mrgRxbuf ? 1 : 0),in_order=\(inOrder ? 1 : 0)"
    }
}
