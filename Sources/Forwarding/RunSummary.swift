/// What a run did, per port and per stream: the final stats block and the JSON summary.
public struct PortSummary: Sendable, Equatable {
    public var port: Int
    public var path: String
    public var rxPackets: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var txDropped: UInt64 = 0
    public var rxErrors: UInt64 = 0
    public var rxPps: Double = 0
    public var txPps: Double = 0
    public var linkUp = false
    public var reconnects = 0
    /// Frames counted as sent that the backend had not taken from the TX ring at stop.
    public var txInFlightAtStop: UInt64 = 0
    /// Frames the backend delivered on the RX ring that Ferry had not read at stop.
    public var rxUnreadAtStop: UInt64 = 0
}

public struct StreamSummary: Sendable, Equatable {
    public var rxPort: Int
    public var rxQueue: Int
    public var txPort: Int
    public var txQueue: Int
    public var rxPackets: UInt64
    public var txPackets: UInt64
    public var txDropped: UInt64
    /// Frames the stream made itself: tx_first bursts (and txonly's frames).
    public var generated: UInt64 = 0
}

public struct RunSummary: Sendable {
    public var durationSeconds: Double
    public var ports: [PortSummary]
    public var streams: [StreamSummary]

    /// The `stats_json` document.
    public func json() -> String {
        func number(_ d: Double) -> String {
            guard d.isFinite else { return "0" }
            let scaled = (d * 1000).rounded() / 1000
            return "\(scaled)"
        }
        func string(_ s: String) -> String {
            var out = "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                default:
                    if scalar.value < 0x20 {
                        let hex = String(scalar.value, radix: 16)
                        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
        var lines: [String] = []
        lines.append("{")
        lines.append("  \"duration_s\": \(number(durationSeconds)),")
        lines.append("  \"ports\": [")
        for (i, p) in ports.enumerated() {
            let fields = [
                "\"port\": \(p.port)", "\"path\": \(string(p.path))",
                "\"rx_packets\": \(p.rxPackets)", "\"tx_packets\": \(p.txPackets)",
                "\"rx_bytes\": \(p.rxBytes)", "\"tx_bytes\": \(p.txBytes)",
                "\"tx_dropped\": \(p.txDropped)", "\"rx_errors\": \(p.rxErrors)",
                "\"rx_pps\": \(number(p.rxPps))", "\"tx_pps\": \(number(p.txPps))",
                "\"link_up\": \(p.linkUp)", "\"reconnects\": \(p.reconnects)",
                "\"tx_inflight_at_stop\": \(p.txInFlightAtStop)", "\"rx_unread_at_stop\": \(p.rxUnreadAtStop)",
            ]
            lines.append("    {" + fields.joined(separator: ", ") + "}" + (i + 1 < ports.count ? "," : ""))
        }
        lines.append("  ],")
        lines.append("  \"streams\": [")
        for (i, s) in streams.enumerated() {
            let fields = [
                "\"rx_port\": \(s.rxPort)", "\"rx_queue\": \(s.rxQueue)",
                "\"tx_port\": \(s.txPort)", "\"tx_queue\": \(s.txQueue)",
                "\"rx_packets\": \(s.rxPackets)", "\"tx_packets\": \(s.txPackets)",
                "\"tx_dropped\": \(s.txDropped)", "\"generated\": \(s.generated)",
            ]
            lines.append("    {" + fields.joined(separator: ", ") + "}" + (i + 1 < streams.count ? "," : ""))
        }
        lines.append("  ]")
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}
