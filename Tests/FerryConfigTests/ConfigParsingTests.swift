import XCTest
@testable import FerryConfig

final class ConfigParsingTests: XCTestCase {
    func testFullFileSetsEveryKey() throws {
        let lines = [
            "# Ferry test configuration",                // 1
            "fwd = macswap",                             // 2
            "burst = 64",                                // 3
            "txpkts = 14, 20, 30   # three segments",    // 4
            "tx_first = 2",                              // 5
            "cores = 1,3-4",                             // 6
            "port_topology = chained",                   // 7
            "stats_period = 5",                          // 8
            "duration = 2.5",                            // 9
            "stats_json = /tmp/stats.json",              // 10
            "rx_mode = interrupt",                       // 11
            "",                                          // 12
            "port.0.path = /tmp/vhost0.sock",            // 13
            "port.0.queues = 4",                         // 14
            "port.0.queue_size = 1024",                  // 15
            "port.0.mac = AA:bb:cc:dd:ee:00",            // 16
            "port.0.server = 1",                         // 17
            "port.0.mrg_rxbuf = 0",                      // 18
            "port.0.in_order = 0",                       // 19
            "port.0.packed_vq = 1",                      // 20
            "port.0.cq = 1",                             // 21
            "port.0.reconnect_ms = 500",                 // 22
            "port.0.iface = ferry%d",                    // 23
            "port.1.path=/dev/vhost-net",                // 24
            "eth_peer.1 = 01:00:5e:00:00:01",            // 25
        ]
        let configuration = try parse(lines)
        let expected = FerryConfiguration(
            ports: [
                PortConfig(index: 0, path: "/tmp/vhost0.sock", queues: 4, queueSize: 1024,
                           mac: MACAddress(bytes: [0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x00]),
                           server: true, mrgRxbuf: false, inOrder: false, packedVq: true, cq: true,
                           reconnectMs: 500, iface: "ferry%d", file: "ferry.conf", line: 13),
                PortConfig(index: 1, path: "/dev/vhost-net", file: "ferry.conf", line: 24),
            ],
            fwd: .macswap, burst: 64, txPackets: [14, 20, 30], txFirst: 2, cores: [1, 3, 4],
            ethPeers: [0: MACAddress(bytes: [2, 0, 0, 0, 0, 0]), 1: MACAddress(bytes: [1, 0, 0x5E, 0, 0, 1])],
            portTopology: .chained, statsPeriod: 5, duration: 2.5, statsJSON: "/tmp/stats.json",
            rxMode: .interrupt)
        XCTAssertEqual(configuration, expected)
        XCTAssertEqual(configuration.ports[0].location, "ferry.conf:13")
        XCTAssertEqual(configuration.txPacketLength, 64)
    }

    func testDefaults() throws {
        let configuration = try parse(["port.0.path = /tmp/a.sock"])
        XCTAssertEqual(configuration.ports.count, 1)
        let port = configuration.ports[0]
        XCTAssertEqual(port.index, 0)
        XCTAssertEqual(port.path, "/tmp/a.sock")
        XCTAssertEqual(port.queues, 1)
        XCTAssertEqual(port.queueSize, 256)
        XCTAssertNil(port.mac)
        XCTAssertFalse(port.server)
        XCTAssertTrue(port.mrgRxbuf)
        XCTAssertTrue(port.inOrder)
        XCTAssertFalse(port.packedVq)
        XCTAssertFalse(port.cq)
        XCTAssertEqual(port.reconnectMs, 0)
        XCTAssertEqual(port.iface, "tap%d")
        XCTAssertTrue(port.indirect, "INDIRECT_DESC is accepted by default, as DPDK does")
        XCTAssertEqual(port.line, 1)
        XCTAssertEqual(configuration.fwd, .io)
        XCTAssertEqual(configuration.burst, 32)
        XCTAssertEqual(configuration.txPackets, [64])
        XCTAssertEqual(configuration.txFirst, 0)
        XCTAssertNil(configuration.cores)
        XCTAssertEqual(configuration.ethPeers, [0: MACAddress(bytes: [2, 0, 0, 0, 0, 0])])
        XCTAssertEqual(configuration.portTopology, .paired)
        XCTAssertEqual(configuration.statsPeriod, 0)
        XCTAssertEqual(configuration.duration, 0)
        XCTAssertNil(configuration.statsJSON)
        XCTAssertEqual(configuration.rxMode, .poll)
    }

