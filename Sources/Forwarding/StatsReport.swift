/// Text stats shaped like testpmd's, so its users can read them at a glance.
enum StatsReport {
    static func pad(_ value: Any, _ width: Int) -> String {
        let s = "\(value)"
        return s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    static func rpad(_ value: Any, _ width: Int) -> String {
        let s = "\(value)"
        return s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }

    /// The periodic block: one per port, with throughput since the last one.
    static func periodic(port p: PortSummary, rxPps: UInt64, txPps: UInt64, rxBps: UInt64, txBps: UInt64) -> String {
        """
          ######################## NIC statistics for port \(p.port)  ########################
          RX-packets: \(pad(p.rxPackets, 10)) RX-errors:  \(pad(p.rxErrors, 10)) RX-bytes:  \(p.rxBytes)
          TX-packets: \(pad(p.txPackets, 10)) TX-dropped: \(pad(p.txDropped, 10)) TX-bytes:  \(p.txBytes)
          Link: \(p.linkUp ? "up" : "down")  Path: \(p.path)

          Throughput (since last show)
          Rx-pps: \(rpad(rxPps, 12))          Rx-bps: \(rpad(rxBps, 12))
          Tx-pps: \(rpad(txPps, 12))          Tx-bps: \(rpad(txBps, 12))
          ############################################################################

        """
    }

    /// The block printed at exit: per stream, per port, then the totals.
    static func final(_ summary: RunSummary) -> String {
        var out = ""
        for s in summary.streams {
            out += "\n  ------- Forward Stats for RX Port=\(rpad(s.rxPort, 2))/Queue=\(rpad(s.rxQueue, 2)) -> TX Port=\(rpad(s.txPort, 2))/Queue=\(rpad(s.txQueue, 2)) -------\n"
            out += "  RX-packets: \(pad(s.rxPackets, 14)) TX-packets: \(pad(s.txPackets, 14)) TX-dropped: \(s.txDropped)\n"
        }
        var rx: UInt64 = 0, tx: UInt64 = 0, dropped: UInt64 = 0
        for p in summary.ports {
            out += "\n  ---------------------- Forward statistics for port \(p.port)  ----------------------\n"
            out += "  RX-packets: \(pad(p.rxPackets, 14)) RX-errors:  \(pad(p.rxErrors, 14)) RX-bytes: \(p.rxBytes)\n"
            out += "  TX-packets: \(pad(p.txPackets, 14)) TX-dropped: \(pad(p.txDropped, 14)) TX-bytes: \(p.txBytes)\n"
            out += "  Rx-pps: \(pad(UInt64(p.rxPps), 18)) Tx-pps: \(pad(UInt64(p.txPps), 18)) Link: \(p.linkUp ? "up" : "down")\n"
            out += "  ----------------------------------------------------------------------------\n"
            rx += p.rxPackets; tx += p.txPackets; dropped += p.txDropped
        }
        out += "\n  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n"
        out += "  RX-packets: \(pad(rx, 14)) TX-packets: \(pad(tx, 14)) TX-dropped: \(dropped)\n"
        out += "  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++\n"
        out += "  Duration: \(summary.durationSeconds) s\n"
        return out
    }
}
