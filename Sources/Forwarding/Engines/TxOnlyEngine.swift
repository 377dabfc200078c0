import VirtioUser

/// `txonly`: UDP/IPv4 frames of `txpkts` bytes are generated and sent, as testpmd's txonly
/// mode. Also what `tx_first` sends before any mode starts.
enum TxOnlyEngine: ForwardingEngine {
    static var receives: Bool { false }
    static var transmits: Bool { true }
    @inline(__always)
    static func process(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, count: Int, cache: inout PoolCache) {}

    /// Fills up to `max` buffers with the stream's template; returns how many it could get.
    @inline(__always)
    static func produce(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, max: Int, cache: inout PoolCache) -> Int {
        let template = UnsafeRawPointer(stream.pointee.template)
        let length = stream.pointee.templateLength
        var n = 0
        while n < max {
            guard let buf = cache.get() else { break }
            cache.data(buf).copyMemory(from: template, byteCount: length)
            bufs[n] = buf
            lengths[n] = UInt32(length)
            n &+= 1
        }
        return n
    }
}
