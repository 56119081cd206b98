"""Compares every jaxnas search method on one space, one data set and one budget.

    python experiments/compare_methods.py [--config experiments/compare_methods.json]
        [--methods NAME,...] [--seeds 0,1,2] [--workdir experiments/runs/compare_methods]

For each method and seed: the search (or the training-free selection), then the
found genotype trained from scratch by the same evaluation recipe (seed = the
search seed). One JSON row per (method, seed) is written as soon as it is done
(``experiments/results/compare_methods.json``), so an interrupted comparison
continues where it stopped when run again; the Markdown table
(``experiments/results/compare_methods.md``) is rebuilt from the rows every
time, stamped with the machine and the date. Nothing in it is typed by hand.

Search seconds are reported twice: as compiled steps only (the method's own
cost, comparable across seeds: steps × compiled seconds per step for the
searches, the compiled saliency or scoring for FreeDARTS and zero-cost NAS),
and as the wall time of the seed-0 run, compilation included (the persistent
compilation cache is on, so later seeds of a method skip most of it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jaxnas.xla

jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend

from jaxnas import data as data_lib
from jaxnas import zc as zc_lib
from jaxnas.free import FreeConfig, free
from jaxnas import config as config_lib
from jaxnas.search import SearchConfig, search
from jaxnas.spaces import get_space
from jaxnas.train import TrainConfig, train
from jaxnas.xla import enable_compilation_cache, program_dir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import choose, machine, mean_std, slug  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ('search', 'free', 'zc', 'random')


def find_genotype(entry: dict, cfg: dict, seed: int, workdir: str, ds, programs: str | None = None
                  ) -> tuple[str, float, float]:
  """Runs one method (its traced programs kept in the folder ``programs``); returns
  (genotype text, compiled search seconds, wall seconds)."""
  kind = entry['kind']
  options = {k: v for k, v in entry.items() if k not in ('name', 'kind')}
  scfg = config_lib.build(SearchConfig, space=cfg['space'], dataset=cfg['dataset'], seed=seed,
                         workdir=workdir, **cfg.get('search', {}),
                         **(options if kind == 'search' else {}))
  t0 = time.perf_counter()
  if kind == 'search':
    has_ckpt = os.path.isdir(os.path.join(workdir, 'checkpoints'))
    result = search(scfg, resume=has_ckpt, progress=False, dataset=ds, programs=programs)
    # the compiled steps only: every step of an epoch at that epoch's compiled seconds per step
    compiled = sum(h['seconds_per_step'] * h['steps'] for h in result.history
                   if h['seconds_per_step'] is not None)
    return str(result.genotype), compiled, time.perf_counter() - t0
  if kind == 'free':
    result = free(FreeConfig(space=cfg['space'], dataset=cfg['dataset'], channels=scfg.size.channels,
                             layers=scfg.size.layers, seed=seed, workdir=workdir, **options),
                  dataset=ds, programs=programs)
    return str(result.genotype), result.seconds_compiled, time.perf_counter() - t0
  if kind == 'zc':
    result = zc_lib.zc(zc_lib.ZCConfig(space=cfg['space'], dataset=cfg['dataset'], seed=seed,
                                       workdir=workdir, **options), dataset=ds)
    return str(result.best), options.get('samples', 100) / result.archs_per_second, \
        time.perf_counter() - t0
  if kind == 'random':
    genotype = get_space(cfg['space']).sample_distinct(1, seed)[0]
    return str(genotype), 0.0, time.perf_counter() - t0
  raise ValueError(f'unknown method kind {kind!r} in the config; known: {", ".join(KINDS)}')


def run_one(entry: dict, cfg: dict, seed: int, root: str, ds, programs: str | None = None) -> dict:
  name = entry['name']
  folder = os.path.join(root, slug(name), f'seed{seed}')
  genotype, compiled, wall = find_genotype(entry, cfg, seed, os.path.join(folder, 'search'), ds,
                                           programs)
  tdir = os.path.join(folder, 'train')
  has_ckpt = os.path.isdir(os.path.join(tdir, 'checkpoints'))
  report = train(TrainConfig(space=cfg['space'], genotype=genotype, dataset=cfg['dataset'],
                             seed=seed, workdir=tdir, **cfg.get('train', {})),
                 resume=has_ckpt, progress=False, dataset=ds, programs=programs).report
  return {'method': name, 'seed': seed, 'genotype': genotype, 'search_seconds': compiled,
          'search_wall_seconds': wall, 'params': report['params'],
          'test_acc': report['test_acc'], 'train_seconds_per_epoch': report['seconds_per_epoch']}


def markdown(results: dict, cfg: dict) -> str:
  rows = results['rows']
  lines = [f"# compare_methods: {cfg['space']} on {cfg['dataset']}", '',
           f"Made by `python experiments/compare_methods.py` on {results['machine']}, "
           f"{results['date']} (the rows were computed between {results['first']} and "
           f"{results['last']}).", '',
           f"Budget: searches {json.dumps(cfg.get('search') or 'at their defaults')} (fields not "
           f"named at the jaxnas defaults for the data set), evaluation training "
           f"{json.dumps(cfg.get('train', {}))} with the space's recipe, seeds "
           f"{', '.join(map(str, cfg['seeds']))}. Mean ± sample std over the seeds.", '',
           '| method | seeds | search s (compiled) | search s wall, seed 0 | parameters | '
           'test accuracy % | distinct genotypes |',
           '|---|---|---|---|---|---|---|']
  for entry in cfg['methods']:
    mine = [r for r in rows if r['method'] == entry['name']]
    if not mine:
      continue
    seed0 = [r['search_wall_seconds'] for r in mine if r['seed'] == cfg['seeds'][0]]
    lines.append(
        f"| {entry['name']} | {len(mine)} | {mean_std([r['search_seconds'] for r in mine], '.2f')} | "
        f"{f'{seed0[0]:.1f}' if seed0 else '-'} | "
        f"{mean_std([r['params'] for r in mine], ',.0f')} | "
        f"{mean_std([100 * r['test_acc'] for r in mine], '.2f')} | "
        f"{len({r['genotype'] for r in mine})} |")
  lines += ['', 'Genotypes found:', '']
  for r in rows:
    lines.append(f"- {r['method']}, seed {r['seed']}: `{r['genotype']}` "
                 f"({100 * r['test_acc']:.2f}%)")
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=os.path.join(HERE, 'compare_methods.json'))
  parser.add_argument('--methods', help='comma-separated method names of the config (default: all)')
  parser.add_argument('--seeds', help='comma-separated seeds (default: the config\'s)')
  parser.add_argument('--workdir', default=os.path.join(HERE, 'runs', 'compare_methods'))
  parser.add_argument('--results', default=os.path.join(HERE, 'results', 'compare_methods'),
                      help='results path without extension (.json and .md are written)')
  args = parser.parse_args(argv)
  with open(args.config) as f:
    cfg = json.load(f)
  if args.seeds:
    cfg['seeds'] = [int(s) for s in args.seeds.split(',')]
  names = [e['name'] for e in cfg['methods']]
  try:
    chosen = choose(names, args.methods, 'methods')
  except ValueError as e:
    parser.error(str(e))
  for entry in cfg['methods']:
    if entry.get('kind') not in KINDS:
      parser.error(f'method {entry["name"]!r}: kind must be one of {", ".join(KINDS)}')
  get_space(cfg['space'])
  programs = program_dir(enable_compilation_cache())
  ds = data_lib.load(cfg['dataset'], cfg.get('data_dir'))
  path_json = args.results + '.json'
  results = {'rows': []}
  if os.path.exists(path_json):
    with open(path_json) as f:
      results = json.load(f)
  done = {(r['method'], r['seed']) for r in results['rows']}
  todo = [(e, s) for e in cfg['methods'] if e['name'] in chosen for s in cfg['seeds']
          if (e['name'], s) not in done]
  print(f'{len(todo)} runs to do ({len(done)} done in {path_json})', flush=True)
  for i, (entry, seed) in enumerate(todo):
    t0 = time.perf_counter()
    row = run_one(entry, cfg, seed, args.workdir, ds, programs)
    row['date'] = time.strftime('%Y-%m-%d %H:%M')
    results['rows'].append(row)
    order = {e['name']: j for j, e in enumerate(cfg['methods'])}
    results['rows'].sort(key=lambda r: (order.get(r['method'], 99), r['seed']))
    dates = sorted(r['date'] for r in results['rows'])
    results.update(machine=machine(), date=time.strftime('%Y-%m-%d %H:%M'), first=dates[0],
                   last=dates[-1], config=cfg)
    os.makedirs(os.path.dirname(path_json), exist_ok=True)
    with open(path_json, 'w') as f:
      json.dump(results, f, indent=1)
    with open(args.results + '.md', 'w') as f:
      f.write(markdown(results, cfg))
    print(f'[{i + 1}/{len(todo)}] {entry["name"]} seed {seed}: {100 * row["test_acc"]:.2f}% '
          f'{row["params"]:,} params, search {row["search_seconds"]:.1f} s compiled '
          f'({row["search_wall_seconds"]:.1f} s wall); {time.perf_counter() - t0:.0f} s in all',
          flush=True)
  if results['rows']:
    with open(args.results + '.md', 'w') as f:
      f.write(markdown(results, results.get('config', cfg)))
    print(open(args.results + '.md').read())
  return 0


if __name__ == '__main__':
  sys.exit(main())
