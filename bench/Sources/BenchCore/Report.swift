import Foundation

/// Everything `ferry-bench` measured, as written to the JSON file.
public struct BenchReport: Codable, Sendable {
    public struct Settings: Codable, Sendable {
        public var pairs: Int
        public var seconds: Int
        public var warmup: Int
        public var configs: [String]
        public var latencySeconds: Int
        public var latencyLoads: [Double]
        /// Latency repetitions per DUT (absent in results from before repetitions: one).
        public var latencyReps: Int?
        /// Set when both DUTs' loads were fractions of this rate instead of each one's searched
        /// maximum (`--latency-fixed-max`).
        public var latencyFixedMaxPps: Double?
        public var startupReps: Int
        public var backendCPU: Int
        public var dutCPU: Int
        /// The combinations part: A/B pairs, measured seconds and warm-up periods per row.
        public var comboPairs: Int
        public var comboSeconds: Int
        public var comboWarmup: Int

        public init(pairs: Int, seconds: Int, warmup: Int, configs: [String], latencySeconds: Int,
                    latencyLoads: [Double], startupReps: Int, backendCPU: Int, dutCPU: Int,
                    comboPairs: Int = 3, comboSeconds: Int = 5, comboWarmup: Int = 2, latencyReps: Int? = nil,
                    latencyFixedMaxPps: Double? = nil) {
            self.latencyFixedMaxPps = latencyFixedMaxPps
            self.pairs = pairs
            self.seconds = seconds
            self.warmup = warmup
            self.configs = configs
            self.latencySeconds = latencySeconds
            self.latencyLoads = latencyLoads
            self.latencyReps = latencyReps
            self.startupReps = startupReps
            self.backendCPU = backendCPU
            self.dutCPU = dutCPU
            self.comboPairs = comboPairs
            self.comboSeconds = comboSeconds
            self.comboWarmup = comboWarmup
        }
    }

    public struct Host: Codable, Sendable {
        public var cpus: Int
        public var loadAverageStart: Double
        public var loadAverageEnd: Double
        public var kernel: String
        public var testpmd: String

        public init(cpus: Int, loadAverageStart: Double, loadAverageEnd: Double, kernel: String, testpmd: String) {
            self.cpus = cpus
            self.loadAverageStart = loadAverageStart
            self.loadAverageEnd = loadAverageEnd
            self.kernel = kernel
            self.testpmd = testpmd
        }
    }

    public var date: String
    public var settings: Settings
    public var host: Host
    public var throughput: [ThroughputRow] = []
    /// The 8 feature combinations (packed_vq × mrg_rxbuf × in_order), 64 B, one queue.
    public var combos: [ThroughputRow] = []
    /// Every repetition of every DUT, in run order.
    public var latency: [LatencyResult] = []
    /// Per DUT and load: the p99 of each repetition and their median.
    public var latencySummary: [LatencySummary] = []
    /// Per load: Ferry's median p99 over testpmd's, with a bootstrap interval.
    public var latencyComparison: [LatencyComparison] = []
    /// Both DUTs' points binned by offered rate (see `LatencyByRate`).
    public var latencyByRate: [LatencyByRate] = []
    public var startup: [StartupResult] = []
    public var notes: [String] = []

    public init(date: String, settings: Settings, host: Host) {
        self.date = date
        self.settings = settings
        self.host = host
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date())
    }
}
