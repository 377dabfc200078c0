#!/usr/bin/env bash
# Instructions per packet of one split ring's driver side, Ferry's SplitRing against the
# ProtoInOrderRing prototype (Sources/ring-ir), counted by callgrind. Needs the bench package
# built in release (bench/run does it): bench/scripts/ring-ir.sh [bursts]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=$HERE/.build-bench/release/ring-ir
BURSTS=${1:-50000}
WORK=$(mktemp -d /tmp/ring-ir.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# valgrind 3.19 cannot read Swift's debug info: run a stripped copy.
objcopy --strip-debug "$BIN" "$WORK/ring-ir"
for v in ferry proto; do
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$v.cg" "$WORK/ring-ir" "$v" "$BURSTS" >/dev/null 2>&1
    python3 - "$WORK/$v.cg" "$v" "$BURSTS" <<'PY'
import sys
path, variant, bursts = sys.argv[1], sys.argv[2], int(sys.argv[3])
import re
from collections import defaultdict
names, incl, self_ = {}, defaultdict(int), defaultdict(int)
cur = callee = None; pending = False
for line in open(path):
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip())
    if m:
        k, i, n = m.groups()
        if n: names[i] = n
        if k == "fn": cur = names.get(i, i)
        else: callee = names.get(i, i)
        continue
    if line.startswith("calls="): pending = True; continue
    if line[:1].isdigit() or line[:1] in "+-*":
        parts = line.split()
        cost = int(parts[-1]) if len(parts) >= 2 else 0
        if pending: incl[callee] += cost; pending = False
        else: self_[cur] += cost
packets = bursts * 32
def find(tag):
    return sum(v for f, v in incl.items() if tag in f)
post = find("post" + variant.capitalize())
complete = find("complete" + variant.capitalize())
echo = find("deviceEcho")
print(f"{variant:6s} post {post / packets:6.1f}  complete {complete / packets:6.1f}  "
      f"driver total {(post + complete) / packets:6.1f} Ir/packet   (device echo {echo / packets:.1f})")
PY
done
