import XCTest
import FerryTestSupport
import Forwarding
#if canImport(Glibc)
import Glibc
#endif

/// Memory-table update at run time (the seed's memory event callback): when Ferry's buffer
/// pool grows into a new memory segment, the active pairs are paused, SET_MEM_TABLE is sent
/// again with one more region, and the pairs resume; traffic keeps flowing through it.
final class FerryMemoryUpdateTests: InteropTestCase {
    func testPoolGrowthSendsTheMemoryTableAgainAndTrafficFlows() throws {
        let paths = try startBackend(sockets: 1)
        let runtime = try makeRuntime(paths: paths, extra: ["duration=0"])
        let ferry = Background(runtime)
        XCTAssertTrue(waitFor(runtime, timeout: 20, "traffic") { $0.ports[0].rxPackets > 10_000 })

        runtime.requestPoolGrowth()
        let testpmd = try XCTUnwrap(backend)
        XCTAssertTrue(testpmd.waitForLog("read message VHOST_USER_SET_MEM_TABLE", occurrences: 2, timeoutMs: 10_000),
                      "a second SET_MEM_TABLE should follow the growth")
        // Pausing the pairs around SET_MEM_TABLE (as DPDK does) can drop the few frames of a
        // loopback that were inside testpmd at that moment, so testpmd seeds a fresh burst:
        // it lands in Ferry's RX buffers, the new segment's among them, and must circulate.
        XCTAssertTrue(waitFor(runtime, timeout: 10, "link up after the update") { $0.ports[0].linkUp })
        try testpmd.command("stop")
        try testpmd.command("start tx_first")
        let before = runtime.snapshot()?.ports[0].rxPackets ?? 0
        XCTAssertTrue(waitFor(runtime, timeout: 20, "traffic after the update") { $0.ports[0].rxPackets > before + 10_000 })
        let summary = try ferry.finish()
        XCTAssertTrue(summary.ports[0].linkUp)

        // The second table carries two regions, and around it the pair was paused and resumed.
        let messages = testpmd.vhostMessageOrder(socket: paths[0]).map { $0.replacingOccurrences(of: "VHOST_USER_", with: "") }
        let second = try XCTUnwrap(messages.indices.filter { messages[$0] == "SET_MEM_TABLE" }.dropFirst().first)
        XCTAssertEqual(Array(messages[(second - 2)...(second + 2)]),
                       ["SET_VRING_ENABLE", "SET_VRING_ENABLE", "SET_MEM_TABLE", "SET_VRING_ENABLE", "SET_VRING_ENABLE"])
        let regionLines = testpmd.log.components(separatedBy: "\n").filter { $0.contains("guest memory region size") }
        XCTAssertEqual(regionLines.count, 1 + 2, "first table: one region; second table: two")
    }
}