    func testDefaultPeersForEveryPort() throws {
        let configuration = try parse(["port.0.path = /a", "port.1.path = /b", "port.2.path = /c",
                                       "eth_peer.1 = 02:aa:00:00:00:01"])
        XCTAssertEqual(configuration.ethPeer(port: 0).description, "02:00:00:00:00:00")
        XCTAssertEqual(configuration.ethPeer(port: 1).description, "02:aa:00:00:00:01")
        XCTAssertEqual(configuration.ethPeer(port: 2).description, "02:00:00:00:00:02")
        XCTAssertEqual(configuration.ethPeers.count, 3)
    }

    func testOverridesReplaceFileValuesAndAddKeys() throws {
        let configuration = try parse(
            ["port.0.path = /tmp/a.sock", "burst = 16", "fwd = mac"],
            overrides: ["burst=128", " fwd = rxonly ", "port.0.queues=2", "port.1.path=/tmp/b.sock"])
        XCTAssertEqual(configuration.burst, 128)
        XCTAssertEqual(configuration.fwd, .rxonly)
        XCTAssertEqual(configuration.ports[0].queues, 2)
        XCTAssertEqual(configuration.ports[1].path, "/tmp/b.sock")
        XCTAssertEqual(configuration.ports[1].file, "<command line>")
        XCTAssertEqual(configuration.ports[1].line, 4)
    }

    func testOverrideCanFixSplitRingSizeWithPackedRing() throws {
        let configuration = try parse(["port.0.path = /a", "port.0.queue_size = 300"],
                                      overrides: ["port.0.packed_vq=1"])
        XCTAssertEqual(configuration.ports[0].queueSize, 300)
        XCTAssertTrue(configuration.ports[0].packedVq)
    }

    func testCommentsBlankLinesAndSpacing() throws {
        let text = "  # leading comment\n\n\t\nport.0.path=/tmp/x#y   # trailing comment\n"
            + "burst\t=\t8\t# tab comment\r\n   port_topology   =loop\n#burst = 1\nstats_json = /tmp/a b.json"
        let configuration = try ConfigLoader.parse(text: text, file: "f", overrides: [])
        XCTAssertEqual(configuration.ports[0].path, "/tmp/x#y")
        XCTAssertEqual(configuration.ports[0].line, 4)
        XCTAssertEqual(configuration.burst, 8)
        XCTAssertEqual(configuration.portTopology, .loop)
        XCTAssertEqual(configuration.statsJSON, "/tmp/a b.json")
    }

    func testCRLFLinesCountLikeLF() throws {
        let text = "burst = 8\r\nport.0.path = /a\r\nbogus = 1\r\n"
        XCTAssertThrowsError(try ConfigLoader.parse(text: text, file: "f", overrides: [])) { error in
            XCTAssertEqual((error as? ConfigError)?.description, "f:3: unknown key 'bogus'")
        }
    }

    func testPacketRingAcceptsAnySizeUpToLimit() throws {
        let configuration = try parse(["port.0.path = /a", "port.0.queue_size = 300", "port.0.packed_vq = 1"])
        XCTAssertEqual(configuration.ports[0].queueSize, 300)
        let largest = try parse(["port.0.path = /a", "port.0.queue_size = 32768"])
        XCTAssertEqual(largest.ports[0].queueSize, 32768)
    }

    func testPortIndexesMayComeInAnyOrder() throws {
        let configuration = try parse(["port.1.path = /b", "port.0.queues = 2", "port.0.path = /a"])
        XCTAssertEqual(configuration.ports.map(\.path), ["/a", "/b"])
        XCTAssertEqual(configuration.ports.map(\.index), [0, 1])
        XCTAssertEqual(configuration.ports.map(\.line), [2, 1])
    }

    func testNumericForms() throws {
        let configuration = try parse(["port.0.path = /a", "duration = .5", "tx_first = 1",
                                       "cores = 0-2, 5 ,7", "txpkts = 42", "port.0.queues = 128"])
        XCTAssertEqual(configuration.duration, 0.5)
        XCTAssertEqual(configuration.txFirst, 1)
        XCTAssertEqual(configuration.cores, [0, 1, 2, 5, 7])
        XCTAssertEqual(configuration.txPackets, [42])
        XCTAssertEqual(configuration.ports[0].queues, 128)
        XCTAssertEqual(try parse(["port.0.path = /a", "duration = 3"]).duration, 3)
        XCTAssertEqual(try parse(["port.0.path = /a", "txpkts = 9000"]).txPackets, [9000])
    }

