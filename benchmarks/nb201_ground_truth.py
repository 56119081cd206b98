"""Ground truth for proxy quality: sampled NAS-Bench-201 architectures trained by jaxnas.

    python benchmarks/nb201_ground_truth.py              # 60 architectures, ~10 s each on 2 cores
    python benchmarks/nb201_ground_truth.py --samples 100 --epochs 8

Each architecture (SearchSpace.sample_distinct, seed 0) is trained from
scratch with jaxnas.train on the embedded digits data set (NAS-Bench-201
recipe: SGD 0.1 Nesterov, wd 5e-4, cosine; C=8, one cell per stage, one epoch:
a short run, so that accuracies spread) and its accuracy on the whole test split recorded. Rows are appended to
benchmarks/nb201_ground_truth.json as they finish; a re-run skips
architectures already there (no lost work). benchmarks/proxies.py reads it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'nb201_ground_truth.json')


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--samples', type=int, default=60)
  p.add_argument('--epochs', type=int, default=1)
  p.add_argument('--channels', type=int, default=8)
  p.add_argument('--layers', type=int, default=1)
  p.add_argument('--seed', type=int, default=0, help='sampling seed')
  p.add_argument('--out', default=OUT)
  args = p.parse_args()
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas import data
  from jaxnas.train import TrainConfig, train
  from jaxnas.spaces import get_space

  setup = dict(space='nb201', dataset='digits', epochs=args.epochs, channels=args.channels,
               layers=args.layers, seed=0)
  doc = {'setup': setup, 'machine': platform.platform(), 'cpus': os.cpu_count(), 'rows': []}
  if os.path.exists(args.out):
    with open(args.out) as f:
      old = json.load(f)
    if old.get('setup') == setup:
      doc = old
  done = {r['genotype'] for r in doc['rows']}
  ds = data.load('digits')
  genotypes = get_space('nb201').sample_distinct(args.samples, args.seed)
  for i, g in enumerate(genotypes):
    if str(g) in done:
      continue
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
      r = train(TrainConfig(genotype=str(g), workdir=tmp, **setup), progress=False, dataset=ds)
    row = {'genotype': str(g), 'test_acc': r.report['test_acc'], 'test_loss': r.report['test_loss'],
           'params': r.report['params'],
           'final_train_loss': r.history[-1]['train_loss'], 'seconds': time.perf_counter() - t0}
    doc['rows'].append(row)
    doc['date'] = time.strftime('%Y-%m-%d %H:%M')
    with open(args.out, 'w') as f:
      json.dump(doc, f, indent=1)
    print(f'{i + 1:3d}/{len(genotypes)} {row["test_acc"]:.4f} {row["seconds"]:5.1f}s {g}', flush=True)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  sys.exit(main())
