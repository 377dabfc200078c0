import VirtioUser

/// `macswap`: source and destination MACs change places, as testpmd's macswap mode.
enum MacSwapEngine: ForwardingEngine {
    static var receives: Bool { true }
    static var transmits: Bool { true }
    @inline(__always)
    static func process(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, count: Int, cache: inout PoolCache) {
        var i = 0
        while i < count {
            // RxQueue guarantees at least 14 bytes of frame.
            let frame = cache.data(bufs[i])
            let dst4 = frame.loadUnaligned(as: UInt32.self)
            let dst2 = frame.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
            let src4 = frame.loadUnaligned(fromByteOffset: 6, as: UInt32.self)
            let src2 = frame.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
            frame.storeBytes(of: src4, as: UInt32.self)
            frame.storeBytes(of: src2, toByteOffset: 4, as: UInt16.self)
            frame.storeBytes(of: dst4, toByteOffset: 6, as: UInt32.self)
            frame.storeBytes(of: dst2, toByteOffset: 10, as: UInt16.self)
            i &+= 1
        }
    }
}
