/// Counters of one testpmd port, as testpmd printed them.
///
/// Sources, from dpdk-testpmd 22.11 output:
/// - `NIC statistics for port N` (`show port stats all`, or `--stats-period`): totals since the
///   port started, with bytes, RX-missed, RX-errors, RX-nombuf and TX-errors;
/// - `Forward statistics for port N` (printed by `stop` / on exit): totals since forwarding
///   started, packets only, plus TX-dropped (frames the engine could not hand to the PMD).
/// Packets and bytes come from the last NIC block when there is one, else from the forward block
/// (then `hasNICStatistics` is false and byte counts are 0).
public struct TestpmdPortStats: Equatable, Sendable {
    public var port: Int
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var rxMissed: UInt64 = 0
    public var rxErrors: UInt64 = 0
    public var rxNoMbuf: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var txErrors: UInt64 = 0
    /// Forward stats "TX-dropped": received frames testpmd freed because TX was full.
    public var txDropped: UInt64 = 0
    public var hasNICStatistics = false

    public init(port: Int) { self.port = port }
}

/// One `Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 1/Queue= 0` block. testpmd prints these
/// only when there are more streams than ports (several queues) and only for streams that moved
/// at least one frame.
public struct TestpmdStreamStats: Equatable, Sendable {
    public var rxPort: Int
    public var rxQueue: Int
    public var txPort: Int
    public var txQueue: Int
    public var rxPackets: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txDropped: UInt64 = 0

    public init(rxPort: Int, rxQueue: Int, txPort: Int, txQueue: Int) {
        self.rxPort = rxPort; self.rxQueue = rxQueue; self.txPort = txPort; self.txQueue = txQueue
    }
}

/// Final statistics of a testpmd run, parsed from its log.
public struct TestpmdStats: Sendable {
    /// One entry per port seen, sorted by port number (= --vdev order).
    public var ports: [TestpmdPortStats]
    /// Stream blocks of the last `stop`.
    public var streams: [TestpmdStreamStats]
    /// Whether a `Forward statistics` section (the output of `stop`) was found.
    public var sawForwardStatistics: Bool
    /// The log with ANSI sequences and carriage returns removed.
    public var raw: String

    public func port(_ id: Int) -> TestpmdPortStats? { ports.first { $0.port == id } }

    /// Parses testpmd output. Robust to the `--stats-period` clear-screen sequences, to `testpmd> `
    /// prompts glued to lines, and to repeated stop/start cycles (the last one wins).
    public static func parse(_ text: String) -> TestpmdStats {
        let clean = TestpmdLog.stripTerminalControl(text)
        var nic: [Int: [String: UInt64]] = [:]
        var forward: [Int: [String: UInt64]] = [:]
        var streams: [TestpmdStreamStats] = []
        var sawForward = false

        enum Block { case none, nic(Int), forward(Int), stream(Int), accumulated }
        var block = Block.none

        for lineSub in clean.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(lineSub)
            if line.contains("Telling cores to stop") {
                // A new stop: forward and stream counters restart from here.
                forward = [:]; streams = []; sawForward = false; block = .none
                continue
            }
            if let port = headerPort(line, marker: "NIC statistics for port") {
                block = .nic(port); nic[port] = [:]; continue
            }
            if let port = headerPort(line, marker: "Forward statistics for port") {
                block = .forward(port); forward[port] = [:]; sawForward = true; continue
            }
            if let s = streamHeader(line) {
                streams.append(s); block = .stream(streams.count - 1); continue
            }
            if line.contains("Accumulated forward statistics") { block = .accumulated; continue }
            if isBorder(line) { block = .none; continue }

            let values = keyValues(line)
            if values.isEmpty { continue }
            switch block {
            case .nic(let p): nic[p, default: [:]].merge(values) { $1 }
            case .forward(let p): forward[p, default: [:]].merge(values) { $1 }
            case .stream(let i):
                if let v = values["RX-packets"] { streams[i].rxPackets = v }
                if let v = values["TX-packets"] { streams[i].txPackets = v }
                if let v = values["TX-dropped"] { streams[i].txDropped = v }
            case .accumulated, .none: break
            }
        }

        var ports: [TestpmdPortStats] = []
        for id in Set(nic.keys).union(forward.keys).sorted() {
            var s = TestpmdPortStats(port: id)
            let f = forward[id] ?? [:]
            if let n = nic[id], !n.isEmpty {
                s.hasNICStatistics = true
                s.rxPackets = n["RX-packets"] ?? 0
                s.rxBytes = n["RX-bytes"] ?? 0
                s.rxMissed = n["RX-missed"] ?? 0
                s.rxErrors = n["RX-errors"] ?? 0
                s.rxNoMbuf = n["RX-nombuf"] ?? 0
                s.txPackets = n["TX-packets"] ?? 0
                s.txBytes = n["TX-bytes"] ?? 0
                s.txErrors = n["TX-errors"] ?? 0
            } else {
                s.rxPackets = f["RX-packets"] ?? 0
                s.rxMissed = f["RX-dropped"] ?? 0
                s.rxErrors = f["RX-error"] ?? 0
                s.rxNoMbuf = f["RX-nombufs"] ?? 0
                s.txPackets = f["TX-packets"] ?? 0
            }
            s.txDropped = f["TX-dropped"] ?? 0
            ports.append(s)
        }
        return TestpmdStats(ports: ports, streams: streams, sawForwardStatistics: sawForward, raw: clean)
    }

    /// `... NIC statistics for port 0  ####` -> 0
    static func headerPort(_ line: String, marker: String) -> Int? {
        guard let r = line.range(of: marker) else { return nil }
        let digits = line[r.upperBound...].drop { $0 == " " }.prefix { $0.isASCII && $0.isNumber }
        return Int(digits)
    }

    /// `  ------- Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 1/Queue= 0 -------`
    static func streamHeader(_ line: String) -> TestpmdStreamStats? {
        guard let r = line.range(of: "Forward Stats for RX Port=") else { return nil }
        // Collect the four integers that follow, skipping separators.
        var numbers: [Int] = []
        var current = ""
        for ch in line[r.upperBound...] {
            if ch.isASCII && ch.isNumber {
                current.append(ch)
            } else if !current.isEmpty {
                numbers.append(Int(current) ?? 0); current = ""
                if numbers.count == 4 { break }
            }
        }
        if !current.isEmpty && numbers.count < 4 { numbers.append(Int(current) ?? 0) }
        guard numbers.count == 4 else { return nil }
        return TestpmdStreamStats(rxPort: numbers[0], rxQueue: numbers[1], txPort: numbers[2], txQueue: numbers[3])
    }

    /// A line made only of '#', '-', '+' or '=' (block ends).
    static func isBorder(_ line: String) -> Bool {
        let t = line.filter { $0 != " " && $0 != "\t" }
        guard t.count >= 8 else { return false }
        return t.allSatisfy { $0 == "#" || $0 == "-" || $0 == "+" || $0 == "=" }
    }

    /// Every `Key: number` pair in a line, e.g. `RX-packets: 8 RX-missed: 0 RX-bytes:  512`.
    static func keyValues(_ line: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        let tokens = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        var i = 0
        while i < tokens.count {
            let tok = tokens[i]
            if tok.count > 1, tok.last == ":", i + 1 < tokens.count, let v = UInt64(tokens[i + 1]) {
                out[String(tok.dropLast())] = v
                i += 2
            } else {
                i += 1
            }
        }
        return out
    }
}
