import XCTest
import Foundation
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The `ferry` executable: exit statuses and messages, run as a child process.
final class CLITests: DoubleOwningTestCase {
    /// `ferry`, built next to this test bundle in the products directory.
    private func ferryExecutable() throws -> URL {
        var candidates: [URL] = []
        let argv0 = URL(fileURLWithPath: CommandLine.arguments[0])
        candidates.append(argv0.deletingLastPathComponent().appendingPathComponent("ferry"))
        candidates.append(Bundle.main.bundleURL.appendingPathComponent("ferry"))
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("ferry"))
        for bundle in Bundle.allBundles {
            candidates.append(bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("ferry"))
        }
        for url in candidates where FileManager.default.isExecutableFile(atPath: url.path) {
            return url
        }
        throw XCTSkip("ferry executable not found next to the tests (looked at \(candidates.map(\.path)))")
    }

    private struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// A started `ferry` with its output going to files.
    private struct Running {
        var process: Process
        var stdout: String
        var stderr: String
    }

    private func launch(_ arguments: [String]) throws -> Running {
        let process = Process()
        process.executableURL = try ferryExecutable()
        process.arguments = arguments
        let outPath = temporaryFile("stdout", extension: "txt")
        let errPath = temporaryFile("stderr", extension: "txt")
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer {
            try? out.close()
            try? err.close()
        }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return Running(process: process, stdout: outPath, stderr: errPath)
    }

    private func finish(_ running: Running) -> Result {
        running.process.waitUntilExit()
        let text = { (path: String) in String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self) }
        let status = running.process.terminationReason == .exit ? running.process.terminationStatus : -running.process.terminationStatus
        return Result(status: status, stdout: text(running.stdout), stderr: text(running.stderr))
    }

    private func ferry(_ arguments: [String]) throws -> Result {
        finish(try launch(arguments))
    }

    private func configFile(_ lines: [String]) throws -> String {
        let path = temporaryFile("cli", extension: "conf")
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testBadLineInTheFileExitsTwoWithFileAndLine() throws {
        let file = try configFile(["# a comment", "port.0.path = /tmp/ferry-cli-unused.sock", "burst = 0"])
        let r = try ferry(["run", file])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.hasPrefix("\(file):3: "), r.stderr)
        XCTAssertTrue(r.stderr.contains("burst"), r.stderr)
    }

    func testBadOverrideExitsTwoWithItsArgumentPosition() throws {
        let file = try configFile(["port.0.path = /tmp/ferry-cli-unused.sock"])
        let r = try ferry(["run", file, "duration=1", "fwd=teleport"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.hasPrefix("<command line>:2: "), r.stderr)
        XCTAssertTrue(r.stderr.contains("fwd"), r.stderr)
    }

    func testUnreadableFileExitsTwoNamingIt() throws {
        let file = forwardingTempPath("absent", extension: "conf")
        let r = try ferry(["run", file])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.hasPrefix("\(file): "), r.stderr)
    }

    func testMissingBackendExitsOneNamingThePath() throws {
        let socket = forwardingSocketPath("cli-missing")
        unlink(socket)
        let file = try configFile(["port.0.path = \(socket)", "duration = 1"])
        let r = try ferry(["run", file])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains(socket), r.stderr)
        XCTAssertFalse(r.stdout.contains("Accumulated forward statistics"), "no stats for a run that never started")
    }

    func testUnknownCommandAndNoCommandExitTwo() throws {
        let unknown = try ferry(["frobnicate"])
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.stderr.contains("frobnicate"), unknown.stderr)
        XCTAssertTrue(unknown.stderr.contains("usage:"), unknown.stderr)
        XCTAssertEqual(try ferry([]).status, 2)
        XCTAssertEqual(try ferry(["run"]).status, 2)
    }

    func testKeysListsEveryKey() throws {
        let r = try ferry(["keys"])
        XCTAssertEqual(r.status, 0)
        for key in ["port.N.path", "fwd", "burst", "tx_first", "duration", "stats_json", "stats_period"] {
            XCTAssertTrue(r.stdout.contains(key), key)
        }
    }

    func testRunAgainstADoubleExitsZeroAndWritesStats() throws {
        let double = try makeDouble("cli-run")
        let json = temporaryFile("cli-stats", extension: "json")
        let file = try configFile(["port.0.path = \(double.path)", "fwd = io", "tx_first = 1"])
        let r = try ferry(["run", file, "duration=0.5", "stats_json=\(json)"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Accumulated forward statistics for all ports"), r.stdout)
        let data = try XCTUnwrap(FileManager.default.contents(atPath: json))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let ports = try XCTUnwrap(root["ports"] as? [[String: Any]])
        XCTAssertGreaterThan((ports.first?["tx_packets"] as? NSNumber)?.intValue ?? 0, 0)
        XCTAssertGreaterThan(double.framesLooped, 0)
    }

    func testSIGTERMStopsARunCleanly() throws {
        let double = try makeDouble("cli-sigterm")
        let json = temporaryFile("cli-sigterm", extension: "json")
        // duration=0: forward until a signal arrives.
        let file = try configFile(["port.0.path = \(double.path)", "fwd = io", "tx_first = 1", "stats_json = \(json)"])
        let running = try launch(["run", file])
        // Frames looping means the workers run, so SIGTERM is already blocked and awaited.
        let forwarding = double.waitUntil(timeoutMs: 5000) { double.framesLooped > 0 }
        running.process.terminate()
        let r = finish(running)
        XCTAssertTrue(forwarding, r.stderr)
        XCTAssertEqual(r.status, 0, "a stop by signal is a clean stop: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("SIGTERM"), r.stderr)
        XCTAssertTrue(r.stdout.contains("Accumulated forward statistics for all ports"), r.stdout)
        XCTAssertNotNil(FileManager.default.contents(atPath: json), "stats_json is written on a signal stop too")
    }
}
