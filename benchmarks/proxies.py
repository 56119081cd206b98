"""Zero-cost proxies: quality (Kendall τ against trained accuracy) and seconds per architecture.

    python benchmarks/proxies.py                     # both tables (~40 min on 2 cores)
    python benchmarks/proxies.py --part quality
    python benchmarks/proxies.py --part speed --spaces nb201
    python benchmarks/proxies.py --part free

Quality: every proxy scores the NAS-Bench-201 architectures of
benchmarks/nb201_ground_truth.json (made by benchmarks/nb201_ground_truth.py:
trained from scratch by jaxnas on the embedded digits) at the same size (C=8,
one cell per stage, 8x8 inputs, one batch of 64 training images), and
Kendall's τ-b is taken between the score (negated where smaller is better:
the NTK condition number) and the test accuracy. Proxies exact through the
one-hot supernet are scored there, vmapped (jaxnas.zc); the others through
the discrete networks.

Speed: seconds per architecture of each proxy on a discrete network, compile
excluded (median of 3 calls) and the compile time, on NAS-Bench-201's
network (C=16, 5 cells per stage) and a DARTS network (C=16, 8 cells; the
search size), 32x32 inputs, batch 32 of random images; plus architectures
per second through the vmapped NAS-Bench-201 supernet.
FreeDARTS (``--part free``): wall seconds of ``jaxnas.free`` per saliency on
each space's search supernet (C=16; DARTS 8 cells, NAS-Bench-201 5 cells per
stage), batch 64, of the embedded digits (8x8, what ``jaxnas free`` reads by
default) and of random 32x32 images (CIFAR's size): compile included (a
process without the persistent cache) and excluded (the first run of the
compiled programs).
Writes benchmarks/results/proxies.json (a partial re-run updates its rows).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, write_results  # noqa: E402

KEY = ('part', 'space', 'proxy', 'via', 'data')
GROUND_TRUTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nb201_ground_truth.json')


def kendall_tau(a, b) -> float:
  """Kendall's τ-b (ties counted as neither concordant nor discordant)."""
  from scipy.stats import kendalltau
  return float(kendalltau(a, b).statistic)


def quality(proxy_names, out: str) -> list[dict]:
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas import data, proxies
  from jaxnas.spaces import get_space
  from jaxnas.zc import score_genotypes
  with open(GROUND_TRUTH) as f:
    gt = json.load(f)
  setup = gt['setup']
  sp = get_space('nb201')
  genotypes = [sp.load_genotype(r['genotype']) for r in gt['rows']]
  acc = np.array([r['test_acc'] for r in gt['rows']])
  ds = data.load('digits')
  rows = []
  print(f'{len(genotypes)} architectures, accuracy {acc.min():.3f}..{acc.max():.3f}')
  print(f'{"proxy":10s} {"via":8s} {"tau":>7s} {"seconds":>8s}', flush=True)
  for name in proxy_names:
    scores, via, seconds, _ = score_genotypes('nb201', genotypes, name, ds, setup['channels'],
                                              setup['layers'], batch_size=64)
    # a non-finite score (a disconnected cell: log 0) ranks last, not out of the table
    signed = proxies.sign(name) * np.asarray(scores, np.float64)
    signed = np.where(np.isnan(signed), -np.inf, signed)
    tau = kendall_tau(signed, acc)
    rows.append(dict(part='quality', proxy=name, via=via, tau=tau, n=len(acc),
                     nonfinite=int((~np.isfinite(signed)).sum()), seconds=seconds))
    print(f'{name:10s} {via:8s} {tau:7.3f} {seconds:8.1f}', flush=True)
    write_results(out, rows, KEY)  # row by row: an interrupted run keeps what it measured
  return rows


SPEED_SIZES = {'nb201': dict(channels=16, layers=5), 'darts': dict(channels=16, layers=8)}


