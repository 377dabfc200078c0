import FerryTestSupport

/// Ferry's median p99 against testpmd's at one load, and how far the repetitions let that
/// ratio be trusted.
///
/// One repetition's p99 swings 10–30× with the machine's spells of steal, so two medians of a
/// few repetitions each can land on either side of each other by chance. A percentile
/// bootstrap over the repetitions (each DUT's resampled with replacement, independently) gives
/// an interval for the ratio of medians, and the share of resamples in which Ferry's median is
/// no worse. The generator is seeded, so the same repetitions always give the same interval.
public struct LatencyComparison: Codable, Sendable, Equatable {
    public var load: Double
    public var ferryReps: Int
    public var testpmdReps: Int
    /// Ferry's median p99 over testpmd's.
    public var ratio: Double
    /// The 5th and 95th percentiles of the bootstrapped ratio: a 90 % interval.
    public var low: Double
    public var high: Double
    /// Resamples in which Ferry's median p99 was at most testpmd's, as a fraction.
    public var ferryNotWorse: Double

    /// nil unless both DUTs have a repetition with a non-zero p99.
    public static func compare(load: Double, ferry: [UInt64], testpmd: [UInt64],
                               resamples: Int = 4000, seed: UInt64 = 0x5eed) -> LatencyComparison? {
        let f = ferry.map { Double($0) }, t = testpmd.map { Double($0) }
        guard let fm = Stats.median(f), let tm = Stats.median(t), tm > 0, resamples > 0 else { return nil }
        var rng = SplitMix(seed: seed)
        var ratios: [Double] = []
        ratios.reserveCapacity(resamples)
        var notWorse = 0
        var fs = [Double](repeating: 0, count: f.count), ts = [Double](repeating: 0, count: t.count)
        for _ in 0..<resamples {
            for i in fs.indices { fs[i] = f[rng.below(f.count)] }
            for i in ts.indices { ts[i] = t[rng.below(t.count)] }
            let a = Stats.median(fs)!, b = Stats.median(ts)!
            if a <= b { notWorse += 1 }
            ratios.append(b > 0 ? a / b : .infinity)
        }
        ratios.sort()
        return LatencyComparison(load: load, ferryReps: f.count, testpmdReps: t.count, ratio: fm / tm,
                                 low: ratios[Int(Double(resamples - 1) * 0.05)],
                                 high: ratios[Int(Double(resamples - 1) * 0.95)],
                                 ferryNotWorse: Double(notWorse) / Double(resamples))
    }

    /// One comparison per load that both DUTs have in `summary`.
    public static func compare(_ summary: [LatencySummary]) -> [LatencyComparison] {
        let loads = summary.map(\.load).reduce(into: [Double]()) { if !$0.contains($1) { $0.append($1) } }
        return loads.compactMap { load in
            guard let f = summary.first(where: { $0.dut == .ferry && $0.load == load }),
                  let t = summary.first(where: { $0.dut == .testpmd && $0.load == load }) else { return nil }
            return compare(load: load, ferry: f.p99s, testpmd: t.p99s)
        }
    }
}
