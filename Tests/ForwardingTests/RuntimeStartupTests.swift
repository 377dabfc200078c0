import XCTest
import FerryConfig
@testable import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Start-up failures are thrown before anything forwards.
final class RuntimeStartupTests: XCTestCase {
    func testMissingBackendNamesItsPath() throws {
        let path = forwardingSocketPath("missing")
        unlink(path)
        let config = try forwardingConfig(["port.0.path = \(path)", "duration = 0.2"])
        let output = OutputBox()
        XCTAssertThrowsError(try makeRuntime(config, output: output).run()) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
        XCTAssertEqual(output.value, "", "no stats for a run that never started")
    }

    func testFramesLargerThanABufferAreRefused() throws {
        let path = forwardingSocketPath("big")
        let config = try forwardingConfig(["port.0.path = \(path)", "txpkts = 4000", "duration = 0.2"])
        XCTAssertThrowsError(try makeRuntime(config, output: OutputBox()).run()) { error in
            XCTAssertTrue("\(error)".contains("txpkts"), "\(error)")
        }
    }
}
