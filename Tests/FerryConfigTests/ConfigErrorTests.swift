import XCTest
@testable import FerryConfig

/// Every class of error, with its exact `FILE:LINE: message` rendering.
final class ConfigErrorTests: XCTestCase {
    private let port0 = "port.0.path = /tmp/p0.sock"

    func testUnknownKeySuggestsCloseKey() {
        XCTAssertEqual(rejection([port0, "", "burts = 32"]),
                       "ferry.conf:3: unknown key 'burts' (did you mean 'burst'?)")
        XCTAssertEqual(rejection([port0, "port.0.qeues = 2"]),
                       "ferry.conf:2: unknown key 'port.0.qeues' (did you mean 'port.0.queues'?)")
        XCTAssertEqual(rejection([port0, "prot.0.queue_size = 2"]),
                       "ferry.conf:2: unknown key 'prot.0.queue_size' (did you mean 'port.0.queue_size'?)")
        XCTAssertEqual(rejection([port0, "queues = 2"]),
                       "ferry.conf:2: unknown key 'queues' (did you mean 'port.0.queues'?)")
        XCTAssertEqual(rejection([port0, "BURST = 2"]),
                       "ferry.conf:2: unknown key 'BURST' (did you mean 'burst'?)")
    }

    func testUnknownKeyWithoutCloseKey() {
        XCTAssertEqual(rejection([port0, "colour = blue"]), "ferry.conf:2: unknown key 'colour'")
        XCTAssertEqual(rejection([port0, "speed = 10000"]), "ferry.conf:2: unknown key 'speed'")
        XCTAssertEqual(rejection([port0, "port.x.path = /b"]),
                       "ferry.conf:2: unknown key 'port.x.path' (did you mean 'port.0.path'?)")
    }

    func testBadMAC() {
        XCTAssertEqual(rejection([port0, "port.1.path = /b", "port.1.mac = zz:00:00:00:00:01"]),
                       "ferry.conf:3: port.1.mac: 'zz:00:00:00:00:01' is not a MAC address")
        XCTAssertEqual(rejection([port0, "port.0.mac = aa-bb-cc-dd-ee-ff"]),
                       "ferry.conf:2: port.0.mac: 'aa-bb-cc-dd-ee-ff' is not a MAC address")
        XCTAssertEqual(rejection([port0, "eth_peer.0 = 02:00:00:00:00"]),
                       "ferry.conf:2: eth_peer.0: '02:00:00:00:00' is not a MAC address")
    }

    func testPortMACMustBeUnicastAndNonZero() {
        XCTAssertEqual(rejection([port0, "port.0.mac = 01:00:5E:00:00:01"]),
                       "ferry.conf:2: port.0.mac: '01:00:5E:00:00:01' is a multicast address (a port MAC must be unicast)")
        XCTAssertEqual(rejection([port0, "port.0.mac = 00:00:00:00:00:00"]),
                       "ferry.conf:2: port.0.mac: '00:00:00:00:00:00' is the all-zero address")
    }

    func testNonNumericValues() {
        XCTAssertEqual(rejection([port0, "burst = fast"]), "ferry.conf:2: burst: 'fast' is not a number")
        XCTAssertEqual(rejection([port0, "port.0.queues = +2"]), "ferry.conf:2: port.0.queues: '+2' is not a number")
        XCTAssertEqual(rejection([port0, "duration = 1e3"]), "ferry.conf:2: duration: '1e3' is not a number")
        XCTAssertEqual(rejection([port0, "duration = inf"]), "ferry.conf:2: duration: 'inf' is not a number")
        XCTAssertEqual(rejection([port0, "stats_period = 1.5"]), "ferry.conf:2: stats_period: '1.5' is not a number")
    }

    func testNumbersOutOfRange() {
        XCTAssertEqual(rejection([port0, "burst = 0"]), "ferry.conf:2: burst: 0 is out of range (1...512)")
        XCTAssertEqual(rejection([port0, "burst = 513"]), "ferry.conf:2: burst: 513 is out of range (1...512)")
        XCTAssertEqual(rejection([port0, "port.0.queues = 32769"]),
                       "ferry.conf:2: port.0.queues: 32769 is out of range (1...32768)")
        XCTAssertEqual(rejection([port0, "stats_period = -1"]),
                       "ferry.conf:2: stats_period: -1 is out of range (0...1000000000)")
        XCTAssertEqual(rejection([port0, "duration = -0.5"]),
                       "ferry.conf:2: duration: -0.5 is out of range (0...1000000000)")
        XCTAssertEqual(rejection([port0, "tx_first = 99999999999999999999999"]),
                       "ferry.conf:2: tx_first: 99999999999999999999999 is out of range (0...1000000000)")
    }

    func testFlagsAreZeroOrOne() {
        XCTAssertEqual(rejection([port0, "port.0.server = yes"]), "ferry.conf:2: port.0.server: 'yes' is not 0 or 1")
        XCTAssertEqual(rejection([port0, "port.0.packed_vq = 2"]), "ferry.conf:2: port.0.packed_vq: '2' is not 0 or 1")
    }

