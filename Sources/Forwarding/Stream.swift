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
    /// How many `txpkts` segments a txonly frame has; with more than one, the template came
    /// from `UDPTemplate.storage` and its segment table follows the frame.
    var templateSegments = 1
    var counters = StreamCounters()
    /// Whether the worker saw both links up last time round: a stream whose links come up
    /// (at start, and after every reconnect) first sends its `tx_first` bursts, so a loopback
    /// has frames again after a backend restart took those in flight with it.
    var wasUp = false
    let published: PublishedCounters
}
