import VirtioUser

/// `rxonly`: frames are counted and freed, as testpmd's rxonly mode.
enum RxOnlyEngine: ForwardingEngine {
    static var receives: Bool { true }
    static var transmits: Bool { false }
    @inline(__always)
    static func process(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, count: Int, cache: inout PoolCache) {}
}
