#!/usr/bin/env python3
"""Attributes each latency point's slowest frames to what took the cores from their threads.

Reads what `bench/run --latency-trace DIR` wrote per load point: NAME.json (the point, its
window, which pids are the generator and the DUT), NAME.tail (frames slower than the
threshold: due and received, CLOCK_MONOTONIC ns) and NAME.trace (tracefs text with
trace_clock=mono: context switches and interrupt handlers on both cores).

For each core it finds the thread that owns it (the most time on CPU inside the window: the
generator's datapath on one, the DUT's forwarding thread on the other) and the intervals it
was away: switched out, or interrupted (timer tick, device IRQ, softirq, IPI). A frame at or
above its point's p99 is then put down to
  dut        the DUT's core was away for at least half the frame's latency within its flight,
  generator  the same for the generator's core,
  both       both were, or neither alone but the two together, or
  neither    the cores were ours for more than half of it: the time went in the datapaths
             themselves, or to the hypervisor, which no guest trace sees (the point's steal
             figures bound that).
"Its flight" is [due - lead, received], the lead being the frame's own latency or --lead-us,
whichever is longer: a frame due shortly after a stall still queues behind the frames the
stall held up, and at 50 % load the backlog of a stall takes as long as the stall to drain.

usage: tail-attribution.py DIR [--stall-us 20] [--lead-us 100] [--quiet-us 2000] [--json OUT]
A frame is also *quiet* when neither core had a stall (away for at least --stall-us) from
--quiet-us before it was due until it came back: nothing to queue behind, so its time went
in the datapaths themselves (or to steal); the pooled table gives their share.
"""
import argparse
import bisect
import glob
import json
import os
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s*(?P<rest>.*)$")
SWITCH = re.compile(r"prev_comm=(?P<pcomm>.*?) prev_pid=(?P<ppid>\d+) .*==> next_comm=(?P<ncomm>.*?) next_pid=(?P<npid>\d+)")
ENTRY_EXIT = {
    "local_timer_entry": ("timer", True), "local_timer_exit": ("timer", False),
    "irq_handler_entry": ("irq", True), "irq_handler_exit": ("irq", False),
    "softirq_entry": ("softirq", True), "softirq_exit": ("softirq", False),
    "call_function_entry": ("ipi", True), "call_function_exit": ("ipi", False),
    "call_function_single_entry": ("ipi", True), "call_function_single_exit": ("ipi", False),
    "reschedule_entry": ("ipi", True), "reschedule_exit": ("ipi", False),
}


def parse_trace(path):
    """Per cpu: [(ns, kind, detail)] with kind 'switch' (prev_pid, next_pid, next_comm) or an
    interrupt class with True at entry and False at exit."""
    per_cpu = defaultdict(list)
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("#"):
                continue
            m = LINE.match(line)
            if not m:
                continue
            cpu = int(m["cpu"])
            ns = int(round(float(m["ts"]) * 1e9))
            ev = m["event"]
            if ev == "sched_switch":
                s = SWITCH.search(m["rest"])
                if s:
                    per_cpu[cpu].append((ns, "switch", (int(s["ppid"]), int(s["npid"]), s["ncomm"])))
            elif ev in ENTRY_EXIT:
                cls, entry = ENTRY_EXIT[ev]
                per_cpu[cpu].append((ns, cls, entry))
    return per_cpu


