import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's own record of what ran on the generator's and the DUT's cores during a load
/// point: context switches and interrupt handlers from tracefs, stamped with the same
/// CLOCK_MONOTONIC as the generator's frames (`trace_clock` "mono").
///
/// A diagnostic (`--latency-trace`): with `TailLog` it attributes each slow frame to a
/// preemption of a core or to neither. Needs root and tracefs; `start` says why when it cannot.
/// Tracing costs a few hundred ns per event, and these cores see a few hundred events a second.
public struct KernelTrace {
    public static let root = "/sys/kernel/tracing"
    /// Switches, the timer tick, device interrupts, softirqs and IPIs: everything that takes
    /// a core from a busy-polling thread.
    static let events = [
        "sched/sched_switch", "irq_vectors/local_timer_entry", "irq_vectors/local_timer_exit",
        "irq/irq_handler_entry", "irq/irq_handler_exit", "irq/softirq_entry", "irq/softirq_exit",
        "irq_vectors/call_function_entry", "irq_vectors/call_function_exit",
        "irq_vectors/call_function_single_entry", "irq_vectors/call_function_single_exit",
        "irq_vectors/reschedule_entry", "irq_vectors/reschedule_exit",
    ]

    /// Clears the buffer and starts tracing `cpus`. Throws a message naming what failed.
    /// Returns the buffer size it replaced (KiB per CPU), for `stop` to put back.
    @discardableResult
    public static func start(cpus: [Int]) throws -> String? {
        if !FileManager.default.fileExists(atPath: root + "/trace") {
            _ = mount("nodev", root, "tracefs", 0, nil)
        }
        try write("tracing_on", "0")
        let previousBufferKb = (try? String(contentsOfFile: root + "/buffer_size_kb", encoding: .utf8))?
            .split(whereSeparator: { !$0.isNumber }).first.map(String.init)
        try write("trace_clock", "mono")
        try write("buffer_size_kb", "65536")
        try write("tracing_cpumask", String(cpus.reduce(0) { $0 | (1 << $1) }, radix: 16))
        try write("set_event", "")
        for event in events {
            // An event this kernel lacks is left out rather than failing the run.
            try? write("events/\(event)/enable", "1")
        }
        try write("trace", "")
        try write("tracing_on", "1")
        return previousBufferKb
    }

    /// Stops tracing, copies the buffer to `path`, and gives the kernel its 64 MiB per CPU back
    /// (`bufferKb`, what `start` returned).
    public static func stop(into path: String, restoringBufferKb bufferKb: String?) throws {
        try write("tracing_on", "0")
        defer {
            try? write("set_event", "")
            if let bufferKb { try? write("buffer_size_kb", bufferKb) }
        }
        try copy(root + "/trace", to: path)
    }

    /// tracefs files report a size of 0, so they are read until read(2) says the end.
    static func copy(_ source: String, to path: String) throws {
        let fd = open(source, O_RDONLY)
        guard fd >= 0 else { throw KernelTraceError("cannot read \(source): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw KernelTraceError("cannot create \(path)")
        }
        defer { try? out.close() }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            try out.write(contentsOf: buffer[0..<n])
        }
    }

    static func write(_ file: String, _ value: String) throws {
        let path = root + "/" + file
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw KernelTraceError("cannot open \(path) (tracing needs root and tracefs)")
        }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data((value + "\n").utf8)) } catch {
            throw KernelTraceError("writing \(value) to \(path): \(error)")
        }
    }
}

public struct KernelTraceError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