    func testQueueSizeLimits() {
        XCTAssertEqual(rejection([port0, "port.0.queue_size = 0"]),
                       "ferry.conf:2: port.0.queue_size: 0 is out of range (1...32768)")
        XCTAssertEqual(rejection([port0, "port.0.queue_size = 40000"]),
                       "ferry.conf:2: port.0.queue_size: 40000 is out of range (1...32768)")
        XCTAssertEqual(rejection([port0, "port.0.queue_size = 40000", "port.0.packed_vq = 1"]),
                       "ferry.conf:2: port.0.queue_size: 40000 is out of range (1...32768)")
    }

    func testSplitRingNeedsPowerOfTwo() {
        XCTAssertEqual(rejection(["port.0.path = /a", "port.0.queue_size = 300"]),
                       "ferry.conf:2: port.0.queue_size: 300 is not a power of two (split rings need one; set port.0.packed_vq=1 for other sizes)")
        XCTAssertEqual(rejection(["port.0.path = /a", "port.0.queue_size = 300", "port.0.packed_vq = 1"],
                                 overrides: ["port.0.packed_vq=0"]),
                       "ferry.conf:2: port.0.queue_size: 300 is not a power of two (split rings need one; set port.0.packed_vq=1 for other sizes)")
        XCTAssertEqual(rejection(["port.0.path = /a"], overrides: ["port.0.queue_size=300"]),
                       "<command line>:1: port.0.queue_size: 300 is not a power of two (split rings need one; set port.0.packed_vq=1 for other sizes)")
    }

    func testDuplicateKeyInFileNamesBothLines() {
        XCTAssertEqual(rejection([port0, "burst = 32", "fwd = mac", "# again", "burst = 64"]),
                       "ferry.conf:5: duplicate key 'burst' (first set at ferry.conf:2)")
        XCTAssertEqual(rejection([port0, "port.00.path = /b"]),
                       "ferry.conf:2: duplicate key 'port.0.path' (first set at ferry.conf:1)")
        XCTAssertEqual(rejection([port0], overrides: ["burst=1", "burst=2"]),
                       "<command line>:2: duplicate key 'burst' (first set at <command line>:1)")
    }

    func testDuplicatePath() {
        XCTAssertEqual(rejection(["port.0.path = /tmp/a", "port.1.queues = 2", "port.1.path = /tmp/a"]),
                       "ferry.conf:3: port.1.path: '/tmp/a' is already used by port.0 (ferry.conf:1)")
        XCTAssertEqual(rejection(["port.0.path = /tmp/a", "port.1.path = /tmp/b"], overrides: ["port.0.path=/tmp/b"]),
                       "<command line>:1: port.0.path: '/tmp/b' is already used by port.1 (ferry.conf:2)")
    }

    func testMissingPathReportedAtPortsFirstKey() {
        XCTAssertEqual(rejection([port0, "burst = 8", "port.1.queues = 2", "port.1.mac = 02:00:00:00:00:01"]),
                       "ferry.conf:3: port.1: missing required key port.1.path")
        XCTAssertEqual(rejection(["port.0.queues = 2"], overrides: ["port.0.path=/a", "port.1.cq=1"]),
                       "<command line>:2: port.1: missing required key port.1.path")
    }

    func testPortGapNamesFirstMissingIndex() {
        XCTAssertEqual(rejection(["port.0.path = /a", "port.3.path = /d", "port.2.path = /c"]),
                       "ferry.conf:3: port.2: port 1 is missing (ports must be numbered from 0 without gaps)")
        XCTAssertEqual(rejection(["port.1.path = /b"]),
                       "ferry.conf:1: port.1: port 0 is missing (ports must be numbered from 0 without gaps)")
    }

    func testNoPorts() {
        XCTAssertEqual(rejection(["# nothing", "burst = 8"]), "ferry.conf: no ports configured (set port.0.path)")
        XCTAssertEqual(rejection([]), "ferry.conf: no ports configured (set port.0.path)")
    }

    func testEthPeerForMissingPort() {
        XCTAssertEqual(rejection([port0, "eth_peer.1 = 02:00:00:00:00:01"]),
                       "ferry.conf:2: eth_peer.1: port 1 is not configured")
    }

    func testBadChoices() {
        XCTAssertEqual(rejection([port0, "fwd = forward"]),
                       "ferry.conf:2: fwd: 'forward' is not one of io, mac, macswap, rxonly, txonly")
        XCTAssertEqual(rejection([port0, "fwd = macswp"]),
                       "ferry.conf:2: fwd: 'macswp' is not one of io, mac, macswap, rxonly, txonly (did you mean 'macswap'?)")
        XCTAssertEqual(rejection([port0, "port_topology = ring"]),
                       "ferry.conf:2: port_topology: 'ring' is not one of paired, chained, loop")
        XCTAssertEqual(rejection([port0, "rx_mode = irq"]),
                       "ferry.conf:2: rx_mode: 'irq' is not one of poll, interrupt")
    }