    func testIndirectKeyRefusesOrAcceptsIndirectDescriptors() throws {
        XCTAssertFalse(try parse(["port.0.path = /a", "port.0.indirect = 0"]).ports[0].indirect)
        XCTAssertTrue(try parse(["port.0.path = /a", "port.0.indirect = 1"]).ports[0].indirect)
        XCTAssertFalse(try parse(["port.0.path = /a"], overrides: ["port.0.indirect=0"]).ports[0].indirect)
        // Per port: port 1 keeps the default.
        let two = try parse(["port.0.path = /a", "port.0.indirect = 0", "port.1.path = /b"])
        XCTAssertEqual(two.ports.map(\.indirect), [false, true])
    }

    func testMaxPktLenDefaultsToJumboAndIsBounded() throws {
        XCTAssertEqual(try parse(["port.0.path = /a"]).maxPacketLength, 9216)
        XCTAssertEqual(try parse(["port.0.path = /a", "max_pkt_len = 1518"]).maxPacketLength, 1518)
        XCTAssertEqual(try parse(["port.0.path = /a"], overrides: ["max_pkt_len=64"]).maxPacketLength, 64)
        let message = rejection(["port.0.path = /a", "max_pkt_len = 9217"])
        XCTAssertTrue(message?.contains("max_pkt_len") ?? false, message ?? "")
        XCTAssertNotNil(rejection(["port.0.path = /a", "max_pkt_len = 63"]))
        XCTAssertNotNil(rejection(["port.0.path = /a", "max_pkt_len = big"]))
    }

    func testIndirectKeyTakesOnlyAFlag() {
        let message = rejection(["port.0.path = /a", "port.0.indirect = 2"])
        XCTAssertTrue(message?.contains("port.0.indirect: '2' is not 0 or 1") ?? false, message ?? "")
        XCTAssertNotNil(rejection(["port.0.path = /a", "port.0.indirect = on"]))
    }

    func testEthPeerMayBeAnyValidAddress() throws {
        let configuration = try parse(["port.0.path = /a", "eth_peer.0 = ff:ff:ff:ff:ff:ff"])
        XCTAssertEqual(configuration.ethPeer(port: 0).description, "ff:ff:ff:ff:ff:ff")
    }

    func testReferenceListsExactlyTheKeysTheParserKnows() {
        let documented = Set(ConfigKeys.reference.map(\.key))
        var known = Set(GlobalKey.allCases.map(\.rawValue))
        known.formUnion(PortKey.allCases.map { "port.N.\($0.rawValue)" })
        known.insert("eth_peer.N")
        XCTAssertEqual(documented, known)
        XCTAssertEqual(ConfigKeys.reference.count, documented.count, "a key is documented twice")
    }

    func testEveryDocumentedKeyIsAccepted() throws {
        let samples: [String: String] = [
            "path": "/x", "queues": "2", "queue_size": "512", "mac": "02:00:00:00:00:09", "server": "1",
            "mrg_rxbuf": "0", "in_order": "0", "packed_vq": "1", "cq": "1", "reconnect_ms": "10",
            "iface": "tap1", "indirect": "0", "fwd": "txonly", "burst": "1", "txpkts": "60", "tx_first": "3", "cores": "1",
            "eth_peer.N": "02:00:00:00:00:08", "port_topology": "loop", "stats_period": "1",
            "duration": "1", "stats_json": "/tmp/s.json", "rx_mode": "poll", "max_pkt_len": "1518",
        ]
        for entry in ConfigKeys.reference {
            let key = entry.key.replacingFirst("N", with: "0")
            let field = entry.key.hasPrefix("port.N.") ? String(entry.key.dropFirst("port.N.".count)) : entry.key
            let value = try XCTUnwrap(samples[field], "no sample for \(entry.key)")
            XCTAssertNoThrow(try parse(["port.0.path = /a"], overrides: key == "port.0.path" ? [] : ["\(key)=\(value)"]),
                             entry.key)
        }
    }
}

private extension String {
    func replacingFirst(_ target: Character, with replacement: String) -> String {
        guard let index = firstIndex(of: target) else { return self }
        return String(self[..<index]) + replacement + String(self[self.index(after: index)...])
    }
}
