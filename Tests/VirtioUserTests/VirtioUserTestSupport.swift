import XCTest
import CFerry
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A fresh socket path under /tmp, unique per test process (pid) and call. Registered for
/// removal by `VirtioUserTestCase.tearDown`.
func uniqueSocketPath(_ tag: String) -> String {
    uniqueSocketCounter += 1
    return "/tmp/ferry-vutests-\(getpid())-\(uniqueSocketCounter)-\(tag).sock"
}
nonisolated(unsafe) private var uniqueSocketCounter = 0

/// Feature words as the double offers them, spelled with Ferry's names so a test reads like
/// the negotiation it checks.
enum Offer {
    static func bits(_ features: VirtioFeatures) -> UInt64 { features.rawValue }
    /// The double's default: VERSION_1 | PROTOCOL_FEATURES | MRG_RXBUF | INDIRECT_DESC.
    static let `default` = VhostUserDeviceDouble.defaultFeatures
}

/// One device double, one shared memory and the Ferry devices opened on them, torn down in
/// the right order: Ferry closes first, then the double stops (joining its threads), then the
/// socket file goes.
class VirtioUserTestCase: XCTestCase {
    private var doubles: [VhostUserDeviceDouble] = []
    private var devices: [VirtioUserDevice] = []
    private var memories: [SharedMemory] = []
    private var paths: [String] = []

    override func setUp() {
        super.setUp()
        // Keep the test log readable; errors and the hugepage fallback warning still show.
        FerryLog.minimumLevel = .warning
    }

    override func tearDown() {
        for device in devices { device.close() }
        for double in doubles { double.stop() }
        for path in paths { unlink(path) }
        devices = []
        doubles = []
        memories = []
        paths = []
        super.tearDown()
    }

    /// A socket path that tearDown unlinks.
    func socketPath(_ tag: String) -> String {
        let path = uniqueSocketPath(tag)
        paths.append(path)
        return path
    }

    /// A device double listening on a fresh path; stopped by tearDown.
    func startDouble(_ configuration: VhostUserDeviceDouble.Configuration = .init(),
                     tag: String = "dev") throws -> VhostUserDeviceDouble {
        let double = try VhostUserDeviceDouble(listeningAt: socketPath(tag), configuration: configuration)
        doubles.append(double)
        return double
    }

    /// Shared memory kept alive until tearDown (PacketPool does not retain it).
    func makeMemory(bytes: Int = SharedMemory.hugepageSize) throws -> SharedMemory {
        let memory = try SharedMemory(size: bytes, name: "ferry-vutests")
        memories.append(memory)
        return memory
    }

    /// Opens a Ferry device (client mode) on `double`, running the seed's init.
    func openDevice(_ double: VhostUserDeviceDouble, memory: SharedMemory? = nil,
                    _ configure: (inout VirtioUserOptions) -> Void = { _ in }) throws -> VirtioUserDevice {
        var options = VirtioUserOptions(path: double.path)
        configure(&options)
        let device = try VirtioUserDevice(options: options, memory: memory ?? makeMemory())
        devices.append(device)
        return device
    }

    /// Waits (bounded) until the double has received at least `count` requests: requests that
    /// have no reply reach the double's thread after the call that sent them returned.
    func waitForRequests(_ double: VhostUserDeviceDouble, count: Int,
                         file: StaticString = #filePath, line: UInt = #line) {
        let ok = double.waitForRequests(count: count, timeoutMs: 5000)
        XCTAssertTrue(ok, "double received \(double.receivedRequests.count) requests, expected at least \(count): \(requestNames(double.receivedRequests))",
                      file: file, line: line)
    }

    /// Waits (bounded) for `condition`; fails the test with `message` when it never holds.
    func waitFor(_ double: VhostUserDeviceDouble, _ message: @autoclosure () -> String,
                 file: StaticString = #filePath, line: UInt = #line, _ condition: () -> Bool) {
        if !double.waitUntil(timeoutMs: 5000, condition) {
            XCTFail("timed out waiting for: \(message())", file: file, line: line)
        }
    }
}

/// Spec names, so a failed sequence comparison prints readably.
func requestNames(_ requests: [VhostUserRequest]) -> [String] { requests.map(\.description) }

/// Asserts two request sequences are identical, printing both by name when they are not.
func XCTAssertRequests(_ actual: [VhostUserRequest], _ expected: [VhostUserRequest],
                       _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(requestNames(actual), requestNames(expected), message, file: file, line: line)
}

/// The seed's message sequence for each phase of a vhost-user session, as
/// `shared/reference/anchors.md` ("The order DPDK's frontend uses") lists it.
enum SeedSequence {
    /// `virtio_user_dev_init`: SET_OWNER, GET_FEATURES, and the protocol-feature handshake
    /// when the device offers bit 30. (No GET/SET_CONFIG: Ferry never agrees CONFIG.)
    static func initialize(protocolFeatures: Bool) -> [VhostUserRequest] {
        [.setOwner, .getFeatures] + (protocolFeatures ? [.getProtocolFeatures, .setProtocolFeatures] : [])
    }

    /// Reset, ACK and DRIVER send nothing over vhost-user (no status before FEATURES_OK);
    /// FEATURES_OK sends SET_VRING_CALL for every vring, SET_FEATURES, then SET_STATUS and the
    /// GET_STATUS that checks FEATURES_OK stuck, when STATUS was agreed.
    static func negotiate(vrings: Int, status: Bool) -> [VhostUserRequest] {
        Array(repeating: .setVringCall, count: vrings) + [.setFeatures]
            + (status ? [.setStatus, .getStatus] : [])
    }

    /// DRIVER_OK: SET_MEM_TABLE, then NUM, BASE, ADDR, KICK per vring, then pair 0 enabled,
    /// then SET_STATUS. Ferry adds one message the seed does not send: a GET_STATUS after
    /// DRIVER_OK (VirtioUserDevice.start: the device may refuse DRIVER_OK, and the answered
    /// read orders the first burst after the backend's new_device).
    static func start(vrings: Int, status: Bool) -> [VhostUserRequest] {
        var out: [VhostUserRequest] = [.setMemTable]
        for _ in 0..<vrings { out += [.setVringNum, .setVringBase, .setVringAddr, .setVringKick] }
        out += [.setVringEnable, .setVringEnable]
        if status { out += [.setStatus, .getStatus] }
        return out
    }

    /// `virtio_user_stop_device`: SET_VRING_ENABLE 0 for both vrings of every pair, then
    /// GET_VRING_BASE per vring.
    static func stop(pairs: Int) -> [VhostUserRequest] {
        Array(repeating: .setVringEnable, count: 2 * pairs) + Array(repeating: .getVringBase, count: 2 * pairs)
    }
}
