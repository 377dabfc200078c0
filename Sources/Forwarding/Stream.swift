/// A forwarding stream, as testpmd has them: frames received on one port/queue go out on
/// another port/queue.
///
/// Lives in worker-owned memory; the queues it points at belong to the same worker.
struct Stream {
    let rxPort: Int
    let rxQueueIndex: Int
    let txPort: Int
    let txQueueIndex: Int
    let rx: UnsafeMutablePointer<RxQueue>
    let tx: UnsafeMutablePointer<TxQueue>
    /// Link flags of the two ports (1 = up), written by the control thread.
    let rxLink: UnsafeMutablePointer<UInt8>
    let txLink: UnsafeMutablePointer<UInt8>
    /// The TX port's MAC and its peer's, as 6 bytes each, for mac mode and txonly.
    let txPortMAC: UnsafeMutablePointer<UInt8>
    let txPeerMAC: UnsafeMutablePointer<UInt8>
    /// The txonly frame for this stream (addresses filled in), `templateLength` bytes.
    let template: UnsafeMutablePointer<UInt8>
    let templateLength: Int
    var counters = StreamCounters()
    let published: PublishedCounters
}
