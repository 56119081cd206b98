"""The ``jaxnas`` command line: one table of sub-commands.

Each sub-command is a config class (every field a flag: tyro reads the
dataclass, :mod:`jaxnas.config`), the library function that runs it and the
text that reports its result. jaxnas' own flags (``--distributed``,
``--debug``) come before the command and are argparse's.
Errors a user can cause are one message and a non-zero exit status;
``--debug`` (or ``JAXNAS_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
import textwrap
import types
from typing import Annotated, Any, Callable, NamedTuple

import tyro

from jaxnas import benchmark_table
from jaxnas import config as config_lib
from jaxnas import free, pipeline, search, spaces, train, xla, zc
from jaxnas.checkpoint import Interrupted
from jaxnas.config import Limits


@dataclasses.dataclass(frozen=True)
class ParamsConfig:
  """What ``jaxnas params`` counts (:func:`jaxnas.spaces.count_network_params`)."""
  space: Annotated[str, Limits(choices=lambda: spaces.SPACES)] = 'darts'
  """search space"""
  genotype: str | None = None
  """published name (e.g. DARTS_V2), JSON file, or genotype string"""
  channels: Annotated[int | None, Limits(min=1)] = None
  """initial channels C (None: the space's)"""
  layers: Annotated[int | None, Limits(min=1)] = None
  """cells (darts) or cells per stage (nb201)"""
  classes: Annotated[int, Limits(min=1)] = 10
  """classes of the classifier"""
  supernet: bool = False
  """count the search supernet instead"""

  @config_lib.checked
  def __post_init__(self):
    config_lib.validate(self)


class Command(NamedTuple):
  config: type                                   # the config dataclass; its fields are the flags
  run: Callable[..., Any]                        # (config[, resume=][, progress=][, programs=]) -> result
  report: Callable[[Any, Any], str]              # (result, the config's fields and the extra flags)
  help: str
  description: str = ''
  resumable: bool = False                        # --resume (and --no-progress)
  progress: bool = False                         # --no-progress
  programs: bool = False                         # keeps its traced programs (programs=)
  extra_flags: tuple = ()                        # (name, type, default, help): flags not in the config
  epilog: Callable[[], str] | None = None        # text after the description in --help


def _recipes_epilog() -> str:
  """The recipes (README: Recipes), one line per method, relaxation or space."""
  from jaxnas.search_config import recipe_rows
  lines: dict[str, list[str]] = {}
  for component, flag, value, _, _ in recipe_rows():
    if isinstance(value, bool):
      setting = flag if value else f'--no-{flag[2:]}'
    else:
      setting = f'{flag} {value}'
    lines.setdefault(component, []).append(setting)
  body = '\n'.join(textwrap.fill(f'{c}: {", ".join(v)}', 79, initial_indent='  ',
                                  subsequent_indent='      ', break_on_hyphens=False)
                    for c, v in lines.items())
  return textwrap.fill("recipes: where a method, relaxation or space ran with other settings "
                       "than DARTS', they are its defaults (a flag given wins; an epoch count "
                       'scales with --epochs; README: Recipes):', 79) + '\n' + body


def _files(workdir: str) -> str:
  return ', '.join(sorted(f for f in os.listdir(workdir) if os.path.isfile(os.path.join(workdir, f))))


def _report_params(counts, args) -> str:
  main, aux = counts
  what = 'supernet' if args.supernet else f'network of {args.genotype}'
  lines = [f'{args.space} {what}'] + ([f'auxiliary head: {aux}'] if aux else [])
  return '\n'.join(lines + [str(main)])  # the count last, a plain integer


def _benchmark_line(row) -> list[str]:
  return [f'benchmark table: {benchmark_table.format_row(row)}'] if row else []


def _report_search(result, args) -> str:
  return '\n'.join([f'genotype: {result.genotype}', *_benchmark_line(result.benchmark),
                    f'written to {result.workdir}: {_files(result.workdir)}'])


def _report_free(result, args) -> str:
  lines = [f'genotype: {result.genotype}', *_benchmark_line(result.benchmark),
           f'wall time: {result.seconds:.2f} s (compile included), '
           f'{result.seconds_compiled:.3f} s (the saliency alone, compiled)']
  if args.workdir:
    lines.append(f'written to {args.workdir}: {_files(args.workdir)}')
  return '\n'.join(lines)


def _report_train(result, args) -> str:
  return f'{train.format_report(result.report)}\nwritten to {result.workdir}: {_files(result.workdir)}'


def _report_run(report, args) -> str:
  return (f'{train.format_report(report)}\nsearch {report["search_seconds"]:.1f} s; written to '
          f'{args.workdir}: search/, train/, report.json, report.md')


def _report_zc(result, args) -> str:
  lines = [f'{args.proxy} on {len(result.ranking)} {args.space} architectures (through the '
           f'{result.via}); best first:']
  lines += [f'{rank:4d}  {s:12.5g}  {g}' + (f'  ({benchmark_table.format_row(result.benchmark[rank - 1])})'
                                             if result.benchmark else '')
            for rank, (g, s) in enumerate(result.ranking[:args.show], 1)]
  lines += [f'{result.seconds:.1f} s in all (compile included), {result.archs_per_second:.1f} '
            f'architectures per second compiled; ranking.json and genotype.json in {args.workdir}',
            f'best: {result.best}', *_benchmark_line(result.benchmark and result.benchmark[0])]
  return '\n'.join(lines)


COMMANDS: dict[str, Command] = {
    'params': Command(
        ParamsConfig, lambda c: spaces.count_network_params(**config_lib.to_json(c)),
        _report_params, 'count the parameters of a network or supernet',
        'Prints the parameter count (the auxiliary head counted apart, as quark0/darts does) '
        'on the last line as a plain integer. Nothing is compiled.'),
    'search': Command(
        search.SearchConfig, search.search, _report_search, 'search an architecture (DARTS family)',
        "Bilevel architecture search. Every config field is a flag; the defaults are DARTS' "
        '(network size and epochs scaled down for the embedded digits data set), except where a '
        "method, relaxation or space has its own recipe (below).",
        resumable=True, programs=True, epilog=_recipes_epilog),
    'free': Command(
        free.FreeConfig, free.free, _report_free,
        'FreeDARTS: a genotype from α saliencies at initialisation',
        "Training-free search: SNIP / GraSP / SynFlow saliency of the raw α of the supernet at "
        "initialisation, then the space's derive rule.", programs=True),
    'train': Command(
        train.TrainConfig, train.train, _report_train,
        "train a genotype's network from scratch (evaluation)",
        'Evaluation training with the DARTS recipe (darts) or the NAS-Bench-201 recipe (nb201); '
        'fields left unset are resolved by space and data set. Ends with a report.',
        resumable=True, programs=True),
    'run': Command(
        pipeline.RunConfig, pipeline.run, _report_run,
        'search, derive, train and report in one resumable run',
        'The search flags as for jaxnas search, the evaluation flags as --train.*; stages go to '
        'WORKDIR/search and WORKDIR/train, the report to WORKDIR/report.json and report.md.',
        resumable=True, programs=True, epilog=_recipes_epilog),
    'zc': Command(
        zc.ZCConfig, zc.zc, _report_zc, 'zero-cost NAS: rank architectures by a proxy',
        'Samples architectures (or reads --candidates), scores each with a zero-cost proxy and '
        'keeps the best. '
        '--via supernet scores NAS-Bench-201 cells through the one-hot supernet, vmapped '
        '(auto: where exact).',
        progress=True,
        extra_flags=(('show', int, 10, 'rows of the ranking to print'),)),
}


def command_flags(name: str) -> Callable[..., dict]:
  """The function whose keyword parameters tyro makes command ``name``'s flags: its
  config's fields (flat) and the command's own flags; it returns them as a dict."""
  cmd = COMMANDS[name]
  extra = list(cmd.extra_flags)
  if cmd.resumable:
    extra.append(('resume', bool, False, 'continue the run in --workdir'))
  if cmd.resumable or cmd.progress:
    extra.append(('progress', bool, True, 'show a progress bar'))
  params = [('config', Annotated[cmd.config, config_lib.FLAT], inspect.Parameter.empty)]
  params += [(flag, Annotated[kind, tyro.conf.arg(help=text)], default)
             for flag, kind, default, text in extra]

  def flags(**values) -> dict:   # (a named function: tyro does not read a lambda's signature)
    return values
  return config_lib.keyword_function(flags, params)


def top_parser() -> argparse.ArgumentParser:
  """jaxnas' own flags, the command and the command's flags (unparsed: :func:`parse_command`)."""
  p = argparse.ArgumentParser(
      prog='jaxnas', description='Differentiable neural architecture search in JAX.',
      epilog='commands:\n' + '\n'.join(f'  {n:8s}{c.help}' for n, c in COMMANDS.items())
             + '\n\njaxnas COMMAND --help shows its flags.',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--distributed', action='store_true',
                 help='multi-host: jax.distributed.initialize from JAX_COORDINATOR_ADDRESS, '
                      'JAX_NUM_PROCESSES, JAX_PROCESS_ID (auto-detected on TPU, SLURM, Open MPI); '
                      'give it before the command, on every host')
  p.add_argument('--debug', action='store_true',
                 help='show the traceback of an error (also JAXNAS_DEBUG=1)')
  p.add_argument('command', choices=COMMANDS, metavar='COMMAND', help=', '.join(COMMANDS))
  p.add_argument('flags', nargs=argparse.REMAINDER, help="the command's flags")
  return p


def parse_command(args: argparse.Namespace) -> dict:
  """The command's config (``'config'``) and its own flags, parsed by tyro."""
  cmd = COMMANDS[args.command]
  description = textwrap.fill(f'{cmd.help[0].upper()}{cmd.help[1:]}. {cmd.description}', 79)
  if cmd.epilog:
    description += '\n\n' + cmd.epilog()
  return config_lib.parse(command_flags(args.command), args.flags,
                          prog=f'jaxnas {args.command}', description=description)


# Errors a user causes (bad values, missing or corrupt files, a diverged run): the message
# says what to do. Anything else is a defect of jaxnas, reported as one too.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def main(argv=None) -> int:
  args = top_parser().parse_args(sys.argv[1:] if argv is None else argv)
  debug = args.debug or os.environ.get('JAXNAS_DEBUG', '') not in ('', '0')
  cmd = COMMANDS[args.command]
  try:
    xla.configure()  # before JAX starts its backend (building a config reads the devices)
    if args.distributed:
      from jaxnas import sharding
      sharding.initialize_distributed()
      if not sharding.is_main_process():  # one process speaks for all
        sys.stdout = open(os.devnull, 'w')
    flags = parse_command(args)
    config = flags.pop('config')
    kwargs = {'resume': flags.pop('resume')} if cmd.resumable else {}
    if args.command != 'params':
      cache = xla.enable_compilation_cache()
      if cmd.programs:   # traced programs too: a second run neither traces nor lowers
        kwargs['programs'] = xla.program_dir(cache)
    if cmd.resumable or cmd.progress:
      kwargs['progress'] = flags.pop('progress')
    shown = types.SimpleNamespace(**{f.name: getattr(config, f.name)
                                     for f in dataclasses.fields(config)}, **flags)
    print(cmd.report(cmd.run(config, **kwargs), shown))
  except Interrupted as e:
    print(f'jaxnas {args.command}: {e}', file=sys.stderr)
    return 130
  except KeyboardInterrupt:
    print(f'jaxnas {args.command}: interrupted', file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001  (every error ends as a message; --debug re-raises)
    if debug:
      raise
    if args.distributed and type(e).__name__ == 'JaxRuntimeError':
      # a collective whose peer is gone (Gloo: "Connection reset by peer"; NCCL alike)
      print(f'jaxnas {args.command}: error: a collective across the processes failed '
            f'({str(e).splitlines()[0]}): another process has probably stopped, and its log '
            f'says why. The checkpoints in the workdir are whole: start every process again '
            f'with --resume.', file=sys.stderr)
      return 2
    print(f'jaxnas {args.command}: error: {e}', file=sys.stderr)
    if not isinstance(e, USER_ERRORS):
      print(f'({type(e).__name__} inside jaxnas: run again with --debug for the traceback, and '
            f'report it with that output)', file=sys.stderr)
      return 1
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
