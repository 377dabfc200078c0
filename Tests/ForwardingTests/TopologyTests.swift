import XCTest
import FerryConfig
@testable import Forwarding

/// `port_topology`, as testpmd's `--port-topology`.
final class TopologyTests: XCTestCase {
    private func peers(_ topology: PortTopology, _ count: Int) -> [Int] {
        (0..<count).map { topology.peer(of: $0, portCount: count) }
    }

    func testPairedPairsNeighboursAndOddLastPortWithItself() {
        XCTAssertEqual(peers(.paired, 1), [0])
        XCTAssertEqual(peers(.paired, 2), [1, 0])
        XCTAssertEqual(peers(.paired, 3), [1, 0, 2])
        XCTAssertEqual(peers(.paired, 4), [1, 0, 3, 2])
        XCTAssertEqual(peers(.paired, 5), [1, 0, 3, 2, 4])
    }

    func testPairedIsItsOwnInverse() {
        for count in 1...9 {
            for port in 0..<count {
                let peer = PortTopology.paired.peer(of: port, portCount: count)
                XCTAssertTrue((0..<count).contains(peer))
                XCTAssertEqual(PortTopology.paired.peer(of: peer, portCount: count), port, "count \(count), port \(port)")
            }
        }
    }

    func testChainedSendsEachPortToTheNextAndTheLastToTheFirst() {
        XCTAssertEqual(peers(.chained, 1), [0])
        XCTAssertEqual(peers(.chained, 2), [1, 0])
        XCTAssertEqual(peers(.chained, 3), [1, 2, 0])
        XCTAssertEqual(peers(.chained, 4), [1, 2, 3, 0])
    }

    func testChainedVisitsEveryPortOnce() {
        for count in 1...9 {
            var seen = Set<Int>()
            var port = 0
            for _ in 0..<count {
                seen.insert(port)
                port = PortTopology.chained.peer(of: port, portCount: count)
            }
            XCTAssertEqual(port, 0, "the chain closes after \(count) hops")
            XCTAssertEqual(seen.count, count)
        }
    }

    func testLoopSendsEachPortToItself() {
        XCTAssertEqual(peers(.loop, 1), [0])
        XCTAssertEqual(peers(.loop, 3), [0, 1, 2])
        XCTAssertEqual(peers(.loop, 4), [0, 1, 2, 3])
    }
}
