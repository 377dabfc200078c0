import BenchCore
import CFerry
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// ring-ir: the driver side of one split ring, in one thread, for callgrind: post a burst,
/// let a device (the generator's GenRing) use it, take it back. Compares Ferry's `SplitRing`
/// with `ProtoInOrderRing`, a prototype of the proposed IN_ORDER fast path.
///
///   valgrind --tool=callgrind --callgrind-out-file=cg ring-ir ferry 100000
///   valgrind --tool=callgrind --callgrind-out-file=cg ring-ir proto 100000
///
/// `scripts/ring-ir.sh` runs both and prints instructions per packet for post (addBuffer,
/// publish, kickNeeded) and complete (dequeueUsed), the two halves of every RX refill/receive
/// and every TX transmit/reclaim.

let args = CommandLine.arguments
let variant = args.count > 1 ? args[1] : "ferry"
let bursts = args.count > 2 ? Int(args[2]) ?? 100_000 : 100_000
let burst = 32
let queueSize: UInt16 = 256

var raw: UnsafeMutableRawPointer?
posix_memalign(&raw, 4096, SplitRingLayout.totalSize(queueSize: Int(queueSize)))
let memory = raw!
memory.initializeMemory(as: UInt8.self, repeating: 0, count: SplitRingLayout.totalSize(queueSize: Int(queueSize)))
let buffers = UnsafeMutableRawPointer.allocate(byteCount: Int(queueSize) * 2048, alignment: 4096)
let base = UInt64(UInt(bitPattern: buffers))
let cookies = UnsafeMutablePointer<UInt32>.allocate(capacity: burst)
let lengths = UnsafeMutablePointer<UInt32>.allocate(capacity: burst)
var device = GenRing(size: queueSize, desc: memory,
                     avail: memory + SplitRingLayout.availOffset(queueSize: Int(queueSize)),
                     used: memory + SplitRingLayout.usedOffset(queueSize: Int(queueSize)), base: 0)
var sink: UInt64 = 0

@inline(never)
func deviceEcho(_ d: inout GenRing) {
    let n = d.available()
    for _ in 0..<n {
        guard let head = d.popHead() else { return }
        d.pushUsed(id: head, length: 64)
    }
    d.publishUsed()
}

@inline(never)
func postFerry(_ ring: inout SplitRing, _ next: inout UInt32) {
    for _ in 0..<burst {
        let slot = UInt64(next % UInt32(queueSize))
        _ = ring.addBuffer(address: base + slot * 2048, length: 2048, deviceWritable: true, cookie: next)
        next &+= 1
    }
    ring.publish()
    if ring.kickNeeded() { sink &+= 1 }
}

@inline(never)
func completeFerry(_ ring: inout SplitRing) {
    let n = ring.dequeueUsed(cookies: cookies, lengths: lengths, max: burst)
    for i in 0..<n { sink &+= UInt64(cookies[i]) &+ UInt64(lengths[i]) }
}

@inline(never)
func postProto(_ ring: inout ProtoInOrderRing, _ next: inout UInt32) {
    for _ in 0..<burst {
        let slot = UInt64(next % UInt32(queueSize))
        _ = ring.addBuffer(address: base + slot * 2048, length: 2048, deviceWritable: true, cookie: next)
        next &+= 1
    }
    ring.publish()
    if ring.kickNeeded() { sink &+= 1 }
}

@inline(never)
func completeProto(_ ring: inout ProtoInOrderRing) {
    let n = ring.dequeueUsed(cookies: cookies, lengths: lengths, max: burst)
    for i in 0..<n { sink &+= UInt64(cookies[i]) &+ UInt64(lengths[i]) }
}

device.setNoNotify()
var next: UInt32 = 0
switch variant {
case "ferry":
    var ring = SplitRing(memory: memory, queueSize: queueSize, eventIdx: false, inOrder: true)
    for _ in 0..<bursts {
        postFerry(&ring, &next)
        deviceEcho(&device)
        completeFerry(&ring)
    }
case "proto":
    var ring = ProtoInOrderRing(memory: memory, queueSize: queueSize)
    for _ in 0..<bursts {
        postProto(&ring, &next)
        deviceEcho(&device)
        completeProto(&ring)
    }
default:
    print("usage: ring-ir ferry|proto [bursts]")
    exit(2)
}
print("\(variant): \(bursts * burst) packets, checksum \(sink)")
