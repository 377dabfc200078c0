import FerryConfig

extension PortTopology {
    /// The port that frames received on `port` are sent to, as testpmd's `--port-topology`:
    /// paired sends 0↔1, 2↔3 (an odd last port pairs with itself), chained sends each port to
    /// the next and the last to the first, loop sends each port to itself.
    func peer(of port: Int, portCount: Int) -> Int {
        switch self {
        case .paired:
            let partner = port ^ 1
            return partner < portCount ? partner : port
        case .chained:
            return (port + 1) % portCount
        case .loop:
            return port
        }
    }
}
