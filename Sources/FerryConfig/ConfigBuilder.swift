/// A value after parsing, before it is placed in the model.
enum ConfigValue {
    case int(Int)
    case flag(Bool)
    case text(String)
    case mac(MACAddress)
    case seconds(Double)
    case list([Int])
    case fwd(ForwardingMode)
    case topology(PortTopology)
    case rxMode(RxMode)
}

/// Collects entries from the file and then the command line, and validates the result.
///
/// Every entry is checked, even one a later override replaces, so a broken file is never
/// accepted by accident. Problems are gathered with their locations and the earliest (in file
/// order, then command-line order) is the one reported, so the answer does not depend on the
/// order checks happen to run in. A cross-key check is skipped when a value it depends on was
/// itself invalid: that value's own error is the real one.
struct ConfigBuilder {
    let file: String
    private(set) var diagnostics: [Diagnostic] = []
    private var values: [ConfigKey: Located<ConfigValue>] = [:]
    private var invalid: Set<ConfigKey> = []
    /// The earliest location of any recognised key of each port that appears.
    private var portFirst: [Int: SourceLocation] = [:]

    init(file: String) {
        self.file = file
    }

    mutating func report(_ diagnostics: [Diagnostic]) {
        self.diagnostics += diagnostics
    }

    /// Applies one source's entries in order. Within a source a key may be set only once;
    /// a later source (the command line) replaces what an earlier one (the file) set.
    mutating func apply(_ entries: [ConfigEntry]) {
        var seen: [ConfigKey: SourceLocation] = [:]
        for entry in entries {
            let key: ConfigKey
            switch ConfigKey.classify(entry.key) {
            case .failure(let problem):
                diagnostics.append(Diagnostic(location: entry.location, message: problem.message))
                continue
            case .success(let recognised):
                key = recognised
            }
            if let first = seen[key] {
                diagnostics.append(Diagnostic(location: entry.location,
                                              message: "duplicate key '\(key.name)' (first set at \(first.text))"))
                continue
            }
            seen[key] = entry.location
            if case .port(let index, _) = key, portFirst[index].map({ entry.location < $0 }) ?? true {
                portFirst[index] = entry.location
            }
            do {
                let value = try Self.parse(entry.value, for: key)
                values[key] = Located(value: value, location: entry.location)
                invalid.remove(key)
            } catch {
                invalid.insert(key)
                let message = (error as? ValueError)?.message ?? "\(key.name): \(error)"
                diagnostics.append(Diagnostic(location: entry.location, message: message))
            }
        }
    }

    /// Runs the cross-key checks and builds the model, or throws the earliest problem.
    func finish() throws -> FerryConfiguration {
        let indexes = portFirst.keys.sorted()
        let problems = diagnostics + crossChecks(indexes: indexes)
        if let earliest = problems.min(by: { $0.location < $1.location }) {
            throw earliest.error
        }
        let ports = indexes.map(portConfig)
        var peers: [Int: MACAddress] = [:]
        for case let (.ethPeer(index), located) in values {
            if case .mac(let address) = located.value { peers[index] = address }
        }
        let defaults = FerryConfiguration(ports: [])
        return FerryConfiguration(
            ports: ports,
            fwd: choice(.fwd) ?? defaults.fwd,
            burst: int(.global(.burst)) ?? defaults.burst,
            txPackets: list(.global(.txpkts)) ?? defaults.txPackets,
            txFirst: int(.global(.tx_first)) ?? defaults.txFirst,
            cores: list(.global(.cores)),
            ethPeers: peers,
            portTopology: topology() ?? defaults.portTopology,
            statsPeriod: int(.global(.stats_period)) ?? defaults.statsPeriod,
            duration: seconds(.global(.duration)) ?? defaults.duration,
            statsJSON: text(.global(.stats_json)),
            rxMode: rxMode() ?? defaults.rxMode,
            maxPacketLength: int(.global(.max_pkt_len)) ?? defaults.maxPacketLength)
    }

    // MARK: - Cross-key checks

    private func crossChecks(indexes: [Int]) -> [Diagnostic] {
        var problems: [Diagnostic] = []
        for index in indexes {
            let first = portFirst[index]!
            let pathKey = ConfigKey.port(index, .path)
            if values[pathKey] == nil && !invalid.contains(pathKey) {
                problems.append(Diagnostic(location: first,
                                           message: "port.\(index): missing required key port.\(index).path"))
            }
            let sizeKey = ConfigKey.port(index, .queue_size), packedKey = ConfigKey.port(index, .packed_vq)
            if let size = values[sizeKey], case .int(let count) = size.value,
               !invalid.contains(sizeKey), !invalid.contains(packedKey),
               !(flag(packedKey) ?? false), count & (count - 1) != 0 {
                problems.append(Diagnostic(location: size.location, message:
                    "port.\(index).queue_size: \(count) is not a power of two (split rings need one; set port.\(index).packed_vq=1 for other sizes)"))
            }
        }
        problems += duplicatePaths(indexes: indexes)
        if let missing = indexes.indices.first(where: { indexes[$0] != $0 }) {
            let next = indexes[missing]
            problems.append(Diagnostic(location: portFirst[next]!, message:
                "port.\(next): port \(missing) is missing (ports must be numbered from 0 without gaps)"))
        }
        if indexes.isEmpty {
            problems.append(Diagnostic(location: .nowhere(file), message: "no ports configured (set port.0.path)"))
        }
        for case let (.ethPeer(index), located) in values where portFirst[index] == nil && !invalid.contains(.ethPeer(index)) {
            problems.append(Diagnostic(location: located.location,
                                       message: "eth_peer.\(index): port \(index) is not configured"))
        }
        return problems
    }

