/// Where a key, or a problem, came from. Ordering is "file order": every line of the file,
/// then every command-line argument, then problems that belong to no line.
struct SourceLocation: Comparable, Sendable {
    enum Origin: Int, Comparable, Sendable {
        case file = 0
        case commandLine = 1
        case nowhere = 2

        static func < (lhs: Origin, rhs: Origin) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    var file: String
    var line: Int
    var origin: Origin

    static func inFile(_ file: String, line: Int) -> SourceLocation {
        SourceLocation(file: file, line: line, origin: .file)
    }

    static func argument(_ position: Int) -> SourceLocation {
        SourceLocation(file: ConfigError.commandLine, line: position, origin: .commandLine)
    }

    static func nowhere(_ file: String) -> SourceLocation {
        SourceLocation(file: file, line: 0, origin: .nowhere)
    }

    /// `FILE:LINE`, for messages that point at a second place.
    var text: String { "\(file):\(line)" }

    static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.origin, lhs.line) < (rhs.origin, rhs.line)
    }

    static func == (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        lhs.origin == rhs.origin && lhs.line == rhs.line
    }
}

/// A problem found while reading or validating, kept until the earliest one is chosen.
struct Diagnostic: Sendable {
    var location: SourceLocation
    var message: String

    var error: ConfigError {
        ConfigError(file: location.file, line: location.line, message: message)
    }
}

/// A parsed value together with the place that set it, so cross-key checks can point there.
struct Located<Value> {
    var value: Value
    var location: SourceLocation
}
