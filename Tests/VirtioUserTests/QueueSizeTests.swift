import XCTest
import Vhost
import Virtio
import VirtioUser
import FerryTestSupport

/// queue_size reaches the rings and the device as given.
final class QueueSizeTests: VirtioUserTestCase {
    func testQueueSizeIsProgrammedIntoEveryVring() throws {
        for size in [1, 64, 1024] {
            let double = try startDouble(tag: "qs\(size)")
            let device = try openDevice(double) { $0.queueSize = size }
            try device.negotiate()
            try device.start()
            for i in 0..<device.vringCount {
                XCTAssertEqual(device.rings[i].queueSize, UInt16(size))
                XCTAssertEqual(double.vring(UInt32(i))?.num, UInt32(size), "queue_size \(size), vring \(i)")
            }
            device.close()
            double.stop()
        }
    }

    /// The configuration accepts any size in 1...32768 with packed_vq=1 (packed rings need no
    /// power of two), but Ferry still builds split rings, whose initialiser traps on such a
    /// size. The device must refuse the size with an error naming the path, not crash.
    func testQueueSizeThatIsNoPowerOfTwoIsRefusedNotTrapped() throws {
        for size in [255, 0, 65536] {
            let double = try startDouble(tag: "bad\(size)")
            XCTAssertThrowsError(try {
                let device = try openDevice(double) { $0.queueSize = size; $0.packedVq = true }
                try device.negotiate()
            }()) { error in
                XCTAssertTrue("\(error)".contains(double.path), "\(error)")
            }
            double.stop()
        }
    }
}
