"""The ``jaxnas`` command line: ``jaxnas params ...`` (more subcommands as they land)."""
from __future__ import annotations

import argparse
import functools
import sys

import jaxnas  # noqa: F401  (applies the XLA flags before JAX starts)
from jaxnas import spaces


def count_network_params(space: str, genotype=None, channels: int | None = None,
                         layers: int | None = None, classes: int = 10, supernet: bool = False,
                         image_size: int = 32) -> tuple[int, int]:
  """(parameters without the auxiliary head, auxiliary head parameters), without compiling."""
  import jax
  import jax.numpy as jnp
  sp = spaces.get_space(space)
  x = jnp.zeros((1, image_size, image_size, 3))
  if supernet:
    model = sp.supernet(channels or sp.defaults['channels'], layers or sp.defaults['layers'], classes)
    args = (sp.init_alpha(jax.random.key(0)),)
  else:
    if genotype is None:
      raise ValueError('give --genotype (a published name, a JSON file or a genotype string), '
                       'or --supernet')
    model = sp.network(sp.load_genotype(genotype), channels or sp.defaults['eval_channels'],
                       layers or sp.defaults['eval_layers'], classes)
    args = ()
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x, *args)
  params = shapes['params']
  aux = spaces.count_params(params.get('auxiliary_head', {}))
  return spaces.count_params(params) - aux, aux


def _cmd_params(args) -> None:
  main, aux = count_network_params(args.space, args.genotype, args.channels, args.layers,
                                   args.classes, args.supernet)
  what = 'supernet' if args.supernet else f'network of {args.genotype}'
  print(f'{args.space} {what}')
  if aux:
    print(f'auxiliary head: {aux}')
  print(main)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='jaxnas', description='Differentiable neural architecture search in JAX.')
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
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.func(args)
  except ValueError as e:
    print(f'jaxnas {args.command}: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
