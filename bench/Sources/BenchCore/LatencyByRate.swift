/// Both DUTs' load points grouped by the rate the generator offered: the same traffic, side by
/// side.
///
/// The loads are fractions of each DUT's own maximum, so a faster DUT's "50 %" carries more
/// frames, and on this machine the tail grows with the offered rate for either DUT. Binned by
/// rate, the points compare what each DUT adds for the same traffic. Points that failed or
/// fell behind (overloaded) are left out: they measure a queue at a rate the machine could not
/// carry at that moment, so leaving them out never flatters the faster DUT.
public struct LatencyByRate: Codable, Sendable, Equatable {
    /// The bin, offered Mpps: [low, high).
    public var lowMpps: Double
    public var highMpps: Double
    public var dut: DUTKind
    public var points: Int
    /// Medians over the bin's points, ns.
    public var medianP99: Double
    public var medianP50: Double

    /// Bins `binMpps` wide; one row per bin and DUT that has a point.
    public static func bin(_ results: [LatencyResult], binMpps: Double = 0.5) -> [LatencyByRate] {
        precondition(binMpps > 0)
        var groups: [Int: [DUTKind: [LatencyPoint]]] = [:]
        for r in results {
            for p in r.points where p.error == nil && p.overloaded != true && p.received > 0 && p.targetPps > 0 {
                let b = Int((p.targetPps / 1e6 / binMpps).rounded(.down))
                groups[b, default: [:]][r.dut, default: []].append(p)
            }
        }
        return groups.keys.sorted().flatMap { b in
            DUTKind.allCases.compactMap { kind -> LatencyByRate? in
                guard let points = groups[b]?[kind], !points.isEmpty,
                      let p99 = Stats.median(points.map { Double($0.corrected.p99) }),
                      let p50 = Stats.median(points.map { Double($0.corrected.p50) }) else { return nil }
                return LatencyByRate(lowMpps: Double(b) * binMpps, highMpps: Double(b + 1) * binMpps, dut: kind,
                                     points: points.count, medianP99: p99, medianP50: p50)
            }
        }
    }
}
