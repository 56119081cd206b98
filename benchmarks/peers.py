"""jaxnas' search step beside the PyTorch reference's, alternating, on this machine.

    python benchmarks/peers.py --torch-python PEER_VENV/bin/python     # NAS-Bench-201
    python benchmarks/peers.py --torch-python ... --rounds 3 --steps 5

The reference runs in an interpreter of its own that has ``torch`` and ``xautodl``
(D-X-Y/AutoDL-Projects' package; neither is a dependency of jaxnas)::

    python -m venv peer-venv && peer-venv/bin/pip install torch numpy xautodl

Each round runs jaxnas' first-order DARTS step at NAS-Bench-201's search size (C=16,
N=5, batch 64, 32x32: ``benchmarks/common.py`` ``time_search_step``), then the
reference's (``benchmarks/peers/torch_nb201_step.py``: AutoDL's TinyNetworkDarts, a
weight step then an α step), each in a fresh process, so that both see the same
machine: on 2 cores any other busy process slows a PyTorch step by an order of
magnitude (thousands of small ops, each a barrier of its threads). Run it with nothing
else running. Prints each round and the ratios of the medians (reference / jaxnas:
above 1, jaxnas is faster); writes benchmarks/results/peers.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import RESULTS, write_results  # noqa: E402

SIZE = dict(space='nb201', channels=16, layers=5, batch=64, image=32)


def jaxnas_step(steps: int) -> dict:
  """In this process (a child of :func:`main`): jaxnas' darts1 step at :data:`SIZE`."""
  import resource

  from common import time_search_step
  r = time_search_step(SIZE, steps, method='darts1')
  return dict(side='jaxnas', step_s=r['step_s'], compile_s=r['compile_s'],
              peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)


def run_child(argv: list[str], timeout: float) -> dict:
  out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
  if out.returncode:
    raise SystemExit(f'{" ".join(argv[:2])} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--torch-python', help='an interpreter with torch and xautodl')
  ap.add_argument('--rounds', type=int, default=2)
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--timeout', type=float, default=1800, help='seconds for one side of a round')
  ap.add_argument('--child', choices=['jaxnas'], help=argparse.SUPPRESS)
  ap.add_argument('--out', default=os.path.join(RESULTS, 'peers.json'))
  a = ap.parse_args(argv)
  if a.child:
    print(json.dumps(jaxnas_step(a.steps)))
    return
  if not a.torch_python:
    ap.error('--torch-python is required: an interpreter with torch and xautodl '
             '(python -m venv peer-venv && peer-venv/bin/pip install torch numpy xautodl)')
  sides = {
      'jaxnas': [sys.executable, os.path.abspath(__file__), '--child', 'jaxnas',
                 '--steps', str(a.steps)],
      'reference': [a.torch_python, os.path.join(HERE, 'peers', 'torch_nb201_step.py'),
                    '--batch', str(SIZE['batch']), '--channels', str(SIZE['channels']),
                    '--layers', str(SIZE['layers']), '--steps', str(a.steps)],
  }
  rows = []
  print(f'{"round":>5s} {"side":10s} {"step s":>8s} {"peak RSS GiB":>12s}')
  for r in range(a.rounds):
    for side, cmd in sides.items():
      row = dict(run_child(cmd, a.timeout), round=r, role=side, **SIZE, method='darts1',
                 steps=a.steps)
      rows.append(row)
      print(f'{r:5d} {side:10s} {row["step_s"]:8.2f} {row["peak_rss_gib"]:12.2f}', flush=True)
  med = {s: statistics.median(x['step_s'] for x in rows if x['role'] == s) for s in sides}
  rss = {s: max(x['peak_rss_gib'] for x in rows if x['role'] == s) for s in sides}
  summary = dict(role='ratio', speed=med['reference'] / med['jaxnas'],
                 memory=rss['jaxnas'] / rss['reference'], **SIZE, method='darts1')
  print(f'NAS-Bench-201 first order: jaxnas {med["jaxnas"]:.2f} s, reference {med["reference"]:.2f} s '
        f'a step: {summary["speed"]:.2f}x the reference\'s speed, '
        f'{summary["memory"]:.2f}x its peak memory')
  write_results(a.out, rows + [summary])


if __name__ == '__main__':
  main()
