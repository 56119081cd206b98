"""jaxnas' search step beside the PyTorch references', alternating, on this machine.

    python benchmarks/peers.py --torch-python PEER_VENV/bin/python     # NAS-Bench-201
    python benchmarks/peers.py --torch-python ... --spaces nb201,darts --pt-darts PT_DARTS
    python benchmarks/peers.py --torch-python ... --relaxation gdas    # GDAS, NAS-Bench-201

The references run in an interpreter of their own that has ``torch`` and ``xautodl``
(D-X-Y/AutoDL-Projects' package; neither is a dependency of jaxnas; xautodl's own
requirements pin a numpy that does not build on Python 3.11, hence ``--no-deps``)::

    python -m venv peer-venv && peer-venv/bin/pip install torch numpy
    peer-venv/bin/pip install --no-deps xautodl

and, for the DARTS space, a checkout of khanrc/pt.darts (not a package) as ``--pt-darts``.

Each round runs, per space, jaxnas' first-order DARTS step (``benchmarks/common.py``
``time_search_step``) at the reference's size, then the reference's: NAS-Bench-201
(C=16, N=5, batch 64, 32x32) against AutoDL's TinyNetworkDarts
(``benchmarks/peers/torch_nb201_step.py``: a weight step then an α step); the DARTS
space (C=16, 8 cells, batch 32) against pt.darts (``benchmarks/peers/torch_darts_step.py``:
an α step then a weight step). ``--relaxation gdas`` times GDAS instead (NAS-Bench-201
only): jaxnas' supernet whose edges run one sampled op each against AutoDL's
TinyNetworkGDAS. Each runs in a fresh process, so that both see the same
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

SIZES = {'nb201': dict(space='nb201', channels=16, layers=5, batch=64, image=32),
         'darts': dict(space='darts', channels=16, layers=8, batch=32, image=32)}


def jaxnas_step(space: str, steps: int, relaxation: str) -> dict:
  """In this process (a child of :func:`main`): jaxnas' darts1 step at ``SIZES[space]``."""
  from common import time_search_step
  r = time_search_step(SIZES[space], steps, method='darts1', relaxation=relaxation)
  return dict(side='jaxnas', step_s=r['step_s'], compile_s=r['compile_s'],
              peak_rss_gib=r['peak_rss_gib'])


def run_child(argv: list[str], timeout: float) -> dict:
  out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
  if out.returncode:
    raise SystemExit(f'{" ".join(argv[:2])} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--torch-python', help='an interpreter with torch and xautodl')
  ap.add_argument('--spaces', default='nb201', help='comma-separated: nb201, darts')
  ap.add_argument('--pt-darts', help='a checkout of khanrc/pt.darts (for --spaces darts)')
  ap.add_argument('--relaxation', choices=('softmax', 'gdas'), default='softmax',
                  help='gdas: GDAS against AutoDL\'s TinyNetworkGDAS (NAS-Bench-201 only)')
  ap.add_argument('--rounds', type=int, default=2)
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--timeout', type=float, default=1800, help='seconds for one side of a round')
  ap.add_argument('--child', choices=sorted(SIZES), help=argparse.SUPPRESS)
  ap.add_argument('--out', default=os.path.join(RESULTS, 'peers.json'))
  a = ap.parse_args(argv)
  if a.child:
    print(json.dumps(jaxnas_step(a.child, a.steps, a.relaxation)))
    return
  spaces = a.spaces.split(',')
  if set(spaces) - set(SIZES):
    ap.error(f'unknown space(s) {",".join(sorted(set(spaces) - set(SIZES)))}: choose from '
             f'{", ".join(SIZES)}')
  if a.relaxation == 'gdas' and spaces != ['nb201']:
    ap.error('--relaxation gdas compares NAS-Bench-201 only (--spaces nb201)')
  if not a.torch_python:
    ap.error('--torch-python is required: an interpreter with torch and xautodl (see --help)')
  if 'darts' in spaces and not (a.pt_darts and os.path.isdir(os.path.join(a.pt_darts, 'models'))):
    ap.error('--spaces darts needs --pt-darts: a checkout of khanrc/pt.darts')
  rows, summaries = [], []
  print(f'{"round":>5s} {"space":6s} {"side":10s} {"step s":>8s} {"peak RSS GiB":>12s}')
  for space in spaces:
    size = SIZES[space]
    reference = os.path.join(HERE, 'peers', f'torch_{space}_step.py')
    sides = {
        'jaxnas': [sys.executable, os.path.abspath(__file__), '--child', space, '--steps',
                   str(a.steps), '--relaxation', a.relaxation],
        'reference': [a.torch_python, reference, '--batch', str(size['batch']), '--channels',
                      str(size['channels']), '--layers', str(size['layers']), '--steps',
                      str(a.steps)] + (['--src', a.pt_darts] if space == 'darts' else [])
                     + (['--relaxation', a.relaxation] if space == 'nb201' else []),
    }
    mine = []
    for r in range(a.rounds):
      for side, cmd in sides.items():
        row = dict(run_child(cmd, a.timeout), round=r, role=side, **size, method='darts1',
                   relaxation=a.relaxation, steps=a.steps)
        mine.append(row)
        print(f'{r:5d} {space:6s} {side:10s} {row["step_s"]:8.2f} {row["peak_rss_gib"]:12.2f}',
              flush=True)
    med = {s: statistics.median(x['step_s'] for x in mine if x['role'] == s) for s in sides}
    rss = {s: max(x['peak_rss_gib'] for x in mine if x['role'] == s) for s in sides}
    summaries.append(dict(role='ratio', speed=med['reference'] / med['jaxnas'],
                          memory=rss['jaxnas'] / rss['reference'], **size, method='darts1',
                          relaxation=a.relaxation))
    rows += mine
  for sm in summaries:
    print(f'{sm["space"]} first order ({sm["relaxation"]}): {sm["speed"]:.2f}x the reference\'s speed, '
          f'{sm["memory"]:.2f}x its peak memory')
  # the rows of other spaces and relaxations stay
  write_results(a.out, rows + summaries, key=('space', 'relaxation', 'role', 'round'))


if __name__ == '__main__':
  main()
