@testable import BenchCore
import Foundation
import XCTest

/// The check that each A/B run negotiated the features it asked for.
final class NegotiationTests: XCTestCase {
    /// dpdk-testpmd net_vhost with lib.vhost.config at debug, against testpmd's virtio-user
    /// asked for packed_vq=1,mrg_rxbuf=0,in_order=0 (bits 30 PROTOCOL_FEATURES, 32 VERSION_1,
    /// 34 RING_PACKED): the lines seen on this machine. An earlier SET_FEATURES comes first.
    let backendLog = """
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) read message VHOST_USER_SET_FEATURES
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) negotiated Virtio features: 0x840008000
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) read message VHOST_USER_GET_PROTOCOL_FEATURES
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) negotiated Vhost-user protocol features: 0x10009
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) read message VHOST_USER_SET_FEATURES
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) negotiated Virtio features: 0x550000000
    VHOST_CONFIG: (/tmp/bc-exp/vh.sock) \t-FEATURES_OK: 1
    """

    func testBackendLogGivesTheLastNegotiatedFeatures() throws {
        let n = try XCTUnwrap(NegotiatedFeatures.fromBackendLog(backendLog))
        XCTAssertEqual(n.bits, 0x5_5000_0000)
        XCTAssertTrue(n.packedVq)
        XCTAssertFalse(n.mrgRxbuf)
        XCTAssertFalse(n.inOrder)
        XCTAssertEqual(n.summary, "packed_vq=1,mrg_rxbuf=0,in_order=0")
        // The protocol-features line is not the virtio features.
        XCTAssertNil(NegotiatedFeatures.fromBackendLog("negotiated Vhost-user protocol features: 0x10009"))
    }

    func testFeatureBits() {
        let all = NegotiatedFeatures(bits: 1 << 15 | 1 << 32 | 1 << 34 | 1 << 35)
        XCTAssertTrue(all.packedVq && all.mrgRxbuf && all.inOrder)
        let none = NegotiatedFeatures(bits: 1 << 32)
        XCTAssertFalse(none.packedVq || none.mrgRxbuf || none.inOrder)
    }

    func testFerryRingLine() throws {
        let log = """
        [0.004] INFO port 0 (/tmp/x/vhost.sock): split ring, queue_size 256, queues 1, mrg_rxbuf off, in_order on, indirect off, MAC 02:00:00:00:00:01
        [0.005] INFO worker 0 on core 1: 1 stream(s), io mode, burst 32, rx_mode poll
        """
        let f = try XCTUnwrap(NegotiatedFeatures.fromFerryLog(log))
        XCTAssertEqual(f, NegotiatedFeatures(bits: nil, packedVq: false, mrgRxbuf: false, inOrder: true))
        let packed = NegotiatedFeatures.fromFerryLog("INFO port 0 (/s): packed ring, queue_size 256, queues 1, mrg_rxbuf on, in_order off, indirect off")
        XCTAssertEqual(packed?.summary, "packed_vq=1,mrg_rxbuf=1,in_order=0")
        XCTAssertNil(NegotiatedFeatures.fromFerryLog("INFO worker 0 on core 1"))
    }

    func testDifferencesNameEachFeatureThatDiffers() {
        let asked = BenchConfig(packed: true, frameSize: 64, queues: 1, mrgRxbuf: true, inOrder: false)
        let got = NegotiatedFeatures(bits: nil, packedVq: false, mrgRxbuf: true, inOrder: true)
        XCTAssertEqual(got.differences(from: asked), ["packed_vq: asked 1, got 0", "in_order: asked 0, got 1"])
        let same = NegotiatedFeatures(bits: nil, packedVq: true, mrgRxbuf: true, inOrder: false)
        XCTAssertEqual(same.differences(from: asked), [])
    }

