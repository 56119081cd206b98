"""Peak memory and seconds per search step of the DARTS search supernet under each relaxation.

    python benchmarks/relax_memory.py                       # DARTS search size, darts1
    python benchmarks/relax_memory.py --sizes small --relaxations softmax,pc

One first-order search step (jaxnas.search.Search) per (size, relaxation),
each in its own process so that peak RSS is its own. PC-DARTS sends 1/4 of
the channels through the mixed ops, so its memory and time should be lower
than softmax's at the same batch size. jaxnas rematerialises each mixed op
in the backward pass by default, which already removes most of the op
intermediates PC-DARTS was designed to shrink; --no-remat keeps them (as
PyTorch DARTS does) and shows PC-DARTS' saving where memory is op-bound. Printed: compile time, median step
time, XLA's temporary memory, the process's peak RSS. Writes
benchmarks/results/relax_memory.json (a partial re-run updates its rows).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, time_search_step, write_results  # noqa: E402
from search_step import SIZES  # noqa: E402

RELAXATIONS = ('softmax', 'pc', 'fair', 'beta')


def measure(size: str, relaxation: str, steps: int, remat: bool = True) -> dict:
  return time_search_step(SIZES[size], steps, method='darts1', relaxation=relaxation, remat=remat)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--sizes', default='darts')
  p.add_argument('--relaxations', default=','.join(RELAXATIONS))
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--out', default=os.path.join(RESULTS, 'relax_memory.json'))
  p.add_argument('--no-remat', action='store_true',
                 help='keep every op\'s intermediates for the backward pass (as PyTorch DARTS does)')
  p.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(measure(*args.child, steps=args.steps, remat=not args.no_remat)))
    return
  rows = []
  print(f'remat: {not args.no_remat}')
  print(f'{"size":8s} {"relaxation":10s} {"compile s":>9s} {"step s":>8s} {"XLA temp GiB":>12s} '
        f'{"peak RSS GiB":>12s}', flush=True)
  for size in args.sizes.split(','):
    for relaxation in args.relaxations.split(','):
      out = subprocess.run([sys.executable, __file__, '--child', size, relaxation, '--steps',
                            str(args.steps)] + ['--no-remat'] * args.no_remat,
                           capture_output=True, text=True)
      if out.returncode:
        print(f'{size:8s} {relaxation:10s} failed: {out.stderr.strip().splitlines()[-1:]}', flush=True)
        continue
      r = dict(size=size, relaxation=relaxation, remat=not args.no_remat, **SIZES[size],
               **json.loads(out.stdout.strip().splitlines()[-1]))
      rows.append(r)
      print(f"{size:8s} {relaxation:10s} {r['compile_s']:9.1f} {r['step_s']:8.2f} "
            f"{r['xla_temp_gib']:12.2f} {r['peak_rss_gib']:12.2f}", flush=True)
  write_results(args.out, rows, key=('size', 'relaxation', 'remat'))


if __name__ == '__main__':
  main()
