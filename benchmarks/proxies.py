"""Zero-cost proxies against real NAS-Bench-201 accuracies, and their speed.

    python benchmarks/proxies.py --part quality      # ~1 h on 2 cores (--archs 100)
    python benchmarks/proxies.py --part quality --datasets cifar10 --proxies synflow
    python benchmarks/proxies.py --part quality --datasets cifar10 --images npz:cifar10_subset.npz
    python benchmarks/proxies.py --part full         # SynFlow over all 15,625 cells
    python benchmarks/proxies.py --part speed --spaces nb201
    python benchmarks/proxies.py --part free

Quality (``--part quality``): the ground truth is benchmarks/nb201_ground_truth.json,
NAS-Bench-201's validation accuracy after its 200-epoch training of ~725
architectures on CIFAR-10, CIFAR-100 and ImageNet16-120, beside the score
NASLib's PyTorch code gave each (automl/NASLib, naslib/data/zc_nasbench201.json
at a06ba0e9; its "source" field says more). jaxnas scores the same
architectures at NAS-Bench-201's size (C=16, 5 cells per stage; 32x32 inputs,
16x16 for ImageNet16-120; 10, 100, 120 classes), weights drawn with seed 0.
SynFlow reads no data and scores every architecture in the file; the proxies
that read a batch score ``--archs`` of them (a seeded sample, the same for
every proxy), on a batch of Gaussian noise N(0, 1) in the normalised input
space (the data set's per-channel statistics matched; CIFAR cannot be
downloaded here) with uniformly random labels. Per data set and proxy: Kendall
τ-b and Spearman ρ of the score (negated where smaller is better: the NTK
condition number) against the accuracy; NASLib's own score's τ on the same
architectures; the parameter count's τ on them (a proxy below it adds nothing);
and Spearman ρ between jaxnas' score and NASLib's, architecture by architecture.
Then zero-cost NAS: the accuracy of the architecture each proxy ranks first,
against the best, the median and the mean of 100 random picks of the same
architectures. Scores are kept in benchmarks/results/nb201_scores_<data set>.json
(a re-run with the same setup reuses them: an interrupted run loses nothing;
``--cached`` prints the tables from them alone).

Full space (``--part full``): seconds for ``jaxnas zc --space nb201 --proxy
synflow`` over all 15,625 cells, compile included, at NAS-Bench-201's size
(the one-hot supernet, each edge running its chosen op; ``--chunks`` compares
chunk sizes on 512 cells first).

Speed: seconds per architecture of each proxy on a discrete network, compile
excluded (median of 3 calls) and the compile time, on NAS-Bench-201's
network (C=16, 5 cells per stage) and a DARTS network (C=16, 8 cells; the
search size), 32x32 inputs, batch 32 of random images.
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

KEY = ('part', 'space', 'proxy', 'via', 'data', 'dataset')
GROUND_TRUTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nb201_ground_truth.json')
# data set -> (classes, image side) of NAS-Bench-201's networks on it
DATASETS = {'cifar10': (10, 32), 'cifar100': (100, 32), 'ImageNet16-120': (120, 16)}
NASLIB_NAME = {'naswot': 'nwot'}  # NASLib's name where it differs; proxies NASLib lacks: none
NASLIB_SCORES = ('synflow', 'snip', 'grasp', 'grad_norm', 'nwot', 'jacov', 'fisher')
QUALITY_PROXIES = 'synflow,snip,grad_norm,naswot,jacov,fisher,zen,bn,grasp,ntk'  # the slowest last
# SynFlow through the one-hot supernet (exact, one compile: ~33 cells/s); the others through
# each network, as their cached scores were (a network compiles and scores SNIP in 2.2 s at
# batch 64 of 32x32, the one-hot supernet in 0.8 s)
VIA = {'synflow': 'supernet'}
NTK_BATCH = 16  # the NTK matrix costs a backward pass per image: 35 s per cell at 64 here


def load_ground_truth(path: str = GROUND_TRUTH) -> dict:
  """``{data set: {arch string: {'val_accuracy': %, 'params': M, ...}}}``."""
  with open(path) as f:
    return json.load(f)['datasets']


def rank_stats(score, acc) -> tuple[float, float]:
  """Kendall's τ-b and Spearman's ρ (ties: neither concordant nor discordant; average ranks)."""
  from scipy.stats import kendalltau, spearmanr
  return float(kendalltau(score, acc).statistic), float(spearmanr(score, acc).statistic)


def naslib_name(proxy: str) -> str | None:
  name = NASLIB_NAME.get(proxy, proxy)
  return name if name in NASLIB_SCORES else None


def _scores_path(dataset: str, real: bool = False) -> str:
  return os.path.join(RESULTS, f'nb201_scores_{dataset}{"_real" if real else ""}.json')


def real_batch(images: str, batch: int, classes: int, image: int):
  """(x, y, its description): ``batch`` training images of the data set ``images``
  (seeded draw), normalised, with their labels."""
  import hashlib
  from jaxnas import data as data_lib
  ds = data_lib.load(images)
  if ds.image_shape != (image, image, 3) or ds.num_classes != classes:
    raise ValueError(f'--images {images}: {ds.image_shape} images of {ds.num_classes} classes, '
                     f'not {(image, image, 3)} of {classes}')
  idx = np.random.default_rng(0).choice(len(ds.x_train), batch, replace=False)
  digest = hashlib.sha256(np.ascontiguousarray(ds.x_train[idx]).tobytes()).hexdigest()[:16]
  return (np.asarray(ds.normalize(ds.x_train[idx]), np.float32), np.asarray(ds.y_train[idx]),
          f'{images} ({len(ds.x_train)} training images; batch sha256 {digest})')


def score_dataset(dataset: str, table: dict, proxy_names, archs: int, batch: int,
                  progress: bool = True, cached: bool = False, images: str | None = None) -> dict:
  """``{proxy: {arch: score}}`` on ``dataset``, reusing the scores file where the setup
  matches; with ``cached``, only what the file holds."""
  import jax
  import jax.numpy as jnp
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas.spaces import get_space
  from jaxnas.zc import score_batch
  classes, image = DATASETS[dataset]
  if images:
    x, y, source = real_batch(images, batch, classes, image)
  else:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, image, image, 3)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    source = 'gaussian'
  setup = dict(channels=16, layers=5, image=image, classes=classes, batch=batch, ntk_batch=NTK_BATCH,
               input=source, seed=0)
  path = _scores_path(dataset, bool(images))
  doc = {'setup': setup, 'scores': {}, 'seconds': {}}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old.get('setup') == setup:
      doc = old
  sp = get_space('nb201')
  names = sorted(table)
  sample = [names[i] for i in np.random.default_rng(0).permutation(len(names))[:archs]]
  for name in proxy_names:
    wanted = names if name == 'synflow' and not images else sample
    have = doc['scores'].setdefault(name, {})
    todo = [] if cached else [a for a in wanted if a not in have]
    b = NTK_BATCH if name == 'ntk' else batch
    via = VIA.get(name, 'network')
    step = max(len(todo), 1) if via == 'supernet' else 10
    for i in range(0, len(todo), step):  # saved every `step`: an interrupted run keeps its scores
      part = todo[i:i + step]
      r = score_batch(sp, [sp.load_genotype(a) for a in part], name, (jnp.asarray(x[:b]),
                      jnp.asarray(y[:b])), classes, 16, 5, via=via, chunk=32, seed=0,
                      progress=progress)
      have.update({a: float(s) for a, s in zip(part, r.scores)})
      doc['seconds'][name] = doc['seconds'].get(name, 0.0) + r.seconds
      os.makedirs(RESULTS, exist_ok=True)
      with open(path, 'w') as f:
        json.dump(doc, f, indent=1)
      jax.clear_caches()
  return doc


def quality(proxy_names, datasets, archs: int, batch: int, out: str, progress: bool = True,
            cached: bool = False, images: str | None = None):
  from jaxnas import proxies
  gt = load_ground_truth()
  rows = []
  for dataset in datasets:
    table = gt[dataset]
    doc = score_dataset(dataset, table, proxy_names, archs, batch, progress, cached, images)
    present = [p for p in proxy_names if doc['scores'].get(p)]
    sample = set(doc['scores'].get(next((p for p in present if p != 'synflow'), ''), {}))
    baselines = [(b, None) for b in ('params', 'flops')] + [(b, sample) for b in ('params', 'flops')
                                                              if sample]
    for name, among in [(p, None) for p in present] + baselines:
      scored = doc['scores'][name] if name in doc['scores'] else {
          a: table[a][name] for a in (among or table)}
      arch = sorted(a for a in scored if a in table)
      acc = np.array([table[a]['val_accuracy'] for a in arch])
      signed = proxies.sign(name) * np.array([scored[a] for a in arch], np.float64) \
          if name in proxies.PROXIES else np.array([scored[a] for a in arch])
      signed = np.where(np.isnan(signed), -np.inf, signed)  # a NaN ranks last
      tau, rho = rank_stats(signed, acc)
      params_tau, _ = rank_stats([table[a]['params'] for a in arch], acc)
      row = dict(part='quality', space='nb201', dataset=dataset, proxy=name, n=len(arch),
                 among='all' if len(arch) == len(table) else 'sample', tau=tau,
                 rho=rho, params_tau=params_tau, nonfinite=int((~np.isfinite(signed)).sum()),
                 seconds=doc['seconds'].get(name), **({'data': 'real'} if images else {}))
      ref = naslib_name(name)
      if ref and name in proxies.PROXIES:
        theirs = np.array([table[a][ref] for a in arch])
        row['naslib_tau'] = rank_stats(theirs, acc)[0]
        row['rho_vs_naslib'] = rank_stats(signed, proxies.sign(name) * theirs)[1]
      # zero-cost NAS among the same architectures: what the top-ranked one reached
      row['pick_acc'] = float(acc[int(np.argmax(signed))])
      if ref and name in proxies.PROXIES:
        row['naslib_pick_acc'] = float(acc[int(np.argmax(theirs))])
      row['best_acc'], row['median_acc'] = float(acc.max()), float(np.median(acc))
      row['random_acc'] = float(np.mean(acc[np.random.default_rng(0).integers(0, len(acc), 100)]))
      rows.append(row)
    write_results(out, rows, KEY)
  print_quality(rows)
  return rows


def _f(v, fmt='{:.3f}'):
  return fmt.format(v) if v is not None else '—'


TITLES = {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100', 'ImageNet16-120': 'ImageNet16-120'}


def print_quality(rows):
  """Two Markdown tables, a row per proxy and two columns per data set (the README's)."""
  datasets = list(dict.fromkeys(r['dataset'] for r in rows))
  names = sorted(dict.fromkeys((r['proxy'], r['among']) for r in rows),
                 key=lambda k: (k[0] in ('params', 'flops'), k[1] == 'sample'))  # baselines last
  at = {(r['dataset'], (r['proxy'], r['among'])): r for r in rows}

  def archs(name):
    return '/'.join(sorted({str(at[(d, name)]['n']) for d in datasets if (d, name) in at}))
  print('\nKendall τ with NAS-Bench-201 validation accuracy: jaxnas (NASLib on the same '
        'architectures); ρ: Spearman between jaxnas\' and NASLib\'s scores')
  head = ' | '.join(f'{TITLES[d]} τ (NASLib) | ρ' for d in datasets)
  print(f'| proxy | archs | {head} |')
  print('|---|---:|' + '---:|---:|' * len(datasets))
  for name in names:
    cells = []
    for d in datasets:
      r = at.get((d, name))
      cells += [f"{_f(r['tau'])} ({_f(r.get('naslib_tau'))})" if r else '',
                _f(r and r.get('rho_vs_naslib'), '{:.2f}')]
    print(f'| {name[0]} | {archs(name)} | ' + ' | '.join(cells) + ' |')
  print('\nZero-cost NAS: validation accuracy (%) of the architecture each proxy ranks first '
        "(NASLib's score's pick)")
  print('| proxy | archs | ' + ' | '.join(TITLES[d] for d in datasets) + ' |')
  print('|---|---:|' + '---:|' * len(datasets))
  for name in names:
    cells = [f"{at[(d, name)]['pick_acc']:.2f} ({_f(at[(d, name)].get('naslib_pick_acc'), '{:.2f}')})"
             if (d, name) in at else '' for d in datasets]
    print(f'| {name[0]} | {archs(name)} | ' + ' | '.join(cells) + ' |')
  for label, field in (('best', 'best_acc'), ('median', 'median_acc'),
                       ('100 random picks, mean', 'random_acc')):
    for among in ('all', 'sample'):
      # the largest set so labelled (a proxy an interrupted run left short scores fewer)
      same = {d: max((r for r in rows if r['dataset'] == d and r['among'] == among),
                     key=lambda r: r['n'], default=None) for d in datasets}
      if any(same.values()):
        n = '/'.join(sorted({str(r['n']) for r in same.values() if r}))
        print(f'| *{label}* | {n} | ' + ' | '.join(f'{r[field]:.2f}' if r else '' for r in same.values())
              + ' |')


def full_space(out: str, chunks=(32,), progress: bool = True, archs: int | None = None) -> list[dict]:
  """``jaxnas zc --space nb201 --proxy synflow`` over all 15,625 cells (or the first
  ``archs`` of a seeded order) at NAS-Bench-201's size."""
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  import jax
  from jaxnas import data
  from jaxnas.spaces import get_space
  from jaxnas.zc import score_genotypes
  sp = get_space('nb201')
  everything = sp.sample_distinct(sp.num_architectures, 0)[:archs]
  x = np.zeros((8, 32, 32, 3), np.uint8)
  ds = data.from_arrays(x, np.zeros(8, np.int64), x, np.zeros(8, np.int64), num_classes=10)
  rows = []
  best = chunks[0]
  if len(chunks) > 1:
    rates = {}
    for chunk in chunks:
      r = score_genotypes(sp, everything[:512], 'synflow', ds, 16, 5, chunk=chunk, progress=False)
      rates[chunk] = r.archs_per_second
      rows.append(dict(part='full', space='nb201', proxy='synflow', via=r.via, chunk=chunk, archs=512,
                       seconds=r.seconds, archs_per_second_compiled=r.archs_per_second))
      print(f'chunk {chunk:4d}: 512 cells {r.seconds:6.1f} s (compile included), '
            f'{r.archs_per_second:6.2f} cells/s compiled', flush=True)
      jax.clear_caches()
    best = max(rates, key=rates.get)
  t0 = time.perf_counter()
  r = score_genotypes(sp, everything, 'synflow', ds, 16, 5, chunk=best, progress=progress)
  rows.append(dict(part='full', space='nb201', proxy='synflow', via=r.via, chunk=best,
                   archs=len(everything), seconds=time.perf_counter() - t0,
                   archs_per_second_compiled=r.archs_per_second,
                   nonfinite=int((~np.isfinite(r.scores)).sum())))
  print(f'{len(everything)} cells, chunk {best}: {rows[-1]["seconds"]:.1f} s (compile included), '
        f'{r.archs_per_second:.2f} cells/s compiled; {rows[-1]["nonfinite"]} non-finite '
        '(cells whose output no path reaches: log 0)', flush=True)
  write_results(out, rows, KEY)
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
  p.add_argument('--part', default='quality', help='quality, full, rate, free, speed (commas)')
  p.add_argument('--proxies', default=None, help=f'default: {QUALITY_PROXIES} (quality), every '
                 'proxy but zen_f (speed, rate)')
  p.add_argument('--datasets', default=','.join(DATASETS))
  p.add_argument('--archs', type=int, default=100,
                 help='quality: architectures the proxies that read data score')
  p.add_argument('--batch', type=int, default=64, help='quality: images in the batch')
  p.add_argument('--images', default=None,
                 help='quality: a batch of this data set (npz:PATH or a tfds name) instead of '
                      'Gaussian noise (give one --datasets of its shape)')
  p.add_argument('--chunks', default='32', help='full: chunk sizes to compare on 512 cells first')
  p.add_argument('--full-archs', type=int, default=None, help='full: score this many cells, not all')
  p.add_argument('--spaces', default='nb201,darts')
  p.add_argument('--no-progress', action='store_true')
  p.add_argument('--cached', action='store_true',
                 help='quality: tables from the scores files alone (what an interrupted run scored)')
  p.add_argument('--out', default=os.path.join(RESULTS, 'proxies.json'))
  args = p.parse_args()
  parts = args.part.split(',')
  progress = not args.no_progress
  if 'quality' in parts:
    quality((args.proxies or QUALITY_PROXIES).split(','), args.datasets.split(','), args.archs,
            args.batch, args.out, progress, args.cached, args.images)
  if 'full' in parts:
    full_space(args.out, [int(c) for c in args.chunks.split(',')], progress, args.full_archs)
  names = (args.proxies or 'synflow,snip,grasp,grad_norm,ntk,naswot,zen,bn').split(',')
  if 'rate' in parts:
    write_results(args.out, supernet_rate(names), KEY)
  if 'free' in parts:
    free_seconds(args.spaces.split(','), args.out)
  if 'speed' in parts:
    speed(args.spaces.split(','), names, args.out)


if __name__ == '__main__':
  main()
