import XCTest
@testable import FerryConfig

/// Builds file text from lines, so tests can name line numbers by position.
func configText(_ lines: [String]) -> String {
    lines.joined(separator: "\n") + "\n"
}

func parse(_ lines: [String], overrides: [String] = [], file: String = "ferry.conf") throws -> FerryConfiguration {
    try ConfigLoader.parse(text: configText(lines), file: file, overrides: overrides)
}

/// The rendered error for a configuration that must be rejected.
func rejection(_ lines: [String], overrides: [String] = [], named file: String = "ferry.conf",
               file callerFile: StaticString = #filePath, line callerLine: UInt = #line) -> String? {
    do {
        let configuration = try parse(lines, overrides: overrides, file: file)
        XCTFail("accepted: \(configuration)", file: callerFile, line: callerLine)
        return nil
    } catch let error as ConfigError {
        return error.description
    } catch {
        XCTFail("not a ConfigError: \(error)", file: callerFile, line: callerLine)
        return nil
    }
}
