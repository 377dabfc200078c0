#!/usr/bin/env python3
"""Instructions per forwarded packet, from callgrind profiles of a DUT's forwarding thread.

Each DUT is profiled twice under `valgrind --tool=callgrind --separate-threads=yes`:
  busy  forwarding a loop of frames (tx_first) through dpdk-testpmd's net_vhost;
  idle  connected, polling, with no frame at all.
A polled loop also spins when the backend is late (and on this shared machine it often is),
so the busy total holds empty polls. The idle run gives the cost of one empty poll; the busy
run's empty polls (iterations - bursts with frames) are taken out at that cost:

  Ir/packet = (busy Ir - (iterations - bursts) * idle Ir/iteration) / packets

Iterations and bursts come from call counts: the forwarding loop calls the RX function every
iteration and the TX side once per burst that had frames.

ferry   `Worker.run<IOEngine>` holds the whole inlined hot path. Each instruction address (and
        the call sites it makes) is mapped to its chain of inlined frames with `addr2line -i` on
        the UNSTRIPPED binary (valgrind ran a copy stripped of debug info; code addresses are
        the same), and split into rx (RxQueue.receive), refill (RxQueue.refill), tx
        (TxQueue.transmit, Worker.transmitBurst), reclaim (TxQueue.reclaim) and loop (the rest).
testpmd dpdk-testpmd has no symbols for its static functions; the loop is the function that
        calls one callee most often (the PMD's RX burst function: iterations), the TX burst
        function is its next callee (bursts). rx and tx are their inclusive costs (virtio's TX
        frees the sent mbufs inside it: reclaim is part of tx), loop is everything else.

usage: cgprofile.py ferry   --busy PREFIX --idle PREFIX --packets N --binary UNSTRIPPED [--json OUT]
       cgprofile.py testpmd --busy PREFIX --idle PREFIX --packets N [--json OUT]
       cgprofile.py all --runs RUNS.json --binary UNSTRIPPED [--worker-source Worker.swift]
                        [--ring split|packed] [--append yes] --json OUT
         (RUNS.json: what `ferry-bench --only profile` lists; one result per DUT, labelled with
          the ring; --append adds them to the list already in OUT)
"""
import glob
import json
import re
import subprocess
import sys
from collections import defaultdict

FERRY_LOOP = r"Worker.*run.*IOEngine"
FERRY_PARTS = ["rx", "refill", "tx", "reclaim", "loop"]
TESTPMD_PARTS = ["rx", "tx", "loop"]


class Profile:
    """One thread's callgrind file: self cost per (function, address), call edges with counts
    and inclusive costs per call site."""

    def __init__(self, path):
        self.path = path
        self.self_cost = defaultdict(lambda: defaultdict(int))  # fn -> addr -> Ir
        self.calls = []  # (caller fn, call-site addr, callee fn, count, inclusive Ir)
        self.total = 0
        names = {}
        current = callee = None
        last = [0, 0]
        pending = None
        with open(path) as f:
            for raw in f:
                line = raw.rstrip("\n")
                if not line:
                    continue
                m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
                if m:
                    kind, ident, name = m.groups()
                    if name:
                        names[ident] = name
                    if kind == "fn":
                        current = names.get(ident, ident)
                    else:
                        callee = names.get(ident, ident)
                    continue
                if line.startswith("summary:"):
                    self.total = int(line.split()[1])
                    continue
                if line.startswith("calls="):
                    pending = (callee, int(line[6:].split()[0]))
                    continue
                c0 = line[0]
                if not (c0.isdigit() or c0 in "+-*"):
                    continue
                parts = line.split()
                pos = []
                for k, p in enumerate(parts[:2]):
                    if p == "*":
                        v = last[k]
                    elif p.startswith("0x"):
                        v = int(p, 16)
                    elif p[0] in "+-":
                        v = last[k] + int(p)
                    else:
                        v = int(p)
                    pos.append(v)
                last = pos
                cost = int(parts[2]) if len(parts) > 2 else 0
                if pending is not None:
                    self.calls.append((current, pos[0], pending[0], pending[1], cost))
                    pending = None
                else:
                    self.self_cost[current][pos[0]] += cost

    def functions_matching(self, regex):
        r = re.compile(regex)
        return [fn for fn in self.self_cost if fn and r.search(fn)] + \
            [c[0] for c in self.calls if c[0] and r.search(c[0]) and c[0] not in self.self_cost]


def busiest_thread(prefix):
    """The thread file of `prefix` (callgrind writes PREFIX-01, -02, ...) with the most Ir."""
    best = None
    for path in sorted(glob.glob(prefix + "-*")):
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total = int(line.split()[1])
                    if best is None or total > best[1]:
                        best = (path, total)
                    break
    if best is None:
        raise SystemExit(f"no callgrind thread files at {prefix}-*")
    return best[0]


