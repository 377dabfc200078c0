#if canImport(Glibc)
import Glibc
#endif

/// Ferry's log: one line per event on stderr, prefixed with the time since start.
///
/// Control path only. Nothing on the per-packet path logs; workers count instead.
public enum FerryLog {
    public enum Level: Int, Comparable, Sendable {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var tag: String {
            switch self {
            case .debug: return "DEBUG"
            case .info: return "INFO"
            case .warning: return "WARN"
            case .error: return "ERROR"
            }
        }
    }

    /// Starts the log clock; lines show seconds since this call (or the first line).
    public static func markStart() { startNs = monotonicNs() }

    /// Messages below this level are dropped. Set once at start-up, before workers exist.
    nonisolated(unsafe) public static var minimumLevel: Level = .info
    nonisolated(unsafe) private static var startNs: UInt64 = monotonicNs()

    public static func debug(_ message: @autoclosure () -> String) { write(.debug, message) }
    public static func info(_ message: @autoclosure () -> String) { write(.info, message) }
    public static func warning(_ message: @autoclosure () -> String) { write(.warning, message) }
    public static func error(_ message: @autoclosure () -> String) { write(.error, message) }

    private static func write(_ level: Level, _ message: () -> String) {
        guard level >= minimumLevel else { return }
        let origin = startNs
        let now = monotonicNs()
        let ms = (now > origin ? now - origin : 0) / 1_000_000
        let secs = ms / 1000, frac = ms % 1000
        let fracText = frac < 10 ? "00\(frac)" : frac < 100 ? "0\(frac)" : "\(frac)"
        let line = "[\(secs).\(fracText)] \(level.tag) \(message())\n"
        _ = line.withCString { fputs($0, stderr) }
    }

    static func monotonicNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
