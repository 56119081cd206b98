"""Seconds per search step and peak memory of each DARTS estimator.

    python benchmarks/search_step.py                       # small and DARTS search size
    python benchmarks/search_step.py --sizes small --methods darts1,darts2
    python benchmarks/search_step.py --sizes small8,small --methods darts1,multistep-2,zen-warmup-2
    python benchmarks/search_step.py --sizes nb201-reduced --methods darts1,sge-10,sge-10-all
    python benchmarks/search_step.py --sizes nb201,nb201-reduced --methods darts1,gdas

One search step = the estimator's α gradient on a validation batch + its
weight update(s) + the α Adam step, one jitted function (jaxnas.search.Search);
zen-warmup-2 is the label-free warm-up step of multistep-2 (zero-cost DARTS).
Each (size, method) runs in its own process so that peak RSS is its own.
Printed: compile time (first call), median step time, ratio to darts1, XLA's
temporary memory and the process's peak RSS. Writes
benchmarks/results/search_step.json (a partial re-run updates its own rows).

For scale: the reference PyTorch DARTS (first order, batch 32, C=16, 8 cells)
takes 10.5-13 s per step on this 2-core CPU, 25.4 s at batch 64.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, time_search_step, write_results  # noqa: E402

SIZES = {
    'small8': dict(space='darts', channels=8, layers=5, batch=64, image=8),  # the digits' size
    'small': dict(space='darts', channels=8, layers=5, batch=32, image=32),
    'darts32': dict(space='darts', channels=16, layers=8, batch=32, image=32),
    'darts': dict(space='darts', channels=16, layers=8, batch=64, image=32),
    # the reduced protocol of experiments/nb201_tables.py
    'nb201-reduced': dict(space='nb201', channels=8, layers=1, batch=64, image=32),
    'nb201': dict(space='nb201', channels=16, layers=5, batch=64, image=32),
}
METHODS = {'darts1': {}, 'darts2': {}, 'darts2-fd': {}, 'multistep-2': {'multistep_n': 2},
           'multistep-5': {'multistep_n': 5},
           # zero-cost DARTS' label-free step: 2 weight steps on Gaussian inputs (16 a step)
           'zen-warmup-2': {'multistep_n': 2, 'warmup': True},
           # SGE-NAS' Q = 10: by default one perturbed run at a time on CPU; all 10 vmapped
           'sge-10': {}, 'sge-10-all': {'sge_chunk': 10},
           # DARTS first order through GDAS' supernet, whose edges run one sampled op each
           'gdas': {'relaxation': 'gdas'}}


def measure(size: str, method: str, steps: int) -> dict:
  name = ('multistep' if method.startswith(('multistep', 'zen-warmup'))
          else 'sge' if method.startswith('sge') else 'darts1' if method == 'gdas' else method)
  return time_search_step(SIZES[size], steps, method=name, **METHODS[method])


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--sizes', default='small8,small,darts32,darts')
  p.add_argument('--methods', default=','.join(m for m in METHODS if not m.startswith('sge')))
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--out', default=os.path.join(RESULTS, 'search_step.json'))
  p.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(measure(*args.child, steps=args.steps)))
    return
  rows = []
  print(f'{"size":8s} {"method":12s} {"compile s":>9s} {"step s":>8s} {"x darts1":>8s} '
        f'{"XLA temp GiB":>12s} {"peak RSS GiB":>12s}', flush=True)
  for size in args.sizes.split(','):
    base = None
    for method in args.methods.split(','):
      out = subprocess.run([sys.executable, __file__, '--child', size, method, '--steps', str(args.steps)],
                           capture_output=True, text=True)
      if out.returncode:
        print(f'{size:8s} {method:12s} failed: {out.stderr.strip().splitlines()[-1:]}', flush=True)
        continue
      r = dict(size=size, method=method, **SIZES[size], **json.loads(out.stdout.strip().splitlines()[-1]))
      base = r['step_s'] if method == 'darts1' else base
      r['ratio_to_darts1'] = r['step_s'] / base if base else None
      rows.append(r)
      ratio = f"{r['ratio_to_darts1']:.2f}" if base else '-'
      print(f"{size:8s} {method:12s} {r['compile_s']:9.1f} {r['step_s']:8.2f} {ratio:>8s} "
            f"{r['xla_temp_gib']:12.2f} {r['peak_rss_gib']:12.2f}", flush=True)
  write_results(args.out, rows, key=('size', 'method'))


if __name__ == '__main__':
  main()
