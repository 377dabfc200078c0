/// The keys Ferry understands, for `--help` and the README. `N` stands for a port index.
///
/// The parser's own key tables (`GlobalKey`, `PortKey`) must match this list; a test checks it.
public enum ConfigKeys {
    public static let reference: [(key: String, defaultValue: String, meaning: String)] = [
        ("port.N.path", "(required)",
         "Backend: vhost-user socket, /dev/vhost-net (vhost-kernel) or a vhost-vdpa device"),
        ("port.N.queues", "1", "Queue pairs, 1...32768 (the virtio limit; the backend may offer fewer)"),
        ("port.N.queue_size", "256",
         "Descriptors per queue, 1...32768; a power of two unless packed_vq=1"),
        ("port.N.mac", "(device, else random)", "Port MAC aa:bb:cc:dd:ee:ff, unicast"),
        ("port.N.server", "0", "1: listen on path and let the backend connect (vhost-user)"),
        ("port.N.mrg_rxbuf", "1", "Offer mergeable RX buffers"),
        ("port.N.in_order", "1", "Offer in-order descriptor use"),
        ("port.N.packed_vq", "0", "Offer packed virtqueues"),
        ("port.N.cq", "0", "Offer a control queue"),
        ("port.N.reconnect_ms", "0", "Reconnect interval in ms; 0 = off"),
        ("port.N.iface", "tap%d", "Tap interface name (vhost-kernel only)"),
        ("port.N.indirect", "1", "Accept indirect descriptors: a chained TX frame takes one ring slot"),
        ("fwd", "io", "Forwarding mode: io, mac, macswap, rxonly, txonly"),
        ("burst", "32", "Packets per burst, 1...512"),
        ("txpkts", "64",
         "Comma-separated segment lengths of generated frames; total 42...9000"),
        ("tx_first", "0", "Bursts to send on each stream before forwarding"),
        ("max_pkt_len", "9216",
         "Largest frame received, 64...9216 bytes; without mrg_rxbuf each RX buffer chain holds one"),
        ("cores", "(automatic)", "Worker CPUs: a comma list of ids and ranges, e.g. 1,3-5"),
        ("eth_peer.N", "02:00:00:00:00:0N", "Destination MAC for frames sent on port N"),
        ("port_topology", "paired", "Port pairing: paired, chained, loop"),
        ("stats_period", "0", "Seconds between statistics reports; 0 = off"),
        ("duration", "0", "Seconds to run (fractions allowed); 0 = until SIGINT/SIGTERM"),
        ("stats_json", "(none)", "Write final statistics as JSON to this path"),
        ("rx_mode", "poll", "poll, or interrupt to sleep when idle"),
    ]
}
