/// Parsing of dpdk-testpmd's log (DPDK 22.11).
///
/// The vhost library logs, per socket (the `iface=` path exactly as given on the command line):
/// ```
/// VHOST_CONFIG: (/tmp/x/vhost0.sock) new vhost user connection is 205
/// VHOST_CONFIG: (/tmp/x/vhost0.sock) new device, handle is 0
/// VHOST_CONFIG: (/tmp/x/vhost0.sock) read message VHOST_USER_SET_OWNER
/// VHOST_CONFIG: (/tmp/x/vhost0.sock) processing VHOST_USER_SET_OWNER succeeded.
/// VHOST_CONFIG: (/tmp/x/vhost0.sock) vhost peer closed
/// ```
/// `read message` is logged at INFO (the default level of `lib.vhost.config`); the `processing
/// ... succeeded` lines and the memory/vring details need `--log-level=lib.vhost.config:debug`.
public enum TestpmdLog {
    /// Removes ANSI escape sequences (`ESC [ ... final`, as in testpmd's `\e[2J\e[1;1H`
    /// clear-screen before each `--stats-period` report) and carriage returns.
    public static func stripTerminalControl(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var it = text.unicodeScalars.makeIterator()
        while let c = it.next() {
            if c == "\u{1B}" {
                guard let next = it.next() else { break }
                if next == "[" {
                    // CSI: parameters and intermediates until a final byte 0x40...0x7E.
                    while let p = it.next() {
                        if p.value >= 0x40 && p.value <= 0x7E { break }
                    }
                }
                // Other two-byte escapes: drop both.
                continue
            }
            if c == "\r" { continue }
            out.append(c)
        }
        return String(out)
    }

    /// Names of the vhost-user messages testpmd read on `socket`, in order, over all connections
    /// (e.g. `["VHOST_USER_SET_OWNER", "VHOST_USER_GET_FEATURES", ...]`).
    public static func vhostMessageOrder(_ log: String, socket: String) -> [String] {
        vhostSessions(log, socket: socket).flatMap { $0 }
    }

    /// Like `vhostMessageOrder`, split per connection at `new vhost user connection`. Messages
    /// before any connection line (should not happen) form a first session of their own.
    public static func vhostSessions(_ log: String, socket: String) -> [[String]] {
        let prefix = "VHOST_CONFIG: (\(socket)) "
        var sessions: [[String]] = []
        for lineSub in log.split(separator: "\n") {
            let line = Substring(stripTerminalControl(String(lineSub)))
            guard let r = line.range(of: prefix) else { continue }
            let rest = line[r.upperBound...]
            if rest.hasPrefix("new vhost user connection") {
                sessions.append([])
            } else if rest.hasPrefix("read message ") {
                let name = rest.dropFirst("read message ".count).prefix { $0 != " " && $0 != "." }
                if sessions.isEmpty { sessions.append([]) }
                sessions[sessions.count - 1].append(String(name))
            }
        }
        return sessions
    }

    /// The last `n` lines of `log`, for error messages.
    public static func tail(_ log: String, lines n: Int = 40) -> String {
        let lines = stripTerminalControl(log).split(separator: "\n", omittingEmptySubsequences: false)
        return lines.suffix(n).joined(separator: "\n")
    }
}
