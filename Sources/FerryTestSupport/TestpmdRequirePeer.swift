import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Thrown after recording a failure when a real peer is required but unavailable, so the test
/// stops there instead of running into the missing peer.
public struct RealPeerUnavailable: Error, CustomStringConvertible {
    public var description: String
}

/// The one policy for interop tests that need a real peer (dpdk-testpmd):
/// - `reason == nil`: the peer is usable, return;
/// - `FERRY_REQUIRE_PEERS=1` (CI): record a failure with the reason and throw, so CI cannot go
///   green by skipping;
/// - otherwise: print a loud `SKIPPED (real peer unavailable): <reason>` line and throw XCTSkip.
///
/// Typical use: `try requireRealPeer(TestpmdBackend.skipReason())`.
public func requireRealPeer(_ reason: String?, file: StaticString = #filePath, line: UInt = #line) throws {
    guard let reason else { return }
    if let v = getenv("FERRY_REQUIRE_PEERS"), String(cString: v) == "1" {
        let message = "real peer required (FERRY_REQUIRE_PEERS=1) but unavailable: \(reason)"
        XCTFail(message, file: file, line: line)
        throw RealPeerUnavailable(description: message)
    }
    print("SKIPPED (real peer unavailable): \(reason)")
    throw XCTSkip("real peer unavailable: \(reason)", file: file, line: line)
}
