/// One `key = value` pair as written, before its key or value is interpreted.
struct ConfigEntry: Sendable {
    var key: String
    var value: String
    var location: SourceLocation
}

/// Splits a configuration file, or the command-line overrides, into raw entries.
///
/// Works on UTF-8 bytes so that a CRLF file (where Swift treats "\r\n" as one Character)
/// splits into lines the same way as an LF one.
enum ConfigLexer {
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let carriageReturn = UInt8(ascii: "\r")
    static let hash = UInt8(ascii: "#")
    static let equals = UInt8(ascii: "=")

    /// Reads a file's text: `#` starts a comment at the start of a line or after whitespace
    /// (so `path=/tmp/a#b` keeps its `#`), blank lines are skipped, and each other line must be
    /// `key = value`.
    static func entries(text: String, file: String) -> (entries: [ConfigEntry], diagnostics: [Diagnostic]) {
        var entries: [ConfigEntry] = []
        var diagnostics: [Diagnostic] = []
        let lines = Array(text.utf8).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (offset, rawLine) in lines.enumerated() {
            let location = SourceLocation.inFile(file, line: offset + 1)
            let content = trim(stripComment(Array(rawLine)))
            if content.isEmpty { continue }
            switch split(content) {
            case .success(let (key, value)):
                entries.append(ConfigEntry(key: key, value: value, location: location))
            case .failure(let problem):
                diagnostics.append(Diagnostic(location: location, message: problem.message))
            }
        }
        return (entries, diagnostics)
    }

    /// Reads `key=value` arguments. No comment handling: an argument is taken literally.
    static func entries(overrides: [String]) -> (entries: [ConfigEntry], diagnostics: [Diagnostic]) {
        var entries: [ConfigEntry] = []
        var diagnostics: [Diagnostic] = []
        for (offset, argument) in overrides.enumerated() {
            let location = SourceLocation.argument(offset + 1)
            switch split(trim(Array(argument.utf8))) {
            case .success(let (key, value)):
                entries.append(ConfigEntry(key: key, value: value, location: location))
            case .failure(let problem):
                diagnostics.append(Diagnostic(location: location, message: problem.message))
            }
        }
        return (entries, diagnostics)
    }

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == space || byte == tab || byte == carriageReturn
    }

    private static func stripComment(_ line: [UInt8]) -> ArraySlice<UInt8> {
        for index in line.indices where line[index] == hash {
            if index == 0 || isBlank(line[index - 1]) { return line[..<index] }
        }
        return line[...]
    }

    private static func trim<C: BidirectionalCollection>(_ bytes: C) -> C.SubSequence where C.Element == UInt8 {
        var slice = bytes[...]
        while let first = slice.first, isBlank(first) { slice = slice.dropFirst() }
        while let last = slice.last, isBlank(last) { slice = slice.dropLast() }
        return slice
    }

    private static func split<C: BidirectionalCollection>(_ content: C) -> Result<(String, String), ValueError>
    where C.Element == UInt8 {
        let text = String(decoding: content, as: UTF8.self)
        guard let equalsIndex = content.firstIndex(of: equals) else {
            return .failure(ValueError("expected 'key = value', got '\(text)'"))
        }
        let key = String(decoding: trim(content[..<equalsIndex]), as: UTF8.self)
        let value = String(decoding: trim(content[content.index(after: equalsIndex)...]), as: UTF8.self)
        if key.isEmpty {
            return .failure(ValueError("missing key before '=' in '\(text)'"))
        }
        if value.isEmpty {
            return .failure(ValueError("\(key): missing value"))
        }
        return .success((key, value))
    }
}
