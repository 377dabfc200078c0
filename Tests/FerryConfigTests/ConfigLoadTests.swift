import XCTest
@testable import FerryConfig
#if canImport(Glibc)
import Glibc
#endif

final class ConfigLoadTests: XCTestCase {
    private var cleanup: [String] = []

    override func tearDown() {
        for path in cleanup { unlink(path) }
        cleanup = []
        super.tearDown()
    }

    /// A temporary file holding `text`.
    private func temporaryFile(_ text: String) throws -> String {
        var template = Array("/tmp/ferry-config-test-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        let path = String(cString: template)
        cleanup.append(path)
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        XCTAssertEqual(written, bytes.count)
        return path
    }

    func testLoadsFileAndAppliesOverrides() throws {
        let path = try temporaryFile("port.0.path = /tmp/v.sock\nburst = 16\n")
        let configuration = try ConfigLoader.load(file: path, overrides: ["burst=8"])
        XCTAssertEqual(configuration.ports[0].path, "/tmp/v.sock")
        XCTAssertEqual(configuration.ports[0].file, path)
        XCTAssertEqual(configuration.burst, 8)
    }

    func testErrorsNameTheFileAsGiven() throws {
        let path = try temporaryFile("port.0.path = /tmp/v.sock\nburts = 16\n")
        XCTAssertThrowsError(try ConfigLoader.load(file: path, overrides: [])) { error in
            XCTAssertEqual(error as? ConfigError,
                           ConfigError(file: path, line: 2, message: "unknown key 'burts' (did you mean 'burst'?)"))
        }
    }

    func testMissingFile() {
        let path = "/nonexistent-ferry-dir/ferry.conf"
        XCTAssertThrowsError(try ConfigLoader.load(file: path, overrides: [])) { error in
            XCTAssertEqual((error as? ConfigError)?.description,
                           "/nonexistent-ferry-dir/ferry.conf: cannot read: No such file or directory")
            XCTAssertEqual((error as? ConfigError)?.line, 0)
        }
    }

    func testDirectoryIsUnreadable() {
        XCTAssertThrowsError(try ConfigLoader.load(file: "/tmp", overrides: [])) { error in
            XCTAssertEqual((error as? ConfigError)?.description, "/tmp: cannot read: Is a directory")
        }
    }

    func testErrorRendering() {
        XCTAssertEqual(ConfigError(file: "a.conf", line: 7, message: "m").description, "a.conf:7: m")
        XCTAssertEqual(ConfigError(file: "a.conf", line: 0, message: "m").description, "a.conf: m")
    }
}