def speed(spaces, proxy_names, out: str, batch: int = 32) -> list[dict]:
  import jax
  import jax.numpy as jnp
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas import proxies
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, batch))
  key = jax.random.key(0)
  rows = []
  print(f'{"space":6s} {"proxy":10s} {"compile s":>9s} {"s/arch":>8s}', flush=True)
  for space in spaces:
    sp = get_space(space)
    g = sp.genotypes['DARTS_V2' if space == 'darts' else 'NB201_BEST']
    size = SPEED_SIZES[space]
    net = sp.network(g, size['channels'], size['layers'], 10,
                     **({'auxiliary': False} if space == 'darts' else {}))
    v = init_variables(net, key, x[:1])
    for name in proxy_names:
      fn = proxies.jitted(name, proxies.network_apply(net))
      t0 = time.perf_counter()
      compiled = fn.lower(v, (x, y), key).compile()
      t_compile = time.perf_counter() - t0
      times = []
      for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(v, (x, y), key))
        times.append(time.perf_counter() - t0)
      rows.append(dict(part='speed', space=space, proxy=name, batch=batch, **size,
                       compile_s=t_compile, seconds_per_arch=float(np.median(times))))
      print(f'{space:6s} {name:10s} {t_compile:9.1f} {np.median(times):8.3f}', flush=True)
      write_results(out, rows, KEY)  # row by row: some rows take minutes
  return rows


def supernet_rate(proxy_names, samples: int = 64) -> list[dict]:
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas import data
  from jaxnas.spaces import get_space
  from jaxnas.zc import SUPERNET_PROXIES, score_genotypes
  ds = data.load('digits')
  genotypes = get_space('nb201').sample_distinct(samples, 1)
  rows = []
  for name in [p for p in proxy_names if p in SUPERNET_PROXIES]:
    for via in ('supernet', 'network'):
      n = samples if via == 'supernet' else 8
      _, _, seconds, rate = score_genotypes('nb201', genotypes[:n], name, ds, 8, 1, 64, via)
      rows.append(dict(part='nb201_rate', proxy=name, via=via, archs=n, seconds=seconds,
                       archs_per_second_compiled=rate, archs_per_second_wall=n / seconds))
      print(f'nb201 C=8 digits {name:10s} {via:8s} {n:3d} archs: {seconds:6.1f} s in all, '
            f'{n / seconds:6.2f} archs/s with compiles, {rate:6.1f} archs/s compiled', flush=True)
  return rows


def free_seconds(spaces, out: str, batch: int = 64) -> list[dict]:
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas import data
  from jaxnas.free import SALIENCIES, FreeConfig, free
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, 10, batch)
  inputs = {'digits': data.load('digits'),  # what `jaxnas free` reads by default (8x8)
            'random32': data.from_arrays(x, y, x[:8], y[:8], num_classes=10)}
  rows = []
  print(f'{"space":6s} {"saliency":9s} {"data":9s} {"s (compile incl.)":>17s} {"s (compiled)":>12s}',
        flush=True)
  for space in spaces:
    for name in SALIENCIES:
      for data_name, ds in inputs.items():
        r = free(FreeConfig(space=space, saliency=name, batch_size=batch), ds)
        rows.append(dict(part='free', space=space, proxy=name, via='supernet', data=data_name,
                         batch=batch, image=ds.image_shape[0], seconds=r.seconds,
                         seconds_compiled=r.seconds_compiled))
        print(f'{space:6s} {name:9s} {data_name:9s} {r.seconds:17.1f} {r.seconds_compiled:12.2f}',
              flush=True)
        write_results(out, rows, KEY)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--part', default='quality,rate,free,speed')
  p.add_argument('--proxies', default='synflow,snip,grasp,grad_norm,ntk,naswot,zen,bn,zen_f')
  p.add_argument('--spaces', default='nb201,darts')
  p.add_argument('--out', default=os.path.join(RESULTS, 'proxies.json'))
  args = p.parse_args()
  names = args.proxies.split(',')
  parts = args.part.split(',')
  rows = []
  if 'quality' in parts:
    rows += quality(names, args.out)
    write_results(args.out, rows, KEY)
  if 'rate' in parts:
    rows += supernet_rate(names)
    write_results(args.out, rows, KEY)
  if 'free' in parts:
    rows += free_seconds(args.spaces.split(','), args.out)
  if 'speed' in parts:
    rows += speed(args.spaces.split(','), names, args.out)


if __name__ == '__main__':
  main()
