"""Relaxations: architecture parameters α -> mixing weights of the candidate ops.

A relaxation is a pair of pure functions on one α array of shape
(edges, ops):

* ``mix(α) -> w`` with ``w.shape == α.shape``: the weights of the ops on each
  edge of the supernet;
* ``regularizer(α) -> scalar``: a term added to the architecture loss (zero
  for plain DARTS).

Adding a relaxation is one entry in :data:`RELAXATIONS`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Relaxation(NamedTuple):
  name: str
  mix: Callable[[Array], Array]
  regularizer: Callable[[Array], Array]


def _zero(alpha: Array) -> Array:
  return jnp.zeros((), alpha.dtype)


def softmax_mix(alpha: Array) -> Array:
  """DARTS: ``w_{e,o} = exp(α_{e,o}) / Σ_o' exp(α_{e,o'})``."""
  return jax.nn.softmax(alpha, axis=-1)


def raw_mix(alpha: Array) -> Array:
  """FreeDARTS: the raw α are the op weights, ``w = α``."""
  return alpha


RELAXATIONS: dict[str, Relaxation] = {
    'softmax': Relaxation('softmax', softmax_mix, _zero),
    'raw': Relaxation('raw', raw_mix, _zero),
}


def get_relaxation(name: str) -> Relaxation:
  try:
    return RELAXATIONS[name]
  except KeyError:
    raise ValueError(f'unknown relaxation {name!r}; known relaxations: '
                     f'{", ".join(RELAXATIONS)}') from None


def mix(relaxation: str | Relaxation, alpha):
  """Mixing weights of every α array in a pytree."""
  r = get_relaxation(relaxation) if isinstance(relaxation, str) else relaxation
  return jax.tree_util.tree_map(r.mix, alpha)


def regularizer(relaxation: str | Relaxation, alpha) -> Array:
  """Sum of the relaxation's regulariser over every α array in a pytree."""
  r = get_relaxation(relaxation) if isinstance(relaxation, str) else relaxation
  return sum(r.regularizer(a) for a in jax.tree_util.tree_leaves(alpha))
