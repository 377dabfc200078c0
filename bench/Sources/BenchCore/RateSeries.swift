/// The periodic `Rx-pps:` figures a DUT prints, one per stats period.
///
/// Ferry (`stats_period=1`) and dpdk-testpmd (`--stats-period 1`) print the same block per
/// port, ending in `Throughput (since last show)` with `Rx-pps: N  Rx-bps: …` and
/// `Tx-pps: N  Tx-bps: …`. Each block covers one period measured by the DUT's own clock, so a
/// steady-state rate is the mean of the blocks after the warm-up ones: no start-up time, no
/// harness timing, and the same arithmetic for both DUTs.
public enum RateSeries {
    /// Every `Rx-pps:` value in `log`, in order. With several ports, blocks of one period are
    /// consecutive; `ports` folds them into one value per period (their sum).
    public static func rxPps(in log: String, ports: Int = 1) -> [Double] {
        values(of: "Rx-pps:", in: log, ports: ports)
    }

    /// Every `Tx-pps:` value, folded per period as `rxPps`.
    public static func txPps(in log: String, ports: Int = 1) -> [Double] {
        values(of: "Tx-pps:", in: log, ports: ports)
    }

    static func values(of label: String, in log: String, ports: Int) -> [Double] {
        var raw: [Double] = []
        for line in log.split(separator: "\n", omittingEmptySubsequences: true) {
            // Periodic lines start with the label; the final block has "Rx-pps: … Tx-pps:"
            // on one line after "Forward statistics", which is not a period: skip it.
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            guard trimmed.hasPrefix(label) else { continue }
            let rest = trimmed.dropFirst(label.count).drop { $0 == " " }
            let number = rest.prefix { $0.isNumber }
            guard !number.isEmpty, let v = Double(number) else { continue }
            if trimmed.contains("Link:") || trimmed.contains("Tx-pps:") && label == "Rx-pps:" { continue }
            raw.append(v)
        }
        guard ports > 1 else { return raw }
        var folded: [Double] = []
        var i = 0
        while i + ports <= raw.count {
            folded.append(raw[i..<(i + ports)].reduce(0, +))
            i += ports
        }
        return folded
    }

    /// The steady-state rate: the mean of `samples[warmup ..< warmup + count]`, or nil when
    /// there are not enough samples.
    public static func steadyMean(_ samples: [Double], warmup: Int, count: Int) -> Double? {
        guard count > 0, samples.count >= warmup + count else { return nil }
        let window = samples[warmup..<(warmup + count)]
        return window.reduce(0, +) / Double(count)
    }
}

/// Small statistics used by the reports.
public enum Stats {
    /// The median (mean of the two middle values for an even count); nil when empty.
    public static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let s = values.sorted()
        let m = s.count / 2
        return s.count % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2
    }

    public static func mean(_ values: [Double]) -> Double? {
        values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }
}