def owner_and_away(events, start, end):
    """The pid with the most CPU time in [start, end) and the intervals it was away:
    [(from, to, cause)], cause a comm for a switch or an interrupt class."""
    # Who ran when, from the switches; before the first switch, its prev_pid ran.
    switches = [e for e in events if e[1] == "switch"]
    if not switches:
        return None, []
    runs = []  # (from, to, pid, comm)
    t0 = min(start, switches[0][0])
    current = switches[0][2][0]
    comm = "?"
    since = t0
    for ns, _, (prev, nxt, ncomm) in switches:
        runs.append((since, ns, current, comm))
        current, comm, since = nxt, ncomm, ns
    runs.append((since, max(end, since), current, comm))
    time_by_pid = defaultdict(int)
    for a, b, pid, _ in runs:
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            time_by_pid[pid] += hi - lo
    owner = max(time_by_pid, key=time_by_pid.get)
    away = [(a, b, c) for a, b, pid, c in runs if pid != owner and b > a]
    # Interrupts taken while the owner ran (nested ones count once, from the outer entry).
    depth, opened, cls_open = 0, 0, None
    run_starts = [r[0] for r in runs]

    def running_owner(t):
        i = bisect.bisect_right(run_starts, t) - 1
        return i >= 0 and runs[i][2] == owner
    for ns, kind, detail in events:
        if kind == "switch":
            continue
        if detail:
            if depth == 0:
                opened, cls_open = ns, kind
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0 and running_owner(opened):
                away.append((opened, ns, cls_open))
    away.sort()
    return owner, away


class Away:
    """One core's away intervals (sorted, disjoint), for 'how long was the owner away within
    [a, b]' and 'what took it' queries."""

    def __init__(self, away):
        self.away = away
        self.starts = [x[0] for x in away]
        self.cumulative = [0]
        for a, b, _ in away:
            self.cumulative.append(self.cumulative[-1] + (b - a))

    def within(self, a, b):
        """Away time inside [a, b] and the cause that took most of it."""
        if b <= a or not self.away:
            return 0, None
        i = max(0, bisect.bisect_right(self.starts, a) - 1)
        j = bisect.bisect_left(self.starts, b)
        total, best, cause = 0, 0, None
        for k in range(i, j):
            x0, x1, c = self.away[k]
            part = min(x1, b) - max(x0, a)
            if part > 0:
                total += part
                if part > best:
                    best, cause = part, c
        return total, cause


