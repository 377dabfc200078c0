import VirtioUser

/// `mac`: the destination becomes the TX port's peer (`eth_peer.N`) and the source the TX
/// port's own MAC, as testpmd's mac mode.
enum MacEngine: ForwardingEngine {
    static var receives: Bool { true }
    static var transmits: Bool { true }
    @inline(__always)
    static func process(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, count: Int, cache: inout PoolCache) {
        let peer = stream.pointee.txPeerMAC
        let own = stream.pointee.txPortMAC
        var i = 0
        while i < count {
            // RxQueue guarantees at least 14 bytes of frame.
            let frame = cache.data(bufs[i])
            frame.copyMemory(from: peer, byteCount: 6)
            (frame + 6).copyMemory(from: own, byteCount: 6)
            i &+= 1
        }
    }
}
