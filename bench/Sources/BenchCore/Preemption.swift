import Foundation

/// How often the kernel took the CPU away from a pinned thread: the sum of
/// `nonvoluntary_ctxt_switches` over a process's threads pinned to one core, from
/// /proc/PID/task/*/status. A busy-polling thread never yields, so each one is a preemption:
/// the direct measure of how much other engineers' work shared the core during a run.
public enum Preemption {
    public static func count(pid: Int32, cpu: Int) -> UInt64? {
        let dir = "/proc/\(pid)/task"
        guard let tids = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return nil }
        var total: UInt64 = 0
        var found = false
        for tid in tids {
            guard let status = BenchFiles.read("\(dir)/\(tid)/status") else { continue }
            var pinned = false
            var switches: UInt64 = 0
            for line in status.split(separator: "\n") {
                if line.hasPrefix("Cpus_allowed_list:") {
                    pinned = line.split(separator: "\t").last.map(String.init) == "\(cpu)"
                } else if line.hasPrefix("nonvoluntary_ctxt_switches:") {
                    switches = UInt64(line.split(separator: "\t").last ?? "") ?? 0
                }
            }
            if pinned {
                total += switches
                found = true
            }
        }
        return found ? total : nil
    }

    /// Preemptions per second between two samples.
    public static func rate(_ a: (UInt64, UInt64)?, _ b: (UInt64, UInt64)?) -> Double? {
        guard let a, let b, b.1 > a.1, b.0 >= a.0 else { return nil }
        return Double(b.0 - a.0) / (Double(b.1 - a.1) / 1e9)
    }
}

/// Steal time: how long the hypervisor ran something else on the vCPU behind a core, from the
/// `steal` column of /proc/stat. Invisible to the preemption count (the thread never stopped
/// running as far as the guest knows), and on a shared VM the larger cause of latency spikes.
public enum Steal {
    /// Cumulative steal of `cpu`, ms (USER_HZ is 100 on Linux: 10 ms per tick).
    public static func ms(cpu: Int) -> UInt64? {
        guard let stat = BenchFiles.read("/proc/stat") else { return nil }
        return parse(stat: stat, cpu: cpu)
    }

    static func parse(stat: String, cpu: Int) -> UInt64? {
        let prefix = "cpu\(cpu) "
        for line in stat.split(separator: "\n") where line.hasPrefix(prefix) {
            // cpuN user nice system idle iowait irq softirq steal ...
            let fields = line.split(separator: " ")
            guard fields.count > 8, let ticks = UInt64(fields[8]) else { return nil }
            return ticks * 10
        }
        return nil
    }
}