def read_intervals(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                a, b = line.split()
                out.append((int(a), int(b)))
    return out


def union(away, gaps):
    """The trace's away intervals with the generator's own gaps: sorted and disjoint. A merged
    interval takes the cause of its longest part that the trace named; a gap the trace did not
    see is 'unseen' (steal, mostly)."""
    merged = []  # [from, to, cause, longest named part]
    for a, b, c in sorted(away + [(a, b, "unseen") for a, b in gaps]):
        named = b - a if c != "unseen" else 0
        if merged and a <= merged[-1][1]:
            m = merged[-1]
            m[1] = max(m[1], b)
            if named > m[3]:
                m[2], m[3] = c, named
        else:
            merged.append([a, b, c, named])
    return [(a, b, c) for a, b, c, _ in merged]


def cause_name(comm):
    """kworker/1:2H-kblockd -> kworker, memfd:sealed-91 -> memfd:sealed."""
    return re.sub(r"([/-]\d.*|-\d+)$", "", comm)


def analyse(base, stall_us, lead_us, quiet_us):
    meta = json.load(open(base + ".json"))
    point = meta["point"]
    start, end = meta["windowStartNs"], meta["windowEndNs"]
    p99 = point["corrected"]["p99"]
    skipped = ("overloaded" if point.get("overloaded") else
               "tail log full" if meta["overflow"] > 0 else None)
    if skipped:
        # Its tail is a queue (or not all in the log): nothing to attribute.
        return {"name": os.path.basename(base), "dut": point["dut"], "load": point["load"],
                "rate_mpps": point["targetPps"] / 1e6, "p99_us": p99 / 1000, "skipped": skipped}
    frames = read_intervals(base + ".tail")
    gaps = read_intervals(base + ".gaps")
    per_cpu = parse_trace(base + ".trace") if os.path.exists(base + ".trace") else {}
    min_ns = stall_us * 1000
    cores = {}
    for role in ("generator", "dut"):
        cpu = meta[role + "CPU"]
        owner, away = owner_and_away(per_cpu.get(cpu, []), start, end)
        if role == "generator":
            # The generator saw its own gaps, whatever caused them; the trace names most.
            away = union(away, gaps)
        in_window = [x for x in away if x[1] > start and x[0] < end]
        causes = defaultdict(int)
        for a, b, c in in_window:
            causes[cause_name(c)] += min(b, end) - max(a, start)
        seconds = (end - start) / 1e9
        cores[role] = {
            "cpu": cpu, "owner_pid": owner, "away": Away(away),
            "stalls": Away([x for x in away if x[1] - x[0] >= min_ns]),
            "stalls_per_s": sum(1 for a, b, _ in in_window if b - a >= min_ns) / seconds,
            "away_ms_per_s": sum(min(b, end) - max(a, start) for a, b, _ in in_window) / 1e6 / seconds,
            "longest_us": max((b - a for a, b, _ in in_window), default=0) / 1000,
            "causes_ms_per_s": {k: round(v / 1e6 / seconds, 2) for k, v in sorted(causes.items(), key=lambda kv: -kv[1])[:5]},
        }
    tail = [(a, b) for a, b in frames if b - a >= p99]
    classes = defaultdict(list)
    dut_causes = defaultdict(int)
    lead = lead_us * 1000
    quiet = 0
    for a, b in tail:
        latency = b - a
        # No stall of either core within --quiet-us before the frame was due until it came back:
        # no backlog to wait behind, so its time went in the datapaths (or to steal).
        q0 = a - quiet_us * 1000
        if not cores["dut"]["stalls"].within(q0, b)[0] and not cores["generator"]["stalls"].within(q0, b)[0]:
            quiet += 1
        flight = a - max(lead, latency)
        d, d_cause = cores["dut"]["away"].within(flight, b)
        g, _ = cores["generator"]["away"].within(flight, b)
        half = latency / 2
        if d >= half and g >= half or (d < half and g < half and d + g >= half):
            cls = "both"
        elif d >= half:
            cls = "dut"
        elif g >= half:
            cls = "generator"
        else:
            cls = "neither"
        if cls in ("dut", "both") and d_cause:
            dut_causes[cause_name(d_cause)] += 1
        classes[cls].append(latency)
    out = {
        "name": os.path.basename(base), "dut": point["dut"], "load": point["load"],
        "rate_mpps": point["targetPps"] / 1e6, "p50_us": point["corrected"]["p50"] / 1000,
        "p99_us": p99 / 1000, "tail_frames": len(tail), "overflow": meta["overflow"],
        "steal_ms_per_s": {"generator": point.get("generatorStealMsPerSecond"), "dut": point.get("dutStealMsPerSecond")},
        "shares": {k: round(len(v) / max(1, len(tail)), 3) for k, v in classes.items()},
        "counts": {k: len(v) for k, v in classes.items()},
        "quiet_tail_frames": quiet,
        "neither_median_us": (sorted(classes["neither"])[len(classes["neither"]) // 2] / 1000) if classes["neither"] else None,
        "dut_causes_of_tail": dict(sorted(dut_causes.items(), key=lambda kv: -kv[1])[:4]),
        "cores": {r: {k: v for k, v in c.items() if k not in ("away", "stalls")} for r, c in cores.items()},
    }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--stall-us", type=float, default=20)
    ap.add_argument("--lead-us", type=float, default=100)
    ap.add_argument("--quiet-us", type=float, default=2000)
    ap.add_argument("--json")
    args = ap.parse_args()
    bases = sorted(p[:-5] for p in glob.glob(os.path.join(args.dir, "*.json")) if os.path.exists(p[:-5] + ".tail"))
    if not bases:
        sys.exit(f"tail-attribution: no NAME.json with NAME.tail in {args.dir}")
    steal = lambda r, k: "-" if r["steal_ms_per_s"][k] is None else f"{r['steal_ms_per_s'][k]:.0f}"
    rows = [analyse(b, args.stall_us, args.lead_us, args.quiet_us) for b in bases]
    print(f"frames at or above each point's p99, by which core was taken from its thread for half their flight "
          f"(from max(latency, {args.lead_us:g} us) before due); stalls: away >= {args.stall_us:g} us; away and causes: ms per s")
    print("| point | Mpps | p50 us | p99 us | tail frames | DUT | gen | both | neither | neither median us "
          "| steal gen/DUT | DUT-core stalls/s | DUT-core away | gen-core away | DUT-core causes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        if r.get("skipped"):
            print(f"| {r['name']} | {r['rate_mpps']:.2f} | | {r['p99_us']:.1f} | {r['skipped']}: not attributed |")
            continue
        s = r["shares"]
        pct = lambda k: f"{100 * s.get(k, 0):.0f} %"
        nm = r["neither_median_us"]
        causes = ", ".join(f"{k} {v}" for k, v in r["cores"]["dut"]["causes_ms_per_s"].items())
        print(f"| {r['name']} | {r['rate_mpps']:.2f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['tail_frames']} "
              f"| {pct('dut')} | {pct('generator')} | {pct('both')} | {pct('neither')} | {'-' if nm is None else f'{nm:.1f}'} "
              f"| {steal(r, 'generator')}/{steal(r, 'dut')} | {r['cores']['dut']['stalls_per_s']:.0f} "
              f"| {r['cores']['dut']['away_ms_per_s']:.1f} | {r['cores']['generator']['away_ms_per_s']:.1f} | {causes} |")
    summary = pooled(rows)
    print()
    print("pooled over repetitions (each load's last attempt): frames at or above their point's p99; "
          "medians of the points' p99 and of their cores' away ms per s")
    print(f"| DUT | load | points (overloaded, left out) | median p99 us | tail frames | DUT | gen | both | neither "
          f"| quiet (no stall >= {args.stall_us:g} us from {args.quiet_us:g} us before due) | DUT-core away | gen-core away |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for g in summary:
        if not g["points"]:
            print(f"| {g['dut']} | {g['load'] * 100:.0f} % | 0 ({g['skipped']}) | | | | | | | | | |")
            continue
        pct = lambda k: f"{100 * g['shares'].get(k, 0):.0f} %"
        print(f"| {g['dut']} | {g['load'] * 100:.0f} % | {g['points']} ({g['skipped']}) | {g['median_p99_us']:.1f} | {g['tail_frames']} "
              f"| {pct('dut')} | {pct('generator')} | {pct('both')} | {pct('neither')} | {100 * g['quiet_share']:.2f} % "
              f"| {g['median_dut_away_ms_per_s']:.1f} | {g['median_gen_away_ms_per_s']:.1f} |")
    if args.json:
        json.dump({"points": rows, "pooled": summary}, open(args.json, "w"), indent=1)


def median(values):
    v = sorted(values)
    n = len(v)
    return (v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2) if n else None


def pooled(rows):
    """Per DUT and load, over repetitions, each load's last attempt (as the summary does)."""
    last, skipped = {}, defaultdict(int)
    for r in rows:
        m = re.match(r"(.*)-attempt(\d+)$", r["name"])
        key, attempt = (m[1], int(m[2])) if m else (r["name"], 1)
        if key not in last or attempt > last[key][0]:
            last[key] = (attempt, r)
    groups = defaultdict(list)
    for _, r in last.values():
        if r.get("skipped"):
            skipped[(r["dut"], r["load"])] += 1
        else:
            groups[(r["dut"], r["load"])].append(r)
    out = []
    for (dut, load) in sorted(set(groups) | set(skipped)):
        rs = groups.get((dut, load), [])
        counts = defaultdict(int)
        for r in rs:
            for k, v in r["counts"].items():
                counts[k] += v
        total = sum(counts.values())
        out.append({
            "dut": dut, "load": load, "points": len(rs), "skipped": skipped[(dut, load)], "median_p99_us": median([r["p99_us"] for r in rs]),
            "tail_frames": total, "shares": {k: round(v / max(1, total), 3) for k, v in counts.items()},
            "quiet_share": round(sum(r["quiet_tail_frames"] for r in rs) / max(1, total), 4),
            "median_dut_away_ms_per_s": median([r["cores"]["dut"]["away_ms_per_s"] for r in rs]),
            "median_gen_away_ms_per_s": median([r["cores"]["generator"]["away_ms_per_s"] for r in rs]),
        })
    return out


if __name__ == "__main__":
    main()
