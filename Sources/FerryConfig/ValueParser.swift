/// Turns value text into typed values, with messages that name the key and the bad value.
enum ValueParser {
    /// The largest value accepted for open-ended counts and times (seconds, milliseconds,
    /// bursts). Far beyond any real use, and small enough that converting to nanoseconds
    /// cannot overflow a 64-bit integer.
    static let sanityLimit = 1_000_000_000

    /// Linux `CPU_SETSIZE`: the CPUs `sched_setaffinity` with a `cpu_set_t` can name.
    static let cpuLimit = 1024

    /// `IFNAMSIZ - 1`: the longest Linux interface name.
    static let interfaceNameLimit = 15

    /// `sizeof(sun_path) - 1`: the longest path a UNIX socket can be bound or connected to.
    static let socketPathLimit = 107

    private enum Decimal {
        case value(Int)
        case notNumber
        case overflow
    }

    /// Optional '-' then ASCII digits; nothing else (no '+', spaces, hex or exponents).
    private static func decimal<S: StringProtocol>(_ text: S) -> Decimal {
        var digits = Substring(text)
        let negative = digits.first == "-"
        if negative { digits = digits.dropFirst() }
        guard ConfigKey.isDecimal(digits) else { return .notNumber }
        var value = 0
        for byte in digits.utf8 {
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = shifted.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            if overflow1 || overflow2 { return .overflow }
            value = next
        }
        return .value(negative ? -value : value)
    }

    static func integer<S: StringProtocol>(_ text: S, key: String, range: ClosedRange<Int>,
                                           what: String? = nil) throws -> Int {
        let label = what.map { "\($0) " } ?? ""
        switch decimal(text) {
        case .notNumber:
            throw ValueError("\(key): '\(text)' is not a number")
        case .overflow:
            throw ValueError("\(key): \(label)\(text) is out of range (\(range.lowerBound)...\(range.upperBound))")
        case .value(let value):
            guard range.contains(value) else {
                throw ValueError("\(key): \(label)\(text) is out of range (\(range.lowerBound)...\(range.upperBound))")
            }
            return value
        }
    }

    static func flag(_ text: String, key: String) throws -> Bool {
        switch text {
        case "0": return false
        case "1": return true
        default: throw ValueError("\(key): '\(text)' is not 0 or 1")
        }
    }

    static func choice<E: RawRepresentable & CaseIterable>(_ text: String, key: String, as type: E.Type) throws -> E
    where E.RawValue == String {
        if let value = E(rawValue: text) { return value }
        let names = E.allCases.map(\.rawValue)
        var message = "\(key): '\(text)' is not one of \(names.joined(separator: ", "))"
        if let suggestion = KeySuggestion.closest(to: text, among: names) {
            message += " (did you mean '\(suggestion)'?)"
        }
        throw ValueError(message)
    }

    /// Any well-formed address; used for peers, which may legitimately be multicast.
    static func mac(_ text: String, key: String) throws -> MACAddress {
        guard let address = MACAddress(parsing: text) else {
            throw ValueError("\(key): '\(text)' is not a MAC address")
        }
        return address
    }

    /// A station's own address: unicast and not all zeros (what DPDK's
    /// `rte_is_valid_assigned_ether_addr` demands of a port MAC).
    static func portMAC(_ text: String, key: String) throws -> MACAddress {
        let address = try mac(text, key: key)
        guard address.isUnicast else {
            throw ValueError("\(key): '\(text)' is a multicast address (a port MAC must be unicast)")
        }
        guard !address.isZero else {
            throw ValueError("\(key): '\(text)' is the all-zero address")
        }
        return address
    }

    /// Seconds as `D`, `D.D`, `.D` or `D.` (D digits), optionally negative only to be refused
    /// with a range message. No exponents, `inf` or `nan`.
    static func seconds(_ text: String, key: String) throws -> Double {
        var body = Substring(text)
        if body.first == "-" { body = body.dropFirst() }
        let parts = body.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let wellFormed = parts.allSatisfy { $0.isEmpty || ConfigKey.isDecimal($0) }
            && parts.contains { !$0.isEmpty }
        guard wellFormed, let value = Double(text), value.isFinite else {
            throw ValueError("\(key): '\(text)' is not a number")
        }
        guard value >= 0, value <= Double(sanityLimit) else {
            throw ValueError("\(key): \(text) is out of range (0...\(sanityLimit))")
        }
        return value == 0 ? 0 : value  // "-0" is plain 0
    }

    /// Comma-separated segment lengths; each at least 1 byte and the frame 42...9000 bytes:
    /// 42 is Ethernet (14) + IPv4 (20) + UDP (8) headers, 9000 a jumbo frame.
    static func segmentLengths(_ text: String, key: String) throws -> [Int] {
        let minimum = 42, maximum = 9000
        var lengths: [Int] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let segment = item.trimmingBlanks()
            guard !segment.isEmpty else { throw ValueError("\(key): '\(text)' has an empty segment") }
            lengths.append(try integer(segment, key: key, range: 1...maximum, what: "segment length"))
        }
        let total = lengths.reduce(0, +)
        guard total >= minimum else {
            throw ValueError("\(key): total length \(total) is below \(minimum) (the smallest UDP/IPv4 frame)")
        }
        guard total <= maximum else {
            throw ValueError("\(key): total length \(total) is above \(maximum)")
        }
        return lengths
    }

    /// CPU ids and inclusive ranges (`0,2-4`), expanded in the order given. A CPU listed twice
    /// is refused: it would put two workers on one core by accident.
    static func cpuList(_ text: String, key: String) throws -> [Int] {
        var cpus: [Int] = []
        var seen = Set<Int>()
        let range = 0...(cpuLimit - 1)
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let element = item.trimmingBlanks()
            let bounds = element.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard !element.isEmpty, bounds.allSatisfy({ ConfigKey.isDecimal($0) }) else {
                throw ValueError("\(key): '\(element)' is not a CPU id or range")
            }
            let first = try integer(bounds[0], key: key, range: range, what: "CPU")
            let last = bounds.count == 2 ? try integer(bounds[1], key: key, range: range, what: "CPU") : first
            guard first <= last else { throw ValueError("\(key): range '\(element)' is reversed") }
            for cpu in first...last {
                guard seen.insert(cpu).inserted else { throw ValueError("\(key): CPU \(cpu) is listed twice") }
                cpus.append(cpu)
            }
        }
        return cpus
    }

    /// A Linux interface name (or a `%d` template for one), checked like the kernel's
    /// `dev_valid_name`.
    static func interfaceName(_ text: String, key: String) throws -> String {
        guard text.utf8.count <= interfaceNameLimit else {
            throw ValueError("\(key): '\(text)' is longer than \(interfaceNameLimit) bytes")
        }
        let forbidden: Set<UInt8> = [UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: " "), UInt8(ascii: "\t")]
        guard text != ".", text != "..", !text.utf8.contains(where: forbidden.contains) else {
            throw ValueError("\(key): '\(text)' is not a valid interface name")
        }
        return text
    }

    /// A backend path. vhost-user connects to (or binds) it as a UNIX socket, so it must fit
    /// in `sun_path`; device nodes are always far shorter.
    static func backendPath(_ text: String, key: String) throws -> String {
        guard text.utf8.count <= socketPathLimit else {
            throw ValueError("\(key): '\(text)' is longer than \(socketPathLimit) bytes (the limit for a socket path)")
        }
        return text
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    func trimmingBlanks() -> Substring {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}