    func testTxPacketLengths() {
        XCTAssertEqual(rejection([port0, "txpkts = 20,20"]),
                       "ferry.conf:2: txpkts: total length 40 is below 42 (the smallest UDP/IPv4 frame)")
        XCTAssertEqual(rejection([port0, "txpkts = 4500, 4501"]),
                       "ferry.conf:2: txpkts: total length 9001 is above 9000")
        XCTAssertEqual(rejection([port0, "txpkts = 64,0"]),
                       "ferry.conf:2: txpkts: segment length 0 is out of range (1...9000)")
        XCTAssertEqual(rejection([port0, "txpkts = 64,,64"]),
                       "ferry.conf:2: txpkts: '64,,64' has an empty segment")
        XCTAssertEqual(rejection([port0, "txpkts = 64,x"]),
                       "ferry.conf:2: txpkts: 'x' is not a number")
    }

    func testCores() {
        XCTAssertEqual(rejection([port0, "cores = 1,x"]), "ferry.conf:2: cores: 'x' is not a CPU id or range")
        XCTAssertEqual(rejection([port0, "cores = 1,"]), "ferry.conf:2: cores: '' is not a CPU id or range")
        XCTAssertEqual(rejection([port0, "cores = 4-2"]), "ferry.conf:2: cores: range '4-2' is reversed")
        XCTAssertEqual(rejection([port0, "cores = 1-3,2"]), "ferry.conf:2: cores: CPU 2 is listed twice")
        XCTAssertEqual(rejection([port0, "cores = 0-5000"]), "ferry.conf:2: cores: CPU 5000 is out of range (0...1023)")
        XCTAssertEqual(rejection([port0, "cores = -1"]), "ferry.conf:2: cores: '-1' is not a CPU id or range")
    }

    func testStringValues() {
        XCTAssertEqual(rejection([port0, "port.0.iface = a-very-long-interface"]),
                       "ferry.conf:2: port.0.iface: 'a-very-long-interface' is longer than 15 bytes")
        XCTAssertEqual(rejection([port0, "port.0.iface = tap/0"]),
                       "ferry.conf:2: port.0.iface: 'tap/0' is not a valid interface name")
        let long = "/" + String(repeating: "s", count: 107)
        XCTAssertEqual(rejection(["port.0.path = \(long)"]),
                       "ferry.conf:1: port.0.path: '\(long)' is longer than 107 bytes (the limit for a socket path)")
    }

    func testSyntaxErrors() {
        XCTAssertEqual(rejection([port0, "burst"]), "ferry.conf:2: expected 'key = value', got 'burst'")
        XCTAssertEqual(rejection([port0, " = 5"]), "ferry.conf:2: missing key before '=' in '= 5'")
        XCTAssertEqual(rejection([port0, "burst =   # none"]), "ferry.conf:2: burst: missing value")
    }

    func testBadOverridesAreLocatedByPosition() {
        XCTAssertEqual(rejection([port0], overrides: ["fwd=mac", "burst=fast"]),
                       "<command line>:2: burst: 'fast' is not a number")
        XCTAssertEqual(rejection([port0], overrides: ["fwd=mac", "burst"]),
                       "<command line>:2: expected 'key = value', got 'burst'")
        XCTAssertEqual(rejection([port0], overrides: ["fwd=mac", "bursst=2"]),
                       "<command line>:2: unknown key 'bursst' (did you mean 'burst'?)")
    }

    func testFirstErrorInFileOrderWins() {
        // Two value errors: the earlier line is reported.
        XCTAssertEqual(rejection([port0, "burst = x", "fwd = y"]), "ferry.conf:2: burst: 'x' is not a number")
        // A file error comes before a command-line error, whatever is checked first.
        XCTAssertEqual(rejection([port0, "", "", "fwd = y"], overrides: ["burst=x"]),
                       "ferry.conf:4: fwd: 'y' is not one of io, mac, macswap, rxonly, txonly")
        // A cross-key problem on an earlier line beats a value error on a later one.
        XCTAssertEqual(rejection([port0, "port.0.queue_size = 300", "burst = x"]),
                       "ferry.conf:2: port.0.queue_size: 300 is not a power of two (split rings need one; set port.0.packed_vq=1 for other sizes)")
        // ...unless it depends on the bad value: then that value is the problem.
        XCTAssertEqual(rejection([port0, "port.0.queue_size = 300", "port.0.packed_vq = yes"]),
                       "ferry.conf:3: port.0.packed_vq: 'yes' is not 0 or 1")
        // A bad file value stays an error even when the command line overrides it.
        XCTAssertEqual(rejection([port0, "burst = x"], overrides: ["burst=8"]),
                       "ferry.conf:2: burst: 'x' is not a number")
    }
}
