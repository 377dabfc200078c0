// ferry-kernel-lab: Ferry's side of the kernel lab, run inside the QEMU guest by
// Tests/kernel-lab/guest/tests.sh. Each subcommand is one check; it prints what it saw on
// lines starting "ferry-lab:" and exits 0 when the check holds, 1 when it does not.
import Vhost
#if canImport(Glibc)
import Glibc
#endif

setvbuf(stdout, nil, _IOLBF, 0)

func log(_ line: String) { print("ferry-lab: \(line)") }

func parseMAC(_ text: String) throws -> [UInt8] {
    let parts = text.split(separator: ":")
    guard parts.count == 6 else { throw LabError.usage("bad MAC \(text)") }
    return try parts.map {
        guard let b = UInt8($0, radix: 16) else { throw LabError.usage("bad MAC \(text)") }
        return b
    }
}

func int(_ args: [String], _ i: Int) throws -> Int {
    guard i < args.count, let v = Int(args[i]), v >= 0 else { throw LabError.usage("argument \(i) must be a number") }
    return v
}

let usage = """
    ferry-kernel-lab detect <path> <vhost-user|vhost-kernel|vhost-vdpa>
    ferry-kernel-lab kernel-traffic <iface> <pairs> <frames-per-queue> <frames-expected-from-tap>
    ferry-kernel-lab kernel-default-name
    ferry-kernel-lab vdpa-loopback </dev/vhost-vdpa-N> <device-mac> <frames>
    ferry-kernel-lab vdpa-shadow-cvq </dev/vhost-vdpa-N> <device-mac> <new-mac>
    """

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "detect":
        guard args.count == 3 else { throw LabError.usage(usage) }
        let kind = try VhostBackendKind.detect(path: args[1])
        log("\(args[1]) is \(kind)")
        guard kind.description == args[2] else { throw LabError.failed("expected \(args[2])") }
    case "kernel-traffic":
        guard args.count == 5 else { throw LabError.usage(usage) }
        try KernelChecks.traffic(iface: args[1], pairs: max(1, try int(args, 2)), count: try int(args, 3),
                                 expect: try int(args, 4), log: log)
    case "kernel-default-name":
        try KernelChecks.defaultName(log: log)
    case "vdpa-loopback":
        guard args.count == 4 else { throw LabError.usage(usage) }
        try VdpaChecks.loopback(path: args[1], mac: try parseMAC(args[2]), count: try int(args, 3), log: log)
    case "vdpa-shadow-cvq":
        guard args.count == 4 else { throw LabError.usage(usage) }
        try ShadowControlQueueChecks.run(path: args[1], mac: try parseMAC(args[2]), newMAC: try parseMAC(args[3]), log: log)
    default:
        throw LabError.usage(usage)
    }
    log("OK")
    exit(0)
} catch {
    log("FAILED: \(error)")
    exit(1)
}