def addr2line_chains(binary, addresses):
    if not addresses:
        return {}
    text = "\n".join(hex(a) for a in addresses) + "\n"
    out = subprocess.run(["addr2line", "-a", "-i", "-f", "-e", binary], input=text,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    chains = {}
    current = None
    i = 0
    while i < len(out):
        if out[i].startswith("0x"):
            current = int(out[i], 16)
            chains[current] = []
            i += 1
            continue
        chains[current].append((out[i], out[i + 1] if i + 1 < len(out) else ""))
        i += 2
    return chains


def ferry_part(chain):
    names = " ".join(fn for fn, _ in chain)
    if "TxQueueV7reclaim" in names:
        return "reclaim"
    if "TxQueueV8transmit" in names or "transmitBurst" in names:
        return "tx"
    if "RxQueueV6refill" in names:
        return "refill"
    if "RxQueueV7receive" in names:
        return "rx"
    return "loop"


DATAPATH = re.compile(r"^\$s10Forwarding")


def ferry_split(profile, binary):
    """Ir per part, iterations and bursts of Ferry's worker loop in one profile.

    The loop function's own instructions and call sites are classified by their inlined
    frames. A call into another Forwarding function that the optimizer kept out of line
    (Worker.transmitBurst, say) is followed: its instructions and calls are classified the
    same way, scaled to the share of its cost that this call site accounts for."""
    loops = [fn for fn in profile.self_cost if fn and re.search(FERRY_LOOP, fn)]
    if not loops:
        raise SystemExit(f"{profile.path}: no function matching {FERRY_LOOP}")
    functions = set()
    pending = [loops[0]]
    while pending:
        fn = pending.pop()
        if fn in functions:
            continue
        functions.add(fn)
        for caller, a, callee, count, cost in profile.calls:
            if caller == fn and callee and DATAPATH.search(callee):
                pending.append(callee)
    addresses = set()
    for fn in functions:
        addresses |= set(profile.self_cost.get(fn, {}))
        addresses |= {c[1] for c in profile.calls if c[0] == fn}
    chains = addr2line_chains(binary, sorted(addresses))
    inclusive = defaultdict(int)  # callee -> total inclusive cost over all its call sites
    for caller, a, callee, count, cost in profile.calls:
        inclusive[callee] += cost
    counted = defaultdict(int)
    callees = defaultdict(int)

    def split(fn, scale, depth):
        parts = defaultdict(float)
        for a, c in profile.self_cost.get(fn, {}).items():
            parts[ferry_part(chains.get(a, []))] += c * scale
        for caller, a, callee, count, cost in profile.calls:
            if caller != fn:
                continue
            part = ferry_part(chains.get(a, []))
            if callee in functions and callee != fn and depth < 4 and inclusive[callee]:
                sub = split(callee, scale * cost / inclusive[callee], depth + 1)
                for k, v in sub.items():
                    parts[k] += v
                continue
            parts[part] += cost * scale
            callees[(part, callee)] += cost * scale
            if depth < 4:
                counted[(part, callee)] += count
        return parts

    parts = split(loops[0], 1.0, 0)
    iterations = sum(n for (part, callee), n in counted.items() if part == "rx" and "dequeueUsed" in callee)
    bursts = sum(n for (part, callee), n in counted.items() if part == "tx" and "kickNeeded" in callee)
    loop_self = profile.self_cost[loops[0]]
    if iterations == 0:
        # dequeueUsed inlined: fall back to the execution count of the loop's counter line.
        iterations = line_count(loop_self, chains, "iteration &+= 1")
    if bursts == 0:
        bursts = line_count(loop_self, chains, "counters.rxPackets &+=")
    return {k: int(v) for k, v in parts.items()}, iterations, bursts, callees


def line_count(self_cost, chains, needle):
    """The most executions of an instruction on a Worker.swift line containing `needle`
    (needs --worker-source, the Worker.swift the binary was built from)."""
    try:
        lines = open(_worker_source).read().splitlines()
    except OSError:
        return 0
    wanted = tuple(f"Worker.swift:{i + 1}" for i, l in enumerate(lines) if needle in l)
    best = 0
    for a, c in self_cost.items():
        chain = chains.get(a, [])
        if chain and wanted and chain[0][1].endswith(wanted):
            best = max(best, c)
    return best


_worker_source = ""


def testpmd_loop(idle):
    """(loop function, RX function) from an idle profile, where every iteration is empty: the
    thread's dispatcher calls the loop once per iteration and the loop calls the RX burst
    function once per iteration, so both edges carry the highest call count. The loop is the
    function that is callee of one such edge and caller of the other."""
    counts = defaultdict(int)
    for caller, a, callee, count, cost in idle.calls:
        counts[(caller, callee)] += count
    top = max(counts.values())
    edges = [e for e, n in counts.items() if n >= top * 0.99]
    callees = {callee for _, callee in edges}
    for caller, callee in edges:
        if caller in callees:
            return caller, callee
    return edges[0]


def testpmd_split(profile, loop, rx_fn):
    """Ir per part, iterations and bursts of testpmd's forwarding lcore in one profile."""
    counts = defaultdict(int)
    for caller, a, callee, count, cost in profile.calls:
        counts[(caller, callee)] += count
    iterations = counts.get((loop, rx_fn), 0)
    others = sorted(((callee, n) for (caller, callee), n in counts.items()
                     if caller == loop and callee != rx_fn), key=lambda kv: -kv[1])
    tx_fn, bursts = others[0] if others else (None, 0)
    parts = defaultdict(int)
    for caller, a, callee, count, cost in profile.calls:
        if caller == loop and callee == rx_fn:
            parts["rx"] += cost
        elif caller == loop and callee == tx_fn:
            parts["tx"] += cost
    parts["loop"] = profile.total - parts["rx"] - parts["tx"]
    return dict(parts), iterations, bursts, {"loop_function": loop, "rx_function": rx_fn, "tx_function": tx_fn}


def per_packet(busy, idle, packets, names):
    """Per part: busy Ir minus the empty polls at the idle cost per iteration, per packet."""
    b_parts, b_iter, b_bursts = busy
    i_parts, i_iter, _ = idle
    empty = max(b_iter - b_bursts, 0)
    out = {}
    for k in names:
        idle_per_iter = i_parts.get(k, 0) / i_iter if i_iter else 0
        out[k] = round((b_parts.get(k, 0) - empty * idle_per_iter) / packets, 1) if packets else None
    return out, empty


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("ferry", "testpmd", "all"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    kind = args.pop(0)
    opts = {}
    while args:
        k = args.pop(0)
        opts[k.lstrip("-")] = args.pop(0)
    if kind == "all":
        with open(opts["runs"]) as f:
            runs = json.load(f)
        results = []
        for dut in ("ferry", "testpmd"):
            busy = next((r for r in runs if r["dut"] == dut and r["mode"] == "busy"), None)
            idle = next((r for r in runs if r["dut"] == dut and r["mode"] == "idle"), None)
            errors = [r["error"] for r in (busy, idle) if r and r.get("error")]
            if not busy or not idle or errors:
                results.append({"dut": dut, "error": "; ".join(errors) or "missing run"})
                continue
            o = dict(opts, busy=busy["prefix"], idle=idle["prefix"], packets=str(busy["packets"]))
            for k in ("json", "ring", "append"):
                o.pop(k, None)
            try:
                results.append(analyse(dut, o))
            except (SystemExit, Exception) as e:
                results.append({"dut": dut, "error": f"analysis failed: {e}"})
        for r in results:
            r["ring"] = opts.get("ring", "split")
        if opts.get("append") == "yes":
            try:
                with open(opts["json"]) as f:
                    results = json.load(f) + results
            except (OSError, ValueError):
                pass
        text = json.dumps(results, indent=2)
        with open(opts["json"], "w") as f:
            f.write(text + "\n")
        print(text)
        return
    result = analyse(kind, opts)
    text = json.dumps(result, indent=2)
    if "json" in opts:
        with open(opts["json"], "w") as f:
            f.write(text + "\n")
    print(text)


def analyse(kind, opts):
    global _worker_source
    packets = int(opts["packets"])
    busy = Profile(busiest_thread(opts["busy"]))
    idle = Profile(busiest_thread(opts["idle"]))
    if kind == "ferry":
        _worker_source = opts.get("worker-source", "")
        b_parts, b_iter, b_bursts, callees = ferry_split(busy, opts["binary"])
        i_parts, i_iter, _, _ = ferry_split(idle, opts["binary"])
        names = FERRY_PARTS
        extra = {"calls_ir_per_packet_raw": {f"{p}:{re.sub(r'^.s', '', c)[:60]}": round(v / packets, 1)
                                         for (p, c), v in sorted(callees.items(), key=lambda kv: -kv[1])[:6]}}
    else:
        loop, rx_fn = testpmd_loop(idle)
        b_parts, b_iter, b_bursts, extra = testpmd_split(busy, loop, rx_fn)
        i_parts, i_iter, _, _ = testpmd_split(idle, loop, rx_fn)
        names = TESTPMD_PARTS
    parts, empty = per_packet((b_parts, b_iter, b_bursts), (i_parts, i_iter, 0), packets, names)
    idle_total = sum(i_parts.values())
    result = {
        "dut": kind,
        "packets": packets,
        "busy_thread_ir": busy.total,
        "busy_loop_ir": sum(b_parts.values()),
        "iterations": b_iter,
        "bursts": b_bursts,
        "empty_polls": empty,
        "idle_iterations": i_iter,
        "ir_per_empty_poll": round(idle_total / i_iter, 1) if i_iter else None,
        "ir_per_packet_raw": round(sum(b_parts.values()) / packets, 1) if packets else None,
        "ir_per_packet": round(sum(v for v in parts.values() if v is not None), 1),
        "parts_ir_per_packet": parts,
        "packets_per_burst": round(packets / b_bursts, 1) if b_bursts else None,
    }
    result.update(extra)
    return result


if __name__ == "__main__":
    main()
