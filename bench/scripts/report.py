#!/usr/bin/env python3
"""Merges ferry-bench's results, the allocation check and the callgrind profile into one JSON
document, prints the markdown table, draws the PNG and (optionally) records the results in
bench/README.md. The last line printed is `ratio ferry/testpmd: X.XX (split 64B)`.

usage: report.py --bench FILE [--alloc FILE] [--profile FILE] --json OUT --png OUT
                 [--readme README.md] [--command "bench/run ..."] [--rev GIT_REVISION]
"""
import json
import sys


def load(path):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def f2(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def us(ns):
    return "n/a" if ns is None else f"{ns / 1000:.1f}"


def throughput_section(bench):
    if not bench.get("throughput"):
        return []
    s = bench["settings"]
    out = [f"### Throughput: Mpps, median of {s['pairs']} A/B pairs of {s['seconds']} s after {s['warmup']} s warm-up",
           "",
           f"Backend dpdk-testpmd net_vhost (io) on core {s['backend_cpu']}; DUT on core {s['dut_cpu']}, io, one burst of 32 "
           "frames seeded (Ferry `tx_first=1`, testpmd `--tx-first`).",
           "",
           "| configuration | Ferry | testpmd | ratio ferry/testpmd (median) | min | max | DUT preempted/s | pairs: ferry/testpmd Mpps |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in bench.get("throughput", []):
        if row["status"] != "ok":
            out.append(f"| {row['config']} | {row['status']} | | | | | | {row.get('reason') or ''} |")
            continue
        pairs = ", ".join(f"{p['ferry_mpps']:.2f}/{p['testpmd_mpps']:.2f}" for p in row["pairs"])
        mism = row.get("negotiation_mismatches") or []
        name = row["config"] + (f" **⚠ {'; '.join(mism)}**" if mism else "")
        out.append(f"| {name} | {f2(row.get('ferry_median_mpps'))} | {f2(row.get('testpmd_median_mpps'))} | "
                   f"**{f2(row.get('median_ratio'))}** | {f2(row.get('min_ratio'))} | {f2(row.get('max_ratio'))} | "
                   f"{f2(row.get('median_dut_preemptions_per_second'), 0)} | {pairs} |")
    return out


def combos_section(bench):
    rows = bench.get("combos", [])
    if not rows:
        return []
    s = bench["settings"]
    out = [f"### Feature combinations: Mpps, 64 B, one queue, median of {s.get('combo_pairs', 3)} A/B pairs of "
           f"{s.get('combo_seconds', 5)} s after {s.get('combo_warmup', 2)} s warm-up",
           "",
           "Same backend, cores and method as the throughput A/B; both DUTs are asked for the same "
           "packed_vq, mrg_rxbuf and in_order (testpmd devargs, Ferry `port.0.*`). Each run's negotiated "
           "features are read from the backend's log (and Ferry's ring line): a row marked **⚠** did not "
           "run as asked and its rates belong to another combination.",
           "",
           "| combination | negotiated | Ferry | testpmd | ratio ferry/testpmd (median) | min | max | DUT preempted/s | pairs: ferry/testpmd Mpps |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        name = f"`{row.get('requested', row['config'])}`"
        mism = row.get("negotiation_mismatches") or []
        negotiated = "**⚠ " + "; ".join(mism) + "**" if mism else "as asked"
        if row["status"] != "ok":
            out.append(f"| {name} | {negotiated} | {row['status']} | | | | | | {row.get('reason') or ''} |")
            continue
        pairs = ", ".join(f"{p['ferry_mpps']:.2f}/{p['testpmd_mpps']:.2f}" for p in row["pairs"])
        out.append(f"| {name} | {negotiated} | {f2(row.get('ferry_median_mpps'))} | {f2(row.get('testpmd_median_mpps'))} | "
                   f"**{f2(row.get('median_ratio'))}** | {f2(row.get('min_ratio'))} | {f2(row.get('max_ratio'))} | "
                   f"{f2(row.get('median_dut_preemptions_per_second'), 0)} | {pairs} |")
    return out


def latency_section(bench):
    results = bench.get("latency", [])
    if not results:
        return []
    s = bench["settings"]
    reps = s.get("latency_reps") or 1
    out = [f"### Latency: round trip through the DUT, µs ({s['latency_seconds']} s per load, 64 B, split ring, "
           f"{reps} repetition{'s' if reps != 1 else ''} per DUT)",
           "",
           "Generator (a vhost-user device built on Ferry's code) on the backend core; coordinated omission "
           "corrected (latency from each frame's intended send time). Loads are fractions of the DUT's maximum "
           "with this generator: the highest paced rate it keeps up with. "
           "Each repetition is a fresh DUT process that measures its own maximum first; the DUTs alternate.",
           ""]
    if s.get("latency_fixed_max_pps"):
        out += [f"**Diagnostic run (`--latency-fixed-max`)**: no search; both DUTs' loads are fractions of a common "
                f"{s['latency_fixed_max_pps'] / 1e6:.2f} Mpps, so each load is the same absolute rate for both.", ""]
    summary = bench.get("latency_summary") or []
    if summary:
        out += ["| DUT | load | **median p99** | p99 of each repetition | median p50 | overloaded repetitions |",
                "|---|---:|---:|---|---:|---:|"]
        for row in summary:
            each = ", ".join(us(x) for x in row["p99s"])
            out.append(f"| {row['dut']} | {int(row['load'] * 100)} % | **{us(row.get('median_p99'))}** | {each} | "
                       f"{us(row.get('median_p50'))} | {row['overloaded_reps']} |")
        comparisons = bench.get("latency_comparison") or []
        if comparisons:
            out += ["", "| load | Ferry / testpmd, median p99 | 90 % bootstrap interval | Ferry no worse in |",
                    "|---:|---:|---:|---:|"]
            for c in comparisons:
                out.append(f"| {int(c['load'] * 100)} % | **{f2(c['ratio'])}** | {f2(c['low'])}–{f2(c['high'])} | "
                           f"{c['ferry_not_worse'] * 100:.0f} % of resamples |")
            out += ["", "The interval resamples each DUT's repetitions with replacement (4000 times, seeded) and "
                    "takes the 5th and 95th percentiles of the ratio of medians: an interval below 1 means Ferry's "
                    "p99 is lower beyond what the spread of repetitions explains; one containing 1 means the run "
                    "cannot tell them apart."]
        by_rate = bench.get("latency_by_rate") or []
        if by_rate:
            out += ["", "**The same traffic**: every load point that kept up (not overloaded), binned by the rate "
                    "offered, whatever fraction of its own maximum it was. Median per bin, µs.", "",
                    "| offered Mpps | Ferry points | Ferry p99 | Ferry p50 | testpmd points | testpmd p99 | testpmd p50 |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            bins = sorted({(r["low_mpps"], r["high_mpps"]) for r in by_rate})
            for lo, hi in bins:
                cells = []
                for dut in ("ferry", "testpmd"):
                    row = next((r for r in by_rate if r["dut"] == dut and r["low_mpps"] == lo), None)
                    cells += [str(row["points"]), us(row["median_p99"]), us(row["median_p50"])] if row else ["0", "", ""]
                out.append(f"| {lo:.1f}–{hi:.1f} | " + " | ".join(cells) + " |")
        out += ["",
                "*Overloaded*: at least 2 % of the frames due were not accepted (RX ring full) or not returned, so "
                "the DUT did not keep up at that moment (its maximum had been measured in a faster spell of the machine) and the tail "
                "is queueing; such a point is run again (at most twice) after a new search of the maximum, and "
                "the summary takes the last attempt. Every run follows. Its *max* row is the search: the highest "
                "paced rate the DUT kept up with (under 2 % of frames missed, ✓) by bisection from the rate it "
                "returned while overloaded, as RFC 2544 defines throughput.",
                ""]
    out += ["| run | DUT | load | Mpps target/got | p50 | p90 | p99 | p99.9 | max | lost | RX ring full | reordered | "
            "preempted/s gen/DUT | steal ms/s gen/DUT |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rep = r.get("rep") or 1
        if r.get("error") and not r.get("points"):
            out.append(f"| {rep} | {r['dut']} | failed: {r['error']} | | | | | | | | | | | |")
            continue
        for n, m in enumerate(r.get("searches") or []):
            trials = " ".join(f"{t[0] / 1e6:.2f}{'✓' if t[1] < 0.02 else '✗'}" for t in m.get("steps", []))
            bound = "" if m.get("overloaded") else " (never overloaded)"
            label = "max" if n == 0 else "max again"
            out.append(f"| {rep} | {r['dut']} | {label} | **{f2(m['max_pps'] / 1e6, 3)}** paced (trials {trials}); "
                       f"{f2(m['overload_pps'] / 1e6, 3)} back overloaded{bound}, burst fill {f2(m['burst_pps'] / 1e6, 3)} "
                       f"| | | | | | | | | | |")
        for p in r.get("points", []):
            c = p["corrected"]
            note = f" ({p['error']})" if p.get("error") else " (overloaded)" if p.get("overloaded") else ""
            if (p.get("attempt") or 1) > 1:
                note += f" attempt {p['attempt']}"
            out.append(f"| {rep} | {r['dut']} | {int(p['load'] * 100)} %{note} | "
                       f"{f2(p['target_pps'] / 1e6, 3)}/{f2(p['received_pps'] / 1e6, 3)} | "
                       f"{us(c['p50'])} | {us(c['p90'])} | {us(c['p99'])} | {us(c['p999'])} | {us(c['max'])} | {p['lost']} | "
                       f"{p['rx_ring_full']} | {p['reordered']} | {f2(p.get('generator_preemptions_per_second'), 0)}/"
                       f"{f2(p.get('dut_preemptions_per_second'), 0)} | {f2(p.get('generator_steal_ms_per_second'), 0)}/"
                       f"{f2(p.get('dut_steal_ms_per_second'), 0)} |")
    return out


def median_runs(bench):
    """Per DUT, the repetition whose p99 at 50 % load is the median one (the lower middle of an
    even count): the run the CDF plot shows."""
    chosen = {}
    for dut in ("ferry", "testpmd"):
        runs = []
        for r in bench.get("latency", []):
            if r["dut"] != dut:
                continue
            half = [p for p in r.get("points", []) if p["load"] == 0.5 and p.get("cdf")]
            if half:
                runs.append((half[-1]["corrected"]["p99"], r))
        if runs:
            runs.sort(key=lambda x: x[0])
            chosen[dut] = runs[(len(runs) - 1) // 2][1]
    return chosen


def startup_section(bench):
    results = bench.get("startup", [])
    if not results:
        return []
    out = ["### Start-up: process start to the first forwarded frame, ms (median)",
           "",
           "| DUT | first forwarded | vhost-user connect | rings ready | runs |",
           "|---|---:|---:|---:|---|"]
    for r in results:
        runs = ", ".join(f2(x.get("first_forwarded_ms"), 1) if x.get("first_forwarded_ms") is not None
                         else "failed" for x in r["runs"])
        out.append(f"| {r['dut']} | **{f2(r.get('median_ms'), 1)}** | {f2(r.get('median_connect_ms'), 1)} | "
                   f"{f2(r.get('median_ready_ms'), 1)} | {runs} |")
    return out


def alloc_section(alloc):
    if alloc is None:
        return []
    if "worker_mallocs" not in alloc:
        return ["### Allocation check", "", f"Not run: {alloc.get('error', 'unknown')}"]
    verdict = "PASS" if alloc.get("ok") else "FAIL"
    return ["### Allocation check: mallocs in Ferry's forwarding loop after warm-up",
            "",
            f"**{verdict}**: {alloc['worker_mallocs']} mallocs on the worker thread for "
            f"{alloc['packets_forwarded']} frames forwarded in {alloc['seconds']:.1f} s "
            f"({alloc['worker_mallocs_per_packet']:.3g} per packet); Ferry's other threads made "
            f"{alloc['other_thread_mallocs']} (its control thread sleeps until it has work)."
            + (f" {alloc['error']}" if alloc.get("error") else "")]


def profile_section(profile):
    if not profile:
        return []
    out = ["### Instructions per forwarded packet (callgrind, empty polls taken out)",
           "",
           "| DUT, ring | Ir/packet | rx | refill | tx | reclaim | loop | Ir per empty poll | frames/burst | raw Ir/packet |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in profile:
        name = f"{p['dut']}, {p.get('ring', 'split')}"
        if "error" in p:
            out.append(f"| {name} | failed: {p['error']} | | | | | | | | |")
            continue
        parts = p["parts_ir_per_packet"]
        g = lambda k: f2(parts.get(k), 1) if k in parts else "(in tx)" if k == "reclaim" else "(in rx)" if k == "refill" else ""
        out.append(f"| {name} | **{f2(p['ir_per_packet'], 1)}** | {g('rx')} | {g('refill')} | {g('tx')} | {g('reclaim')} | "
                   f"{g('loop')} | {f2(p.get('ir_per_empty_poll'), 1)} | {f2(p.get('packets_per_burst'), 1)} | "
                   f"{f2(p.get('ir_per_packet_raw'), 1)} |")
    return out


def headline(bench):
    # split 64B: the configurations' row, else the combinations' row with the same features.
    for row in bench.get("throughput", []) + bench.get("combos", []):
        if row.get("token") == "split-64" and row.get("median_ratio") is not None:
            return row["median_ratio"]
    return None


def markdown(doc, command):
    bench = doc["bench"]
    rev = f" (Ferry at {doc['revision']})" if doc.get("revision") else ""
    if "host" in bench:
        h = bench["host"]
        lines = [f"Results of {bench['date']}{rev}: `{command}` on {h['cpus']} vCPUs, load average "
                 f"{h['load_average_start']:.1f} at the start and {h['load_average_end']:.1f} at the end "
                 f"(the machine is shared: other engineers' builds run alongside), {h['testpmd']}.", ""]
    else:
        lines = [f"Results{rev}: `{command}`.", ""]
    for section in (throughput_section(bench), combos_section(bench), latency_section(bench), startup_section(bench),
                    alloc_section(doc.get("alloc")), profile_section(doc.get("profile"))):
        if section:
            lines += section + [""]
    return "\n".join(lines).rstrip() + "\n"


def ab_bars(ax, rows, labels, colors, title):
    """Grouped bars: per row, each DUT's median Mpps with its min-max and every run as a dot."""
    width = 0.38
    for k, dut in enumerate(["ferry", "testpmd"]):
        xs, heights, lo, hi = [], [], [], []
        for i, r in enumerate(rows):
            runs = [x["mpps"] for x in r.get("runs", []) if x["dut"] == dut and x.get("mpps") is not None]
            if not runs:
                continue
            med = r.get(f"{dut}_median_mpps") or 0
            xs.append(i + (k - 0.5) * width)
            heights.append(med)
            lo.append(med - min(runs))
            hi.append(max(runs) - med)
            ax.scatter([i + (k - 0.5) * width] * len(runs), runs, s=10, color="black", zorder=3)
        ax.bar(xs, heights, width, yerr=[lo, hi], capsize=3, color=colors[dut], alpha=0.85,
               label=f"{'Ferry' if dut == 'ferry' else 'dpdk-testpmd virtio-user'} (median, min-max)")
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            ax.text(i, 0.02, r["status"], ha="center", va="bottom", rotation=90, color="gray",
                    transform=ax.get_xaxis_transform())
        elif r.get("median_ratio") is not None:
            flag = " ⚠" if r.get("negotiation_mismatches") else ""
            ax.text(i, 1.0, f"x{r['median_ratio']:.2f}{flag}", ha="center", va="bottom", fontsize=9,
                    color="darkorange" if flag else "black", transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=0 if any("\n" in x for x in labels) else 15, fontsize=8 if len(labels) > 6 else 10)
    ax.set_ylabel("Mpps (DUT forwarding rate, steady state)")
    ax.set_title(title, pad=18)
    # Headroom above the tallest run, so the legend never covers a bar.
    top = max([x["mpps"] for r in rows for x in r.get("runs", []) if x.get("mpps") is not None] or [1])
    ax.set_ylim(0, top * 1.22)
    ax.legend(loc="upper right", fontsize=8, ncol=2 if len(labels) > 6 else 1)
    ax.grid(axis="y", alpha=0.3)


def combo_label(row):
    """"packed_vq=1,mrg_rxbuf=0,in_order=1" -> "packed\nmrg off\nin_order on"."""
    flags = dict(kv.split("=") for kv in row.get("requested", "").split(",") if "=" in kv)
    if not flags:
        return row["config"]
    return (f"{'packed' if flags.get('packed_vq') == '1' else 'split'}\n"
            f"mrg_rxbuf {'on' if flags.get('mrg_rxbuf') == '1' else 'off'}\n"
            f"in_order {'on' if flags.get('in_order') == '1' else 'off'}")


def plot(doc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = doc["bench"]
    if "date" not in bench:
        return
    rows = bench.get("throughput", [])
    combos = bench.get("combos", [])
    has_latency = any(p.get("cdf") for r in bench.get("latency", []) for p in r.get("points", []))
    # Panels for the parts this run measured: throughput and latency side by side on top, the
    # combinations across the width below. A full run has all three.
    top = (["throughput"] if rows else []) + (["latency"] if has_latency else [])
    if not top and not combos:
        return
    ncols = max(1, len(top))
    nrows = (1 if top else 0) + (1 if combos else 0)
    fig = plt.figure(figsize=(14 if ncols > 1 or combos else 8, 5.5 * nrows))
    grid = fig.add_gridspec(nrows, ncols)
    axes = {name: fig.add_subplot(grid[0, i]) for i, name in enumerate(top)}
    if combos:
        axes["combos"] = fig.add_subplot(grid[nrows - 1, :])
    colors = {"ferry": "#1f77b4", "testpmd": "#d62728"}

    if rows:
        ab_bars(axes["throughput"], rows, [r["config"] for r in rows], colors,
                "Throughput: io loop through dpdk-testpmd net_vhost")
    if combos:
        ab_bars(axes["combos"], combos, [combo_label(r) for r in combos], colors,
                "Feature combinations, 64 B, one queue (⚠: negotiated features differ from the request)")
    if not has_latency:
        fig.suptitle(f"Ferry vs dpdk-testpmd virtio-user, {bench['date']} "
                     f"(shared 2-vCPU VM, load {bench['host']['load_average_start']:.1f})", fontsize=11)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return
    ax2 = axes["latency"]

    styles = {0.1: ":", 0.5: "-", 0.9: "--"}
    drew = False
    for r in median_runs(bench).values():
        # A load's last attempt, as the summary takes it.
        for p in {p["load"]: p for p in r.get("points", [])}.values():
            cdf = [(v / 1000.0, q / 100.0) for v, q in p.get("cdf", []) if 0 < q < 100 and v > 0]
            if not cdf:
                continue
            ax2.plot([c[0] for c in cdf], [c[1] for c in cdf], styles.get(p["load"], "-"), color=colors[r["dut"]],
                     label=f"{r['dut']} {int(p['load'] * 100)} % ({p['received_pps'] / 1e6:.2f} Mpps)")
            drew = True
    if drew:
        ax2.set_xscale("log")
        ax2.set_yscale("logit")
        ax2.set_ylim(0.01, 0.9999)
        ax2.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
        ax2.set_yticklabels(["1 %", "10 %", "50 %", "90 %", "99 %", "99.9 %", "99.99 %"])
        ax2.legend(fontsize=8, loc="lower right")
    ax2.set_xlabel("round-trip latency, µs (log; corrected for coordinated omission)")
    ax2.set_ylabel("fraction of frames at or below")
    ax2.set_title("Latency CDF, split 64 B: each DUT's median run at 50 % load")
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(f"Ferry vs dpdk-testpmd virtio-user, {bench['date']} "
                 f"(shared 2-vCPU VM, load {bench['host']['load_average_start']:.1f})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def update_readme(path, text):
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    with open(path) as f:
        readme = f.read()
    if start not in readme or end not in readme:
        return False
    before = readme.split(start)[0]
    after = readme.split(end, 1)[1]
    with open(path, "w") as f:
        f.write(before + start + "\n" + text + end + after)
    return True


def main():
    args = sys.argv[1:]
    opts = {}
    while args:
        k = args.pop(0).lstrip("-")
        opts[k] = args.pop(0) if args else ""
    bench = load(opts.get("bench"))
    if bench is None:
        print("report.py: no ferry-bench results", file=sys.stderr)
        sys.exit(1)
    doc = {"bench": bench, "alloc": load(opts.get("alloc")), "profile": load(opts.get("profile")),
           "revision": opts.get("rev")}
    with open(opts["json"], "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    command = opts.get("command", "bench/run")
    text = markdown(doc, command)
    if "png" in opts:
        try:
            plot(doc, opts["png"])
        except Exception as e:  # the table still prints without a plot
            print(f"report.py: plot failed: {e}", file=sys.stderr)
    if opts.get("readme"):
        if update_readme(opts["readme"], text):
            print(f"(results recorded in {opts['readme']})", file=sys.stderr)
    print(text)
    p99 = {row["dut"]: row.get("median_p99") for row in bench.get("latency_summary") or [] if row["load"] == 0.5}
    if p99:
        reps = bench["settings"].get("latency_reps") or 1
        line = f"p99 at 50 % load, µs (median of {reps}): ferry {us(p99.get('ferry'))}, testpmd {us(p99.get('testpmd'))}"
        half = [c for c in bench.get("latency_comparison") or [] if c["load"] == 0.5]
        if half:
            c = half[0]
            line += (f"; ratio {f2(c['ratio'])}, 90 % interval {f2(c['low'])}–{f2(c['high'])}, "
                     f"Ferry no worse in {c['ferry_not_worse'] * 100:.0f} % of resamples")
        print(line)
    ratio = headline(bench)
    print(f"ratio ferry/testpmd: {f2(ratio)} (split 64B)")


if __name__ == "__main__":
    main()
