import CFerry
#if canImport(Glibc)
import Glibc
#endif

/// How one search for a DUT's maximum went. The load points are fractions of `maxPps`.
///
/// Why a search and not the rate under overload: under overload the DUT always finds full
/// bursts, and on this machine that rate can be three times what the same DUT keeps up with
/// once traffic is paced and its queues are short (testpmd returned 9 Mpps overloaded and then
/// fell behind at 4.5 Mpps paced, within the same minute). Half of such a "maximum" is an
/// overload, and its p99 is queueing. So, as RFC 2544 defines throughput, the maximum is the
/// highest paced rate the DUT keeps up with: found by bisection between 0 and the rate it
/// returned under overload.
public struct MaximumSearch: Codable, Sendable {
    /// Frames back per second while every RX buffer the DUT offered was filled at once.
    public var burstPps: Double
    /// Open-loop attempts above that, [offered pps, frames back per second], until one
    /// overloaded the DUT; the last one's rate back is the bisection's upper bound.
    public var overloadAttempts: [[Double]]
    public var overloadPps: Double
    /// False when even the last attempt did not overload the DUT (the generator's own limit).
    public var overloaded: Bool
    /// Each paced trial, [offered pps, fraction of frames due not accepted or not returned].
    public var steps: [[Double]]
    /// The highest trial rate the DUT kept up with (0 when it kept up with none).
    public var maxPps: Double
}

extension LatencyBench {
    /// Searches the DUT's maximum with the generator, as `MaximumSearch` describes. Nil (and
    /// `error` set) when a run failed outright.
    func searchMaximum(kind: DUTKind, generator: Generator, say: (String) -> Void,
                       error: inout String?) -> MaximumSearch? {
        let name = "[latency] \(kind.rawValue):"
        // A first estimate: fill every RX buffer the DUT offers.
        let saturation = TrafficJob(mode: .saturate, frameLength: settings.frameSize, warmupNs: 500_000_000,
                                    durationNs: UInt64(settings.saturationSeconds) * 1_000_000_000, drainNs: 50_000_000)
        generator.post(saturation)
        guard saturation.wait(timeoutMs: (settings.saturationSeconds + 30) * 1000), saturation.abortReason == nil,
              saturation.receivedRate > 0 else {
            error = "saturation: \(saturation.abortReason ?? "no frames came back")"
            return nil
        }
        var search = MaximumSearch(burstPps: saturation.receivedRate, overloadAttempts: [], overloadPps: 0,
                                   overloaded: false, steps: [], maxPps: 0)

        // Open loop above the estimate until the DUT is overloaded: what it returns then
        // bounds the search from above.
        var offered = saturation.receivedRate * settings.overload
        for _ in 1...max(1, settings.maxAttempts) {
            let full = TrafficJob(mode: .fixedRate(offered), frameLength: settings.frameSize,
                                  warmupNs: UInt64(settings.maxWarmupMs) * 1_000_000,
                                  durationNs: UInt64(settings.maxSeconds) * 1_000_000_000, drainNs: 50_000_000)
            generator.post(full)
            guard full.wait(timeoutMs: (settings.maxSeconds + 30) * 1000), full.abortReason == nil, full.arrivalRate > 0 else {
                error = "maximum: \(full.abortReason ?? "no frames came back")"
                return nil
            }
            search.overloadAttempts.append([full.offeredRate, full.arrivalRate])
            search.overloadPps = full.arrivalRate
            search.overloaded = Self.notAccepted(full) >= settings.overloadedFraction
            if search.overloaded { break }
            offered *= settings.raise
        }

        // Bisection over paced rates: the upper bound first, then halves.
        var failure: String?
        let (low, steps) = Self.bisect(upper: search.overloadPps, steps: settings.searchSteps,
                                       keptUpFraction: settings.keptUpFraction) { rate in
            let trial = TrafficJob(mode: .fixedRate(rate), frameLength: settings.frameSize,
                                   warmupNs: UInt64(settings.searchWarmupMs) * 1_000_000,
                                   durationNs: UInt64(settings.searchTrialMs) * 1_000_000, drainNs: 50_000_000)
            generator.post(trial)
            guard trial.wait(timeoutMs: 30_000), trial.abortReason == nil else {
                failure = "maximum search: \(trial.abortReason ?? "the generator did not finish the run")"
                return nil
            }
            return Self.notAccepted(trial)
        }
        if let failure {
            error = failure
            return nil
        }
        search.steps = steps
        search.maxPps = low
        let trials = search.steps.map { "\(fmt($0[0] / 1e6, 2))\($0[1] < settings.keptUpFraction ? "✓" : "✗")" }
        say("\(name) maximum \(fmt(low / 1e6, 3)) Mpps paced (trials \(trials.joined(separator: " "))); "
            + "\(fmt(search.overloadPps / 1e6, 3)) Mpps back while overloaded\(search.overloaded ? "" : " (never overloaded)"), "
            + "burst fill \(fmt(search.burstPps / 1e6, 3))")
        return search
    }

    /// The highest rate in (0, `upper`] that `trial` reports kept up with (missed fraction below
    /// `keptUpFraction`), to within `upper` / 2^(steps-1): `upper` itself first, then bisection.
    /// Returns it (0: none) and every trial as [rate, missed]; stops early when `trial` fails (nil).
    static func bisect(upper: Double, steps: Int, keptUpFraction: Double,
                       trial: (Double) -> Double?) -> (Double, [[Double]]) {
        var low = 0.0, high = upper, rate = upper
        var tried: [[Double]] = []
        for _ in 0..<max(1, steps) {
            guard let missed = trial(rate) else { break }
            tried.append([rate, missed])
            if missed < keptUpFraction {
                low = rate
                if rate == high { break }
            } else {
                high = rate
            }
            rate = (low + high) / 2
        }
        return (low, tried)
    }

    /// The fraction of the frames due in the window that the DUT did not take (its RX ring was
    /// full) or took and never returned.
    static func notAccepted(_ job: TrafficJob) -> Double {
        let due = Double(job.sentMeasured + job.rxRingFull)
        return due > 0 ? Double(job.rxRingFull + job.lost) / due : 1
    }
}
