#!/usr/bin/env python3
"""A/B two or more Ferry builds (and optionally testpmd's virtio-user) against dpdk-testpmd's
net_vhost, round-robin, for a datapath change too small for `bench/run`'s 5 pairs.

Each round runs every DUT once, in the order given, against a fresh backend (io, core 0);
the DUT forwards on core 1 with tx_first, 64 B io, and Ferry's control thread is moved to
core 0, as `bench/run` does. Rates are the DUT's own per-second `Rx-pps`, first period
dropped. It prints each round, then per DUT: the median of its run medians, the median ratio
to the last DUT over rounds (with min and max), and the per-second samples split at
`--mode-split` Mpps, because on these machines the rates are bimodal (see bench/README.md)
and a difference within each mode says more than the mixture.

usage: ab-builds.py [--rounds N] [--seconds S] [--packed] [--mode-split MPPS]
                    NAME=FERRY_BINARY [NAME=FERRY_BINARY ...] [testpmd]
Development tool: not part of `bench/run`'s recorded results.
"""
import argparse, os, re, signal, statistics, subprocess, sys, tempfile, time

def parse():
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--seconds', type=int, default=8)
    p.add_argument('--packed', action='store_true')
    p.add_argument('--mode-split', type=float, default=9.5)
    p.add_argument('duts', nargs='+')
    return p.parse_args()

def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False

def stop(p, grace=10):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

def samples(path):
    pps = [int(x) / 1e6 for x in re.findall(r'Rx-pps:\s+(\d+)', open(path).read())]
    return [x for x in pps if x > 0][1:]

class Bench:
    def __init__(self, args, work):
        self.a, self.work = args, work
        self.sock = os.path.join(work, 'v.sock')

    def backend(self, tag):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        p = subprocess.Popen(['dpdk-testpmd', '--lcores', '0@0,1@0', '--main-lcore', '0', '--in-memory', '--no-pci',
                              '--file-prefix', f'abb-{os.getpid()}-{tag}', '--vdev',
                              f'net_vhost0,iface={self.sock},queues=1', '--', '-a', '--forward-mode=io',
                              '--nb-cores=1', '--total-num-mbufs=32768'],
                             stdin=subprocess.PIPE, stdout=open(os.path.join(self.work, 'backend.log'), 'w'),
                             stderr=subprocess.STDOUT)
        if not wait_for(lambda: os.path.exists(self.sock), 10):
            stop(p)
            sys.exit(f'backend did not create {self.sock}: see {self.work}/backend.log')
        return p

    def ferry(self, binary, log):
        conf = os.path.join(self.work, 'dut.conf')
        with open(conf, 'w') as f:
            f.write(f'port.0.path = {self.sock}\nport.0.packed_vq = {int(self.a.packed)}\n'
                    'port.0.mrg_rxbuf = 1\nport.0.in_order = 1\nfwd = io\nburst = 32\ntx_first = 1\n'
                    'txpkts = 64\ncores = 1\nstats_period = 1\nmax_pkt_len = 1518\n'
                    f'duration = {self.a.seconds}\n')
        p = subprocess.Popen([binary, 'run', conf], stdout=open(log, 'w'), stderr=subprocess.STDOUT)
        wait_for(lambda: 'worker 0 on core' in open(log).read(), 10)
        subprocess.run(['taskset', '-p', '-c', '0', str(p.pid)], stdout=subprocess.DEVNULL)
        p.wait()
        return samples(log)

    def testpmd(self, tag, log):
        args = ['dpdk-testpmd', '-l', '0,1', '--main-lcore', '0', '--no-pci', f'--file-prefix=abd-{os.getpid()}-{tag}',
                '-m', '512', '--single-file-segments', '--vdev',
                f'net_virtio_user0,path={self.sock},queues=1,packed_vq={int(self.a.packed)},mrg_rxbuf=1,in_order=1',
                '--', '--nb-cores=1', '--forward-mode=io', '-a', '--burst=32', '--rxq=1', '--txq=1',
                '--txpkts=64', '--tx-first', '--stats-period', '1']
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=open(log, 'w'), stderr=subprocess.STDOUT)
        time.sleep(self.a.seconds + 1.5)
        stop(p)
        return samples(log)

def main():
    a = parse()
    duts = [(d, None) if d == 'testpmd' else tuple(d.split('=', 1)) for d in a.duts]
    work = tempfile.mkdtemp(prefix='ferry-ab-')
    b = Bench(a, work)
    runs = {name: [] for name, _ in duts}
    per_second = {name: [] for name, _ in duts}
    for r in range(a.rounds):
        row = []
        for name, binary in duts:
            be = b.backend(f'{r}-{name}')
            log = os.path.join(work, f'{name}-{r}.log')
            xs = b.testpmd(f'{r}', log) if binary is None else b.ferry(binary, log)
            stop(be)
            m = statistics.median(xs) if xs else 0.0
            runs[name].append(m)
            per_second[name] += xs
            row.append(f'{name} {m:.2f} [' + ' '.join(f'{x:.1f}' for x in xs) + ']')
        print(' | '.join(row), flush=True)
    base = duts[-1][0]
    for name, _ in duts:
        ratios = [x / y for x, y in zip(runs[name], runs[base]) if y > 0]
        xs = per_second[name]
        hi = [x for x in xs if x >= a.mode_split]
        lo = [x for x in xs if x < a.mode_split]
        med = lambda v: f'{statistics.median(v):.2f}' if v else '-'
        print(f'{name:10s} runs {med(runs[name])} Mpps, ratio to {base}: median {med(ratios)} '
              f'min {min(ratios):.2f} max {max(ratios):.2f} | per second: >= {a.mode_split} n={len(hi)} '
              f'median {med(hi)}, below n={len(lo)} median {med(lo)}')
    print(f'logs: {work}')

if __name__ == '__main__':
    main()
