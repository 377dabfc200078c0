/// A configuration problem, located like a compiler diagnostic so editors can jump to it.
///
/// `line` is 1-based. For command-line overrides `file` is `<command line>` and `line` is the
/// argument's 1-based position. Line 0 means the problem has no single line (the file cannot
/// be read, or no port is configured) and is rendered without one.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file name as the user gave it, or `<command line>`.
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `FILE:LINE: message`, or `FILE: message` when there is no line.
    public var description: String {
        line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)"
    }

    /// The file name used for overrides given as `key=value` arguments.
    public static let commandLine = "<command line>"
}
