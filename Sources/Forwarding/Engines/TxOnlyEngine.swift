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
        if stream.pointee.templateSegments > 1 {
            return produceChained(template: template, length: length, segments: stream.pointee.templateSegments,
                                  bufs: bufs, lengths: lengths, max: max, cache: &cache)
        }
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

    /// `txpkts` with several segments: each frame is a chain of that many buffers, segment k
    /// holding the template's next `txpkts[k]` bytes at the start of its data room.
    @inline(never)
    static func produceChained(template: UnsafeRawPointer, length: Int, segments: Int,
                               bufs: UnsafeMutablePointer<UInt32>, lengths: UnsafeMutablePointer<UInt32>,
                               max: Int, cache: inout PoolCache) -> Int {
        let headroom = cache.headroomSize
        var n = 0
        frames: while n < max {
            guard let head = cache.get() else { break }
            var tail = head
            var offset = 0
            for k in 0..<segments {
                let b: UInt32
                if k == 0 {
                    b = head
                } else {
                    guard let got = cache.get() else {
                        cache.freeChain(head)
                        break frames
                    }
                    b = got
                    cache.setNext(tail, b)
                    tail = b
                }
                let segmentLength = UDPTemplate.segmentLength(template, length: length, segment: k)
                cache.data(b).copyMemory(from: template + offset, byteCount: segmentLength)
                cache.setSegment(b, offset: headroom, length: segmentLength)
                offset += segmentLength
            }
            bufs[n] = head
            lengths[n] = UInt32(length)
            n &+= 1
        }
        return n
    }
}
