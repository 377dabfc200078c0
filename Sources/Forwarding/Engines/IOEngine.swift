import VirtioUser

/// `io`: frames go out untouched, as testpmd's io mode.
enum IOEngine: ForwardingEngine {
    static var receives: Bool { true }
    static var transmits: Bool { true }
    @inline(__always)
    static func process(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, count: Int, cache: inout PoolCache) {}
}
