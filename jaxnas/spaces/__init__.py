"""Search spaces by name: ``get_space('darts')``, ``get_space('nb201')``."""
import functools

import jax
import jax.numpy as jnp

from jaxnas.spaces import darts, nb201
from jaxnas.spaces.base import SearchSpace, count_params

SPACES: dict[str, SearchSpace] = {'darts': darts.SPACE, 'nb201': nb201.SPACE}


def get_space(name: str) -> SearchSpace:
  try:
    return SPACES[name]
  except KeyError:
    raise ValueError(f'unknown search space {name!r}; known spaces: {", ".join(SPACES)}') from None


def count_network_params(space: str, genotype=None, channels: int | None = None,
                         layers: int | None = None, classes: int = 10, supernet: bool = False,
                         image_size: int = 32) -> tuple[int, int]:
  """(parameters without the auxiliary head, auxiliary head parameters), counted as
  quark0/darts does, from ``jax.eval_shape`` of ``init`` (nothing is compiled)."""
  sp = get_space(space)
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
  aux = count_params(params.get('auxiliary_head', {}))
  return count_params(params) - aux, aux


__all__ = ['SPACES', 'SearchSpace', 'count_network_params', 'count_params', 'darts', 'get_space',
           'nb201']
