"""OpenMP's wait policy: a Linear forward+backward loop (SmolLM2-135M's MLP shape) timed in two fresh processes,
OMP_WAIT_POLICY=PASSIVE (idle threads sleep; what `lens-steer` sets) against the default (threads spin a while
before sleeping), and the ratio.

    python benchmarks/bench_omp_wait.py [--seconds 20] [--threads 2] [--json out.json]

The policy is read when torch loads OpenMP, so each leg is its own process. It changes no number, only how idle
threads wait; the gain shows when other work shares the cores (measured 1.5-3.4x on 2 busy cores), and on an idle
machine the two should be close. Each leg runs `--seconds` of iterations after three warm-up ones; the legs
alternate (PASSIVE, default, PASSIVE, default) so a change of load hits both."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

LEG = """
import sys, time, torch
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[1]))
seconds = float(sys.argv[2])
lin = torch.nn.Linear(576, 1536, bias=False)
x = torch.randn(8, 64, 576, requires_grad=True)
def step():
    lin.zero_grad(set_to_none=True)
    x.grad = None
    lin(x).sum().backward()
for _ in range(3):
    step()
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    step()
    n += 1
print((time.perf_counter() - start) / n * 1e3, n)
"""


def leg(policy: str | None, threads: int, seconds: float) -> tuple[float, int]:
    """Milliseconds per iteration and iterations run, in a fresh process with OMP_WAIT_POLICY=`policy` (None:
    unset, OpenMP's default)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", LEG, str(threads), str(seconds)], env=env, capture_output=True, text=True, check=True
    )
    ms, n = out.stdout.split()
    return float(ms), int(n)


def main() -> int:
    """Run both legs twice, alternating, and print each and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of iterations per leg (4 legs; default 20)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: every core)")
    ap.add_argument("--json", default=None, help="write the timings and the ratio to this file")
    args = ap.parse_args()
    runs: dict[str, list[float]] = {"PASSIVE": [], "default": []}
    for _ in range(2):
        for label, policy in (("PASSIVE", "PASSIVE"), ("default", None)):
            ms, n = leg(policy, args.threads, args.seconds)
            runs[label].append(ms)
            print(f"{label:8s} {ms:8.2f} ms per forward+backward ({n} iterations)", flush=True)
    passive, default = statistics.mean(runs["PASSIVE"]), statistics.mean(runs["default"])
    print(f"default / PASSIVE time: {default / passive:.2f}x ({args.threads} threads, load {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"threads": args.threads, "ms": runs, "default_over_passive": default / passive}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
