"""The ``jaxnas`` command line: ``search``, ``train``, ``run``, ``free``, ``zc``, ``params``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

import jaxnas  # noqa: F401  (applies the XLA flags before JAX starts)
from jaxnas import spaces


def _cmd_params(args) -> None:
  main, aux = spaces.count_network_params(args.space, args.genotype, args.channels, args.layers,
                                   args.classes, args.supernet)
  what = 'supernet' if args.supernet else f'network of {args.genotype}'
  print(f'{args.space} {what}')
  if aux:
    print(f'auxiliary head: {aux}')
  print(main)


def _parse(value: str, kind):
  if value.lower() == 'none':
    return None
  if kind is bool:  # bool('false') is True
    if value.lower() not in ('true', 'false', '1', '0', 'yes', 'no'):
      raise argparse.ArgumentTypeError(f'expected true or false, got {value!r}')
    return value.lower() in ('true', '1', 'yes')
  return kind(value)


def add_config_flags(parser: argparse.ArgumentParser, config_cls, prefix: str = '',
                     skip: tuple[str, ...] = ()) -> None:
  """One ``--flag`` per field of a config dataclass, defaulting to the field's default
  (``--{prefix}-field``, stored as ``{prefix}_field``, with a prefix)."""
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    if f.name in skip:
      continue
    hint = hints[f.name]
    name = f'{prefix}_{f.name}' if prefix else f.name
    flag = '--' + name.replace('_', '-')
    if hint is bool:
      parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
      continue
    base = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    kind = base[0]
    parser.add_argument(flag, type=lambda v, kind=kind: _parse(v, kind),
                        default=f.default, metavar=kind.__name__.upper(),
                        help=f'default: {f.default}' + (' (resolved by data set and space)'
                                                        if f.default is None else ''))


def _cmd_search(args) -> None:
  from jaxnas.search import SearchConfig, SearchInterrupted, search
  from jaxnas.xla import enable_compilation_cache
  enable_compilation_cache()
  fields = {f.name for f in dataclasses.fields(SearchConfig)}
  config = SearchConfig(**{k: v for k, v in vars(args).items() if k in fields})
  try:
    result = search(config, resume=args.resume, progress=not args.no_progress)
  except SearchInterrupted as e:
    print(e, file=sys.stderr)
    sys.exit(130)
  print(f'genotype: {result.genotype}')
  print(f'written to {result.workdir}: genotype.json, genotype.txt, metrics.jsonl, alpha.npz, '
        f'{"normal.png, reduce.png" if result.config.space == "darts" else "cell.png"}, alpha_*.png, curves.png')


def _cmd_free(args) -> None:
  from jaxnas.free import FreeConfig, free
  from jaxnas.xla import enable_compilation_cache
  enable_compilation_cache()
  fields = {f.name for f in dataclasses.fields(FreeConfig)}
  result = free(FreeConfig(**{k: v for k, v in vars(args).items() if k in fields}))
  print(f'genotype: {result.genotype}')
  print(f'wall time: {result.seconds:.2f} s (compile included), '
        f'{result.seconds_compiled:.3f} s (the saliency alone, compiled)')


def _cmd_train(args) -> None:
  from jaxnas.train import TrainConfig, TrainInterrupted, format_report, train
  from jaxnas.xla import enable_compilation_cache
  enable_compilation_cache()
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  try:
    result = train(TrainConfig(**{k: v for k, v in vars(args).items() if k in fields}),
                   resume=args.resume, progress=not args.no_progress)
  except TrainInterrupted as e:
    print(e, file=sys.stderr)
    sys.exit(130)
  print(format_report(result.report))
  print(f'written to {result.workdir}: report.json, metrics.jsonl, curves.png, config.json')


def _cmd_zc(args) -> None:
  from jaxnas.xla import enable_compilation_cache
  pr = sub.add_parser('run', help='search, derive, train and report in one resumable run',
                      description='The search flags as for jaxnas search, the evaluation flags '
                                  'as --train-*; stages go to WORKDIR/search and WORKDIR/train, '
                                  'the report to WORKDIR/report.json and report.md.')
  add_config_flags(pr, SearchConfig)
  add_config_flags(pr, TrainConfig, prefix='train', skip=RUN_TRAIN_SKIP)
  pr.set_defaults(workdir='runs/run')
  pr.add_argument('--resume', action='store_true', help='continue the run in --workdir')
  pr.add_argument('--no-progress', action='store_true', help='no progress bar')
  pr.set_defaults(func=_cmd_run)

  from jaxnas.zc import ZCConfig, zc
  enable_compilation_cache()
  fields = {f.name for f in dataclasses.fields(ZCConfig)}
  result = zc(ZCConfig(**{k: v for k, v in vars(args).items() if k in fields}))
  print(f'{args.proxy} on {len(result.ranking)} {args.space} architectures (through the {result.via}); '
        f'best first:')
  for rank, (g, s) in enumerate(result.ranking[:args.show], 1):
    print(f'{rank:4d}  {s:12.5g}  {g}')
  print(f'{result.seconds:.1f} s in all (compile included), {result.archs_per_second:.1f} '
        f'architectures per second compiled; ranking.json and genotype.json in {args.workdir}')
  print(f'best: {result.best}')


def _cmd_run(args) -> None:
  from jaxnas.pipeline import run
  from jaxnas.search import SearchConfig, SearchInterrupted
  from jaxnas.train import TrainConfig, TrainInterrupted, format_report
  from jaxnas.xla import enable_compilation_cache
  enable_compilation_cache()
  fields = {f.name for f in dataclasses.fields(SearchConfig)}
  scfg = SearchConfig(**{k: v for k, v in vars(args).items() if k in fields})
  overrides = {f.name: getattr(args, 'train_' + f.name) for f in dataclasses.fields(TrainConfig)
               if f.name not in RUN_TRAIN_SKIP}
  try:
    report = run(scfg, overrides, args.workdir, resume=args.resume, progress=not args.no_progress)
  except (SearchInterrupted, TrainInterrupted) as e:
    print(f'{e} (jaxnas run --resume continues the whole run)', file=sys.stderr)
    sys.exit(130)
  print(format_report(report))
  print(f'search {report["search_seconds"]:.1f} s; written to {args.workdir}: search/, train/, '
        f'report.json, report.md')


# what jaxnas run takes from the search rather than from --train-* flags
RUN_TRAIN_SKIP = ('space', 'genotype', 'dataset', 'data_dir', 'download', 'workdir', 'devices')


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='jaxnas', description='Differentiable neural architecture search in JAX.')
  p.add_argument('--distributed', action='store_true',
                 help='multi-host: jax.distributed.initialize from JAX_COORDINATOR_ADDRESS, '
                      'JAX_NUM_PROCESSES, JAX_PROCESS_ID (auto-detected on TPU, SLURM, Open MPI); '
                      'give it before the command, on every host')
  sub = p.add_subparsers(dest='command', required=True)
  pp = sub.add_parser('params', help='count the parameters of a network or supernet',
                      description='Prints the parameter count (auxiliary head counted apart, as '
                                  'quark0/darts does) on the last line as a plain integer.')
  pp.add_argument('--space', default='darts', choices=sorted(spaces.SPACES))
  pp.add_argument('--genotype', help='published name (e.g. DARTS_V2), JSON file, or genotype string')
  pp.add_argument('--channels', type=int, help='initial channels C (default: the space\'s)')
  pp.add_argument('--layers', type=int, help='cells (darts) or cells per stage (nb201)')
  pp.add_argument('--classes', type=int, default=10)
  pp.add_argument('--supernet', action='store_true', help='count the search supernet instead')
  pp.set_defaults(func=_cmd_params)

  from jaxnas.search import SearchConfig
  ps = sub.add_parser('search', help='search an architecture (DARTS family)',
                      description='Bilevel architecture search. Every config field is a flag; '
                                  'the defaults are DARTS\' (network size and epochs scaled down '
                                  'for the embedded digits data set).')
  add_config_flags(ps, SearchConfig)
  ps.add_argument('--resume', action='store_true', help='continue the search in --workdir')
  ps.add_argument('--no-progress', action='store_true', help='no progress bar')
  ps.set_defaults(func=_cmd_search)

  from jaxnas.free import FreeConfig
  pf = sub.add_parser('free', help='FreeDARTS: a genotype from α saliencies at initialisation',
                      description='Training-free search: SNIP / GraSP / SynFlow saliency of the raw '
                                  'α of the supernet at initialisation, then the space\'s derive rule.')
  add_config_flags(pf, FreeConfig)
  pf.set_defaults(func=_cmd_free)

  from jaxnas.train import TrainConfig
  pt = sub.add_parser('train', help='train a genotype\'s network from scratch (evaluation)',
                      description='Evaluation training with the DARTS recipe (darts) or the '
                                  'NAS-Bench-201 recipe (nb201); fields left unset are resolved '
                                  'by space and data set. Ends with a report.')
  add_config_flags(pt, TrainConfig)
  pt.add_argument('--resume', action='store_true', help='continue the training in --workdir')
  pt.add_argument('--no-progress', action='store_true', help='no progress bar')
  pt.set_defaults(func=_cmd_train)

  pr = sub.add_parser('run', help='search, derive, train and report in one resumable run',
                      description='The search flags as for jaxnas search, the evaluation flags '
                                  'as --train-*; stages go to WORKDIR/search and WORKDIR/train, '
                                  'the report to WORKDIR/report.json and report.md.')
  add_config_flags(pr, SearchConfig)
  add_config_flags(pr, TrainConfig, prefix='train', skip=RUN_TRAIN_SKIP)
  pr.set_defaults(workdir='runs/run')
  pr.add_argument('--resume', action='store_true', help='continue the run in --workdir')
  pr.add_argument('--no-progress', action='store_true', help='no progress bar')
  pr.set_defaults(func=_cmd_run)

  from jaxnas.zc import ZCConfig
  pz = sub.add_parser('zc', help='zero-cost NAS: score sampled architectures with a proxy',
                      description='Samples architectures, scores each with a zero-cost proxy '
                                  '(ntk, zen, bn, zen_f, synflow, snip, grasp, grad_norm, naswot) '
                                  'and keeps the best. --via supernet scores NAS-Bench-201 cells '
                                  'through the one-hot supernet, vmapped (auto: where exact).')
  add_config_flags(pz, ZCConfig)
  pz.add_argument('--show', type=int, default=10, help='rows of the ranking to print')
  pz.set_defaults(func=_cmd_zc)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.distributed:
      from jaxnas import sharding
      sharding.initialize_distributed()
      if not sharding.is_main_process():  # one process speaks for all
        sys.stdout = open(os.devnull, 'w')
    args.func(args)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f'jaxnas {args.command}: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
