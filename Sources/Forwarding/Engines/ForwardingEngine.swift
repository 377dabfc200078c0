import VirtioUser

/// One forwarding mode. The worker loop is generic over it and specialized per mode, so the
/// mode's per-packet work is inlined into the burst loop with no dynamic dispatch
/// (swift-hot-path.md: an existential per packet costs 2–3×).
protocol ForwardingEngine {
    /// Whether the mode receives (false: txonly generates instead).
    static var receives: Bool { get }
    /// Whether the mode transmits (false: rxonly frees what it received).
    static var transmits: Bool { get }
    /// Rewrites the burst in place before it is sent.
    static func process(_ stream: UnsafeMutablePointer<Stream>, bufs: UnsafeMutablePointer<UInt32>,
                        lengths: UnsafeMutablePointer<UInt32>, count: Int, cache: inout PoolCache)
}
