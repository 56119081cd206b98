"""Relaxations: architecture parameters α -> mixing weights of the candidate ops.

A relaxation is a small record of pure functions and switches:

* ``mix(α) -> w`` with ``w.shape == α.shape`` (edges, ops): the weights of the
  ops on each edge of the supernet;
* ``regularizer(α_list) -> scalar``: a term added to the architecture loss,
  over all the cells' α arrays at once (zero for plain DARTS). The search
  scales it by :func:`regularizer_weight` (a schedule over the epochs) and adds
  its gradient to every estimator's hypergradient: it depends on α alone, so
  its total derivative is its partial one;
* ``partial_channels`` K: the mixed op sees 1/K of the channels (PC-DARTS);
* ``edge_normalization``: a second architecture array β per cell (one entry
  per edge, stored in α as ``'<cell>_edges'``) whose softmax over each
  node's incoming edges scales the edges (PC-DARTS).

Adding a relaxation is one entry in :data:`RELAXATIONS`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
EDGES_SUFFIX = '_edges'


class Relaxation(NamedTuple):
  name: str
  mix: Callable[[Array], Array]
  regularizer: Callable[[Sequence[Array]], Array] | None = None
  partial_channels: int = 1
  edge_normalization: bool = False


def softmax_mix(alpha: Array) -> Array:
  """DARTS: ``w_{e,o} = exp(α_{e,o}) / Σ_o' exp(α_{e,o'})``."""
  return jax.nn.softmax(alpha, axis=-1)


def raw_mix(alpha: Array) -> Array:
  """FreeDARTS: the raw α are the op weights, ``w = α``."""
  return alpha


def sigmoid_mix(alpha: Array) -> Array:
  """Fair DARTS: independent weights ``w_{e,o} = σ(α_{e,o})`` (ops do not compete)."""
  return jax.nn.sigmoid(alpha)


def zero_one_loss(alphas: Sequence[Array]) -> Array:
  """Fair DARTS' zero-one loss ``−mean((σ(α) − ½)²)`` over every entry of every
  cell: pushes each σ(α) towards 0 or 1."""
  s = jnp.concatenate([jax.nn.sigmoid(a).ravel() for a in alphas])
  return -jnp.mean((s - 0.5) ** 2)


def beta_decay_loss(alphas: Sequence[Array]) -> Array:
  """β-DARTS' β-decay ``mean_e log Σ_o exp(α_{e,o})`` over every edge of every
  cell: its gradient is the softmax, so it pulls the α of each edge towards
  each other and keeps them small."""
  return jnp.mean(jnp.concatenate([jax.nn.logsumexp(a, axis=-1) for a in alphas]))


RELAXATIONS: dict[str, Relaxation] = {
    'softmax': Relaxation('softmax', softmax_mix),
    'raw': Relaxation('raw', raw_mix),
    'pc': Relaxation('pc', softmax_mix, partial_channels=4, edge_normalization=True),
    'fair': Relaxation('fair', sigmoid_mix, zero_one_loss),
    'beta': Relaxation('beta', softmax_mix, beta_decay_loss),
}


def get_relaxation(name: str | Relaxation) -> Relaxation:
  if isinstance(name, Relaxation):
    return name
  try:
    return RELAXATIONS[name]
  except KeyError:
    raise ValueError(f'unknown relaxation {name!r}; known relaxations: '
                     f'{", ".join(RELAXATIONS)}') from None


def cell_keys(alpha) -> list[str]:
  """The α arrays of the cells (not PC-DARTS' edge arrays)."""
  return sorted(k for k in alpha if not k.endswith(EDGES_SUFFIX))


def alpha_shapes(relaxation: str | Relaxation, space_shapes) -> dict[str, tuple[int, ...]]:
  """The space's α shapes, plus ``'<cell>_edges': (edges,)`` under edge normalisation."""
  shapes = {k: tuple(v) for k, v in space_shapes.items()}
  if get_relaxation(relaxation).edge_normalization:
    shapes.update({k + EDGES_SUFFIX: (v[0],) for k, v in space_shapes.items()})
  return shapes


def mix(relaxation: str | Relaxation, alpha) -> dict[str, Array]:
  """Op mixing weights of every cell α array (edge arrays left out)."""
  r = get_relaxation(relaxation)
  return {k: r.mix(alpha[k]) for k in cell_keys(alpha)}


def edge_groups(n_edges: int, n_in: int) -> list[int]:
  """Sizes of the groups of incoming edges of each node, in α row order:
  n_in, n_in + 1, ... (DARTS: 2, 3, 4, 5; NAS-Bench-201: 1, 2, 3)."""
  sizes, total = [], 0
  while total < n_edges:
    sizes.append(n_in + len(sizes))
    total += sizes[-1]
  if total != n_edges:
    raise ValueError(f'{n_edges} edges do not split into nodes with {n_in} inputs')
  return sizes


def edge_weights(beta: Array, n_in: int) -> Array:
  """PC-DARTS' edge normalisation: ``softmax(β)`` within each node's incoming edges."""
  parts, start = [], 0
  for size in edge_groups(beta.shape[0], n_in):
    parts.append(jax.nn.softmax(beta[start:start + size]))
    start += size
  return jnp.concatenate(parts)


def edge_strength(relaxation: str | Relaxation, alpha, n_in: int) -> dict[str, np.ndarray] | None:
  """Per-edge factors for the derive rule (PC-DARTS), or None."""
  if not get_relaxation(relaxation).edge_normalization:
    return None
  return {k: np.asarray(edge_weights(jnp.asarray(alpha[k + EDGES_SUFFIX]), n_in))
          for k in cell_keys(alpha)}


def regularizer(relaxation: str | Relaxation, alpha) -> Array:
  """The relaxation's regulariser of the cells' α (0 when it has none)."""
  r = get_relaxation(relaxation)
  if r.regularizer is None:
    return jnp.zeros(())
  return r.regularizer([alpha[k] for k in cell_keys(alpha)])


def regularizer_weight(start: float, end: float, epoch, epochs: int):
  """Linear ramp over the epochs: ``start + (end − start)·epoch/(epochs − 1)``
  (β-DARTS raises its weight this way; constant when start == end)."""
  return start + (end - start) * epoch / max(epochs - 1, 1)
