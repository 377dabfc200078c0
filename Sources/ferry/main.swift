import FerryConfig
import Forwarding
import VirtioUser
#if canImport(Glibc)
import Glibc
#endif

/// `ferry run FILE [key=value ...]`: forward packets between virtio-user ports.
///
/// Exit status: 0 after a clean stop, 1 when start-up fails (a missing backend names its
/// path), 2 for a bad command line or configuration (`file:line: message`).

let usage = """
usage: ferry run FILE [key=value ...]
       ferry keys

Forwards packets between virtio-user ports as FILE describes. key=value pairs after FILE
override the file. `ferry keys` lists every configuration key.

"""

func fail(_ message: String, status: Int32) -> Never {
    _ = (message + "\n").withCString { fputs($0, stderr) }
    exit(status)
}

FerryLog.markStart()
var args = Array(CommandLine.arguments.dropFirst())
guard let command = args.first else { fail(usage, status: 2) }
args.removeFirst()

switch command {
case "run":
    guard let file = args.first else { fail("ferry run: missing configuration FILE\n" + usage, status: 2) }
    let config: FerryConfiguration
    do {
        config = try ConfigLoader.load(file: file, overrides: Array(args.dropFirst()))
    } catch let error as ConfigError {
        fail("\(error)", status: 2)
    } catch {
        fail("\(file): \(error)", status: 2)
    }
    let runtime = FerryRuntime(config: config)
    do {
        _ = try runtime.run()
    } catch {
        fail("ferry: \(error)", status: 1)
    }
    exit(0)
case "keys":
    for entry in ConfigKeys.reference {
        print("\(entry.key) (default \(entry.defaultValue)): \(entry.meaning)")
    }
case "-h", "--help", "help":
    print(usage, terminator: "")
default:
    fail("ferry: unknown command '\(command)'\n" + usage, status: 2)
}
