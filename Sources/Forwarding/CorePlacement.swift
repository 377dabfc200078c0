import CFerry
import CNuma
import VirtioUser

/// Chooses the cores workers run on.
///
/// By default each worker gets its own core on the port's NUMA node, as testpmd's forwarding
/// lcores. The node's first core is left to the control thread (testpmd's main lcore) when the
/// node has more than one. `cores=` overrides the choice. With more workers than cores the
/// workers share cores round-robin, and a log line says so.
enum CorePlacement {
    /// The CPUs this process may run on (its affinity mask), in order.
    static func allowedCPUs() -> [Int] {
        var allowed = [Int32](repeating: 0, count: 1024)
        let n = Int(ferry_allowed_cpus(&allowed, Int32(allowed.count)))
        return Array(allowed.prefix(n)).map(Int.init)
    }

    /// The CPUs of `node` this process may run on, in order.
    static func cpus(onNode node: Int) -> [Int] {
        let allowedSet = allowedCPUs()
        guard numa_available() >= 0, let mask = numa_allocate_cpumask() else { return allowedSet }
        defer { numa_free_cpumask(mask) }
        guard numa_node_to_cpus(Int32(node), mask) == 0 else { return allowedSet }
        let onNode = allowedSet.filter { numa_bitmask_isbitset(mask, UInt32($0)) != 0 }
        return onNode.isEmpty ? allowedSet : onNode
    }

    /// The node a port's memory and backend live on. vhost-user gives no hint, so it is the
    /// node Ferry's control thread runs on, where the shared memory was first touched.
    static func portNode() -> Int {
        guard numa_available() >= 0 else { return 0 }
        let cpu = ferry_current_cpu()
        guard cpu >= 0 else { return 0 }
        return max(0, Int(numa_node_of_cpu(cpu)))
    }

    /// One core per worker.
    static func assign(workers: Int, requested: [Int]?, node: Int) throws -> [Int] {
        let available: [Int]
        if let requested, !requested.isEmpty {
            let allowed = allowedCPUs()
            if let bad = requested.first(where: { !allowed.contains($0) }) {
                throw RuntimeError.config("cores: CPU \(bad) is not available to Ferry (allowed: \(allowed.map(String.init).joined(separator: ",")))")
            }
            available = requested
        } else {
            let nodeCPUs = cpus(onNode: node)
            available = nodeCPUs.count > 1 ? Array(nodeCPUs.dropFirst()) : nodeCPUs
        }
        guard !available.isEmpty else { return Array(repeating: 0, count: workers) }
        if workers > available.count {
            FerryLog.info("\(workers) workers on \(available.count) core(s) \(available): workers share cores round-robin")
        }
        return (0..<workers).map { available[$0 % available.count] }
    }
}
