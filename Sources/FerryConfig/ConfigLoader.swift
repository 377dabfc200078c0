#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Reads and validates a Ferry configuration: `ferry run FILE [key=value ...]`.
public enum ConfigLoader {
    /// Files larger than this are refused rather than read: a configuration is a few hundred
    /// bytes, and a mistaken `/dev/zero` must not be read forever.
    public static let maximumFileSize = 1 << 20

    /// Reads `file` and applies `overrides` (each `key=value`) on top of it.
    /// - Throws: `ConfigError` for the first problem, located as `FILE:LINE`.
    public static func load(file: String, overrides: [String]) throws -> FerryConfiguration {
        try parse(text: try readText(file: file), file: file, overrides: overrides)
    }

    /// As `load`, with the file's text already in hand. `file` is used only in messages.
    public static func parse(text: String, file: String, overrides: [String]) throws -> FerryConfiguration {
        var builder = ConfigBuilder(file: file)
        let fileEntries = ConfigLexer.entries(text: text, file: file)
        let commandLine = ConfigLexer.entries(overrides: overrides)
        builder.report(fileEntries.diagnostics)
        builder.report(commandLine.diagnostics)
        builder.apply(fileEntries.entries)
        builder.apply(commandLine.entries)
        return try builder.finish()
    }

    /// The file's contents as UTF-8 (invalid sequences become U+FFFD).
    static func readText(file: String) throws -> String {
        func failure(_ reason: String) -> ConfigError {
            ConfigError(file: file, line: 0, message: "cannot read: \(reason)")
        }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(errorText(errno)) }
        defer { close(fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw failure(errorText(code))
            }
            if count == 0 { break }
            contents += chunk[0..<count]
            if contents.count > maximumFileSize {
                throw failure("larger than \(maximumFileSize) bytes")
            }
        }
        return String(decoding: contents, as: UTF8.self)
    }

    private static func errorText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }
}