    func testRunCheckFlagsAMismatchAndAMissingLine() {
        let asked = BenchConfig(packed: false, frameSize: 64, queues: 1, mrgRxbuf: false, inOrder: true)
        var run = ThroughputRun(dut: .ferry, pair: 1, mpps: 5, periodsMpps: [], warmupPeriods: 0, loadAverage: 0)
        // Backend: split, mrg_rxbuf on (bit 15), in_order on (bit 35); Ferry's line agrees with it.
        let backend = "VHOST_CONFIG: (/s) negotiated Virtio features: 0x940008000"
        let ferry = "INFO port 0 (/s): split ring, queue_size 256, queues 1, mrg_rxbuf on, in_order on, indirect off"
        ThroughputBench.checkNegotiation(&run, config: asked, backendLog: backend, dutLog: ferry)
        XCTAssertEqual(run.negotiationMismatch, "backend saw mrg_rxbuf: asked 0, got 1; ferry logged mrg_rxbuf: asked 0, got 1")

        var testpmd = ThroughputRun(dut: .testpmd, pair: 1, mpps: 5, periodsMpps: [], warmupPeriods: 0, loadAverage: 0)
        ThroughputBench.checkNegotiation(&testpmd, config: asked, backendLog: "", dutLog: "")
        XCTAssertEqual(testpmd.negotiationMismatch, "no negotiated features in the backend's log")

        var ok = ThroughputRun(dut: .testpmd, pair: 1, mpps: 5, periodsMpps: [], warmupPeriods: 0, loadAverage: 0)
        ThroughputBench.checkNegotiation(&ok, config: asked, backendLog: "negotiated Virtio features: 0x940000000", dutLog: "")
        XCTAssertNil(ok.negotiationMismatch)
    }

    func testRowListsEachMismatchOnce() {
        let asked = BenchConfig(packed: true, frameSize: 64, queues: 1)
        func run(_ dut: DUTKind, _ pair: Int, _ mismatch: String?) -> ThroughputRun {
            var r = ThroughputRun(dut: dut, pair: pair, mpps: 4, periodsMpps: [], warmupPeriods: 0, loadAverage: 0)
            r.negotiationMismatch = mismatch
            return r
        }
        let row = ThroughputRow(config: asked, status: "ok", reason: nil, runs: [
            run(.ferry, 1, "backend saw packed_vq: asked 1, got 0"), run(.testpmd, 1, nil),
            run(.ferry, 2, "backend saw packed_vq: asked 1, got 0"), run(.testpmd, 2, nil),
        ])
        XCTAssertEqual(row.negotiationMismatches, ["ferry: backend saw packed_vq: asked 1, got 0"])
        XCTAssertEqual(row.requested, "packed_vq=1,mrg_rxbuf=1,in_order=1")
    }

    func testTheEightCombinationsAndHowEachDUTIsAskedForThem() {
        let combos = BenchConfig.combinations
        XCTAssertEqual(combos.count, 8)
        XCTAssertEqual(Set(combos.map(\.featureArgs)).count, 8)
        XCTAssertEqual(Set(combos.map(\.token)).count, 8)
        XCTAssertTrue(combos.allSatisfy { $0.frameSize == 64 && $0.queues == 1 })
        // The all-on split combination is the configurations' split 64B row.
        XCTAssertEqual(combos.first?.token, "split-64")
        XCTAssertEqual(combos.last?.name, "packed 64B mrg_rxbuf=0 in_order=0")

        let config = BenchConfig(packed: true, frameSize: 64, queues: 1, mrgRxbuf: false, inOrder: true)
        let dir = NSTemporaryDirectory() + "negotiation-tests-\(getpid())"
        BenchFiles.makeDirectory(dir)
        let testpmd = DUTLaunch(kind: .testpmd, socket: "/s.sock", config: config, txFirst: true, statsPeriod: 1,
                                cpu: 1, mainCPU: 0, ferryBinary: "/bin/true", workDir: dir)
        XCTAssertTrue(testpmd.bareCommand().1.contains("net_virtio_user0,path=/s.sock,queues=1,packed_vq=1,mrg_rxbuf=0,in_order=1"))
        let ferry = DUTLaunch(kind: .ferry, socket: "/s.sock", config: config, txFirst: true, statsPeriod: 1,
                              cpu: 1, mainCPU: 0, ferryBinary: "/bin/true", workDir: dir)
        _ = ferry.bareCommand()
        let conf = BenchFiles.read(dir + "/dut.conf") ?? ""
        XCTAssertTrue(conf.contains("port.0.packed_vq = 1\n"))
        XCTAssertTrue(conf.contains("port.0.mrg_rxbuf = 0\n"))
        XCTAssertTrue(conf.contains("port.0.in_order = 1\n"))
    }
}