    /// Two ports on one path would both try to own the same socket or device.
    private func duplicatePaths(indexes: [Int]) -> [Diagnostic] {
        var problems: [Diagnostic] = []
        let paths = indexes.compactMap { index -> (index: Int, path: String, location: SourceLocation)? in
            let key = ConfigKey.port(index, .path)
            guard !invalid.contains(key), let path = text(key), let location = values[key]?.location else { return nil }
            return (index, path, location)
        }.sorted { $0.location < $1.location }
        var owners: [String: (index: Int, location: SourceLocation)] = [:]
        for entry in paths {
            if let owner = owners[entry.path] {
                problems.append(Diagnostic(location: entry.location, message:
                    "port.\(entry.index).path: '\(entry.path)' is already used by port.\(owner.index) (\(owner.location.text))"))
            } else {
                owners[entry.path] = (entry.index, entry.location)
            }
        }
        return problems
    }

    // MARK: - Model

    private func portConfig(index: Int) -> PortConfig {
        func key(_ field: PortKey) -> ConfigKey { .port(index, field) }
        let first = portFirst[index]!
        var port = PortConfig(index: index, path: text(key(.path)) ?? "", file: first.file, line: first.line)
        port.queues = int(key(.queues)) ?? port.queues
        port.queueSize = int(key(.queue_size)) ?? port.queueSize
        if let located = values[key(.mac)], case .mac(let address) = located.value { port.mac = address }
        port.server = flag(key(.server)) ?? port.server
        port.mrgRxbuf = flag(key(.mrg_rxbuf)) ?? port.mrgRxbuf
        port.inOrder = flag(key(.in_order)) ?? port.inOrder
        port.packedVq = flag(key(.packed_vq)) ?? port.packedVq
        port.cq = flag(key(.cq)) ?? port.cq
        port.reconnectMs = int(key(.reconnect_ms)) ?? port.reconnectMs
        port.iface = text(key(.iface)) ?? port.iface
        port.indirect = flag(key(.indirect)) ?? port.indirect
        return port
    }

    private func int(_ key: ConfigKey) -> Int? {
        if case .int(let value)? = values[key]?.value { return value }
        return nil
    }

    private func flag(_ key: ConfigKey) -> Bool? {
        if case .flag(let value)? = values[key]?.value { return value }
        return nil
    }

    private func text(_ key: ConfigKey) -> String? {
        if case .text(let value)? = values[key]?.value { return value }
        return nil
    }

    private func list(_ key: ConfigKey) -> [Int]? {
        if case .list(let value)? = values[key]?.value { return value }
        return nil
    }

    private func seconds(_ key: ConfigKey) -> Double? {
        if case .seconds(let value)? = values[key]?.value { return value }
        return nil
    }

    private func choice(_ key: GlobalKey) -> ForwardingMode? {
        if case .fwd(let value)? = values[.global(key)]?.value { return value }
        return nil
    }

    private func topology() -> PortTopology? {
        if case .topology(let value)? = values[.global(.port_topology)]?.value { return value }
        return nil
    }

    private func rxMode() -> RxMode? {
        if case .rxMode(let value)? = values[.global(.rx_mode)]?.value { return value }
        return nil
    }

    // MARK: - Values

    /// Parses one value according to its key; messages name the key as Ferry spells it.
    static func parse(_ text: String, for key: ConfigKey) throws -> ConfigValue {
        let name = key.name
        switch key {
        case .global(let global):
            switch global {
            case .fwd: return .fwd(try ValueParser.choice(text, key: name, as: ForwardingMode.self))
            case .burst: return .int(try ValueParser.integer(text, key: name, range: 1...512))
            case .txpkts: return .list(try ValueParser.segmentLengths(text, key: name))
            case .tx_first: return .int(try ValueParser.integer(text, key: name, range: 0...ValueParser.sanityLimit))
            case .cores: return .list(try ValueParser.cpuList(text, key: name))
            case .port_topology: return .topology(try ValueParser.choice(text, key: name, as: PortTopology.self))
            case .stats_period: return .int(try ValueParser.integer(text, key: name, range: 0...ValueParser.sanityLimit))
            case .duration: return .seconds(try ValueParser.seconds(text, key: name))
            case .stats_json: return .text(text)
            case .rx_mode: return .rxMode(try ValueParser.choice(text, key: name, as: RxMode.self))
            case .max_pkt_len:
                return .int(try ValueParser.integer(text, key: name, range: 64...FerryConfiguration.largestFrame))
            }
        case .port(_, let field):
            switch field {
            case .path: return .text(try ValueParser.backendPath(text, key: name))
            case .queues: return .int(try ValueParser.integer(text, key: name, range: 1...0x8000))
            // Virtio 1.2 §2.7 (split) requires a power of two; that check needs packed_vq, so
            // it is a cross-key check. §2.8 (packed) allows any size up to 32768.
            case .queue_size: return .int(try ValueParser.integer(text, key: name, range: 1...32768))
            case .mac: return .mac(try ValueParser.portMAC(text, key: name))
            case .server, .mrg_rxbuf, .in_order, .packed_vq, .cq, .indirect: return .flag(try ValueParser.flag(text, key: name))
            case .reconnect_ms: return .int(try ValueParser.integer(text, key: name, range: 0...ValueParser.sanityLimit))
            case .iface: return .text(try ValueParser.interfaceName(text, key: name))
            }
        case .ethPeer:
            return .mac(try ValueParser.mac(text, key: name))
        }
    }
}
