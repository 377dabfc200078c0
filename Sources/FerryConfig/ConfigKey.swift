/// Keys that apply to the whole run.
enum GlobalKey: String, CaseIterable, Sendable {
    case fwd, burst, txpkts, tx_first, cores, port_topology, stats_period, duration, stats_json, rx_mode, max_pkt_len
}

/// The `port.N.<field>` fields: DPDK virtio-user devarg names.
enum PortKey: String, CaseIterable, Sendable {
    case path, queues, queue_size, mac, server, mrg_rxbuf, in_order, packed_vq, cq, reconnect_ms, iface, indirect
}

/// A recognised key, with port indexes parsed so `port.01.path` and `port.1.path` are one key.
enum ConfigKey: Hashable, Sendable {
    case global(GlobalKey)
    case port(Int, PortKey)
    case ethPeer(Int)

    /// The key as Ferry spells it in messages.
    var name: String {
        switch self {
        case .global(let key): return key.rawValue
        case .port(let index, let field): return "port.\(index).\(field.rawValue)"
        case .ethPeer(let index): return "eth_peer.\(index)"
        }
    }

    /// Interprets a key as written: a known key, or a message explaining why it is not one.
    static func classify(_ text: String) -> Result<ConfigKey, ValueError> {
        if let global = GlobalKey(rawValue: text) { return .success(.global(global)) }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 3, parts[0] == "port", isDecimal(parts[1]), let field = PortKey(rawValue: String(parts[2])) {
            guard let index = Int(parts[1]) else {
                return .failure(ValueError("\(text): port index '\(parts[1])' is out of range"))
            }
            return .success(.port(index, field))
        }
        if parts.count == 2, parts[0] == "eth_peer", isDecimal(parts[1]) {
            guard let index = Int(parts[1]) else {
                return .failure(ValueError("\(text): port index '\(parts[1])' is out of range"))
            }
            return .success(.ethPeer(index))
        }
        var message = "unknown key '\(text)'"
        if let suggestion = KeySuggestion.suggest(for: text) {
            message += " (did you mean '\(suggestion)'?)"
        }
        return .failure(ValueError(message))
    }

    static func isDecimal<S: StringProtocol>(_ text: S) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }
}

/// A problem with one key or value; the caller attaches the location.
struct ValueError: Error, Sendable {
    var message: String
    init(_ message: String) { self.message = message }
}
