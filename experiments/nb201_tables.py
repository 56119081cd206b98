"""NAS-Bench-201's tables re-run with jaxnas: every method's derived cell judged by the
benchmark's real accuracies.

    python experiments/nb201_tables.py --dataset npz:cifar10_subset.npz
        [--config experiments/nb201_tables.json] [--rows NAME,...] [--seeds 0,1,2]
        [--workdir experiments/runs/nb201_tables]

Each row of the config is a method at a protocol (the supernet's size); each run
(row, seed) finds one NAS-Bench-201 cell, and its CIFAR-10, CIFAR-100 and
ImageNet16-120 test accuracy is read from ``benchmarks/nb201_test_acc_200ep.json``
(NAS-Bench-201's 200-epoch training): nothing is trained here. A run's result is
written as soon as it ends (``experiments/results/nb201_tables.json``, with the data
it read: name, image counts, a checksum), a search stopped midway resumes from its
checkpoint, and running the command again continues the table; the Markdown table
(``experiments/results/nb201_tables.md``) is rebuilt from the results every time,
beside the papers' figures, with a picture of each search's derived cell's accuracy
per epoch (``nb201_tables_curves.png``). Nothing in it is typed by hand.

Kinds of row: ``free`` (FreeDARTS), ``zc`` (zero-cost NAS over ``samples`` random
cells, or all of them), ``search`` (a gradient-based search, ``jaxnas search``
flags in the row) and ``population`` (the random baseline: the mean ± std of every
cell in the table, and the optimum).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import time

import jaxnas.xla

jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
import numpy as np

from jaxnas import benchmark_table
from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import zc as zc_lib
from jaxnas.free import FreeConfig, free
from jaxnas.search import SearchConfig, search
from jaxnas.xla import enable_compilation_cache, program_dir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import choose, machine, mean_std, slug  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TABLE = os.path.join(ROOT, 'benchmarks', 'nb201_test_acc_200ep.json')
KINDS = ('free', 'zc', 'search', 'population')


def data_record(name: str, ds: data_lib.Dataset) -> dict:
  """What data the runs read: name, image counts, and a checksum of the arrays."""
  h = hashlib.sha256()
  for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    h.update(np.ascontiguousarray(a).tobytes())
  if name.startswith('npz:'):   # the file, not where it lies on this machine
    name = 'npz:' + os.path.basename(name[4:])
  return {'dataset': name, 'train_images': int(len(ds.x_train)),
          'test_images': int(len(ds.x_test)), 'sha256': h.hexdigest()[:16]}


def find_cell(row: dict, protocol: dict, seed: int, workdir: str, dataset: str, ds,
              table: benchmark_table.BenchmarkTable, programs: str | None = None
              ) -> tuple[str, float, list]:
  """Runs one (row, seed) (the traced programs kept in the folder ``programs``); returns (cell, search seconds on this machine (compile
  excluded: the compiled programs' runs, the searches' steps), per-epoch
  accuracies (the table's first column: CIFAR-10) of the derived cell for a search,
  else [])."""
  kind = row['kind']
  options = {k: v for k, v in row.items() if k not in ('name', 'kind', 'protocol', 'paper', 'seeds')}
  if kind == 'free':
    r = free(FreeConfig(space='nb201', dataset=dataset, channels=protocol['channels'],
                        layers=protocol['layers'], seed=seed, workdir=workdir, **options),
             dataset=ds, programs=programs)
    return str(r.genotype), r.seconds_compiled, []
  if kind == 'zc':
    samples = options.pop('samples')
    r = zc_lib.zc(zc_lib.ZCConfig(space='nb201', dataset=dataset, channels=protocol['channels'],
                                  layers=protocol['layers'], samples=samples, seed=seed,
                                  workdir=workdir, **options),
                  dataset=ds, progress=True)
    return str(r.best), samples / r.archs_per_second, []
  if kind == 'search':
    cfg = config_lib.build(SearchConfig, space='nb201', dataset=dataset, seed=seed, workdir=workdir,
                          benchmark_table=table.path, **protocol, **options)
    has_ckpt = os.path.isdir(os.path.join(workdir, 'checkpoints'))
    r = search(cfg, resume=has_ckpt, progress=True, dataset=ds, programs=programs)
    # the steps' own time (compile excluded): each epoch's steps at its seconds per step
    seconds = sum(h['seconds_per_step'] * h['steps'] for h in r.history if h['seconds_per_step'])
    curve = [(h.get('benchmark') or {}).get(table.columns[0]) for h in r.history]
    return str(r.genotype), seconds, curve
  raise ValueError(f'unknown row kind {kind!r}; known: {", ".join(KINDS)}')


def population_rows(table: benchmark_table.BenchmarkTable, paper: str) -> list[str]:
  values = np.array(list(table.rows.values()))
  mean, std, best = values.mean(0), values.std(0), values.max(0)
  return [f'| random cell (all {len(values):,}: mean ± std) | — | — | — | '
          + ' | '.join(f'{m:.2f} ± {s:.2f}' for m, s in zip(mean, std)) + f' | {paper} |',
          '| optimum | — | — | — | ' + ' | '.join(f'{b:.2f}' for b in best) + ' | — |']


def table_lines(results: dict, cfg: dict, table: benchmark_table.BenchmarkTable,
                run_only: bool = False) -> list[str]:
  """The table, a row per row of the config (``run_only``: those with a run so far),
  and the papers' sources as numbered notes."""
  lines = ['| method | protocol | seeds | search s | ' + ' | '.join(table.columns)
           + f' | paper ({table.columns[0]}) |',
           '|---|---|---:|---:|' + '---:|' * len(table.columns) + '---|']
  sources = []
  for row in cfg['rows']:
    mine = [r for r in results['runs'] if r['row'] == row['name']]
    if run_only and row['kind'] != 'population' and not mine:
      continue
    paper = row.get('paper')
    if paper and paper['source'] not in sources:
      sources.append(paper['source'])
    paper_text = f"{paper['cifar10']} [{sources.index(paper['source']) + 1}]" if paper else '—'
    if row['kind'] == 'population':
      lines += population_rows(table, paper_text)
      continue
    accs = [[r['benchmark'][c] for r in mine] for c in table.columns]
    lines.append(f"| {row['name']} | {row['protocol']} | {len(mine)} | "
                 f"{mean_std([r['search_seconds'] for r in mine])} | "
                 + ' | '.join(mean_std(a) for a in accs) + f' | {paper_text} |')
  return lines + [''] + [f'[{i}] {s}' + ('  ' if i < len(sources) else '')
                         for i, s in enumerate(sources, 1)]


def markdown(results: dict, cfg: dict, table: benchmark_table.BenchmarkTable) -> str:
  runs = results['runs']
  d = results['data']
  lines = [
      '# NAS-Bench-201 with jaxnas', '',
      f"Made by `python experiments/nb201_tables.py` on {results['machine']}, {results['date']} "
      f"(runs between {results['first']} and {results['last']}).", '',
      f"Data: `{d['dataset']}`: {d['train_images']:,} training images (the searches train the "
      f"weights on the first half and α on the second, DARTS' split), sha256 {d['sha256']}. "
      'About 10 % of CIFAR-10: the papers searched on all of it.', '',
      "Each cell is looked up in NAS-Bench-201's 200-epoch test accuracies "
      '(`benchmarks/nb201_test_acc_200ep.json`); nothing is trained here. Mean ± sample std over '
      'the seeds; search seconds on this machine (compile excluded). Protocols: '
      + '; '.join(f"**{n}**: {p['about']}" for n, p in cfg['protocols'].items()) + '.', '',
      *table_lines(results, cfg, table)]
  lines += ['', 'Cells found:', '']
  for r in runs:
    lines.append(f"- {r['row']}, seed {r['seed']}: `{r['cell']}` "
                 f"({benchmark_table.format_row(r['benchmark'])})")
  curves = [r for r in runs if r.get('curve')]
  if curves:
    lines += ['', f"{table.columns[0]} of the cell derived at each epoch's end (the picture: "
              '`nb201_tables_curves.png`):', '']
    for r in curves:
      lines.append(f"- {r['row']}, seed {r['seed']}: "
                   + ' '.join('—' if a is None else f'{a:.1f}' for a in r['curve']))
  return '\n'.join(lines) + '\n'


def draw_curves(results: dict, table: benchmark_table.BenchmarkTable, path: str) -> None:
  """The accuracy (the table's first column) of the cell each search derived at the end
  of every epoch, one line per search run: DARTS' collapse onto skip connections, or
  its absence."""
  from matplotlib.figure import Figure
  runs = [r for r in results['runs'] if r.get('curve')]
  if not runs:
    return
  fig = Figure(figsize=(6.4, 4))
  ax = fig.subplots()
  for r in runs:
    points = [(e, a) for e, a in enumerate(r['curve']) if a is not None]
    ax.plot(*zip(*points), marker='o', ms=2, label=f"{r['row']}, seed {r['seed']}")
  ax.set_xlabel('search epoch')
  ax.set_ylabel(f'derived cell: {table.columns[0]} (%)')
  ax.set_title('NAS-Bench-201: the cell derived at each epoch, looked up', fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def write_tables(results_path: str, results: dict, cfg: dict,
                 table: benchmark_table.BenchmarkTable) -> None:
  """``.md`` (every row), ``_summary.md`` (the rows run so far: the README's) and
  ``_curves.png``."""
  with open(results_path + '.md', 'w') as f:
    f.write(markdown(results, cfg, table))
  with open(results_path + '_summary.md', 'w') as f:
    f.write('\n'.join(table_lines(results, cfg, table, run_only=True)) + '\n')
  draw_curves(results, table, results_path + '_curves.png')


def _read(path_json: str) -> dict:
  if os.path.exists(path_json):
    with open(path_json) as f:
      return json.load(f)
  return {'runs': []}


def add_run(results_path: str, run: dict, data: dict, order: dict, cfg: dict,
            table: benchmark_table.BenchmarkTable) -> dict:
  """Adds ``run`` to the results file and rebuilds the Markdown table, under a lock:
  several runners (one for the searches, one for the training-free rows) share one file."""
  path_json = results_path + '.json'
  os.makedirs(os.path.dirname(os.path.abspath(path_json)), exist_ok=True)
  with open(path_json + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    results = _read(path_json)
    results['data'] = data
    results['runs'] = [r for r in results['runs'] if (r['row'], r['seed']) != (run['row'], run['seed'])]
    results['runs'].append(run)
    results['runs'].sort(key=lambda r: (order.get(r['row'], 999), r['seed']))
    dates = sorted(r['date'] for r in results['runs'])
    results.update(machine=machine(), date=time.strftime('%Y-%m-%d %H:%M'), first=dates[0],
                   last=dates[-1])
    with open(path_json + '.tmp', 'w') as f:
      json.dump(results, f, indent=1)
    os.replace(path_json + '.tmp', path_json)
    write_tables(results_path, results, cfg, table)
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dataset', required=True,
                      help='the search data: npz:PATH (the CIFAR-10 subset) or a tfds name')
  parser.add_argument('--data-dir', help='tensorflow-datasets directory')
  parser.add_argument('--config', default=os.path.join(HERE, 'nb201_tables.json'))
  parser.add_argument('--rows', help='comma-separated row names of the config (default: all)')
  parser.add_argument('--seeds', help="comma-separated seeds (default: each row's)")
  parser.add_argument('--workdir', default=os.path.join(HERE, 'runs', 'nb201_tables'))
  parser.add_argument('--table', default=TABLE, help='the benchmark table the cells are looked up in')
  parser.add_argument('--results', default=os.path.join(HERE, 'results', 'nb201_tables'),
                      help='results path without extension (.json and .md are written)')
  args = parser.parse_args(argv)
  with open(args.config) as f:
    cfg = json.load(f)
  names = [r['name'] for r in cfg['rows']]
  try:
    chosen = choose(names, args.rows, 'rows')
  except ValueError as e:
    parser.error(str(e))
  for row in cfg['rows']:
    if row.get('kind') not in KINDS:
      parser.error(f'row {row["name"]!r}: kind must be one of {", ".join(KINDS)}')
    if row['kind'] != 'population' and row.get('protocol') not in cfg['protocols']:
      parser.error(f'row {row["name"]!r}: protocol must be one of {", ".join(cfg["protocols"])}')
  table = benchmark_table.load(args.table)
  programs = program_dir(enable_compilation_cache())
  ds = data_lib.load(args.dataset, args.data_dir)
  data = data_record(args.dataset, ds)
  path_json = args.results + '.json'
  results = _read(path_json)
  if results.get('data', data)['sha256'] != data['sha256']:
    parser.error(f'{path_json} holds runs on other data ({results["data"]}); give another '
                 '--results')
  done = {(r['row'], r['seed']) for r in results['runs']}
  seeds = [int(s) for s in args.seeds.split(',')] if args.seeds else None
  todo = [(row, s) for row in cfg['rows'] if row['name'] in chosen and row['kind'] != 'population'
          for s in (seeds or row['seeds']) if (row['name'], s) not in done]
  print(f'{len(todo)} runs to do ({len(done)} done in {path_json})', flush=True)
  order = {n: j for j, n in enumerate(names)}
  for i, (row, seed) in enumerate(todo):
    t0 = time.perf_counter()
    protocol = {k: v for k, v in cfg['protocols'][row['protocol']].items() if k != 'about'}
    folder = os.path.join(args.workdir, slug(row['name']), f'seed{seed}')
    try:
      cell, seconds, curve = find_cell(row, protocol, seed, folder, args.dataset, ds, table,
                                       programs)
    except ValueError as e:   # e.g. Fair DARTS with no op past its threshold: said, not recorded
      print(f"[{i + 1}/{len(todo)}] {row['name']} seed {seed}: no cell: {e}", flush=True)
      continue
    run = {'row': row['name'], 'seed': seed, 'cell': cell, 'benchmark': table.lookup(cell),
           'search_seconds': seconds, 'curve': curve, 'date': time.strftime('%Y-%m-%d %H:%M')}
    results = add_run(args.results, run, data, order, cfg, table)
    print(f"[{i + 1}/{len(todo)}] {row['name']} seed {seed}: {cell} "
          f"({benchmark_table.format_row(run['benchmark'])}); search {seconds:.1f} s, "
          f'{time.perf_counter() - t0:.0f} s in all', flush=True)
  results = _read(path_json)
  if results['runs']:
    write_tables(args.results, results, cfg, table)
    print(open(args.results + '.md').read())
  return 0


if __name__ == '__main__':
  sys.exit(main())
