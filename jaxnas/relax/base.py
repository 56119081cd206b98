"""What a relaxation is: α -> mixing weights of the candidate ops, and what comes with it.

A :class:`Relaxation` is a record of pure functions and switches, made by its
factory (:func:`jaxnas.relax.make`):

* ``mix(a, key, progress) -> w``, ``w.shape == a.shape`` (edges, ops): the
  weights of the ops on each edge of one cell. ``key`` is a PRNG key for the
  stochastic relaxations (None: their deterministic weights), ``progress`` the
  fraction of the search done, in [0, 1] (for schedules such as GDAS'
  temperature; None: the end of the search);
* ``derive(a) -> w``: the weights the derive rule reads (default: ``mix``
  without a key, at the end of the search);
* ``regularizer(α_list) -> scalar``: a term added to the architecture loss,
  over all the cells' α arrays at once, scaled by ``weight(epoch, epochs)``.
  The search adds its gradient to every estimator's hypergradient: it depends
  on α alone, so its total derivative is its partial one;
* ``partial_channels`` K: the mixed op sees 1/K of the channels (PC-DARTS);
* ``edge_normalization``: a second architecture array β per cell (one entry
  per edge, stored in α as ``'<cell>_edges'``) whose softmax over each
  node's incoming edges scales the edges (PC-DARTS);
* ``threshold``: the derive rule keeps an op only where its weight reaches it
  (Fair DARTS);
* ``stochastic``: ``mix`` draws from its key;
* ``excluded_ops``: ops of the space the relaxation leaves out (Fair DARTS: ``none``);
* ``hard``: the supernet's edges run only the op of their largest weight
  (:class:`jaxnas.spaces.cells.SelectedOp`), for weights one-hot in value: GDAS'
  samples, zero-cost scoring's one-hot α.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
EDGES_SUFFIX = '_edges'


def no_weight(epoch, epochs) -> float:
  return 0.0


class Relaxation(NamedTuple):
  name: str
  mix: Callable[[Array, Array | None, Array | None], Array]
  options: tuple[tuple[str, Any], ...] = ()
  regularizer: Callable[[Sequence[Array]], Array] | None = None
  weight: Callable[[Any, int], Any] = no_weight
  partial_channels: int = 1
  edge_normalization: bool = False
  threshold: float | None = None
  stochastic: bool = False
  derive_fn: Callable[[Array], Array] | None = None
  excluded_ops: tuple[str, ...] = ()
  hard: bool = False

  def ops(self, primitives: Sequence[str]) -> tuple[str, ...]:
    """The candidate ops of a space under this relaxation (α's columns)."""
    return tuple(p for p in primitives if p not in self.excluded_ops)

  def __repr__(self) -> str:  # stable across processes: part of program-cache keys
    return f'Relaxation({self.name}, {dict(self.options)}{", hard" if self.hard else ""})'

  def alpha_shapes(self, space_shapes, primitives: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The space's α shapes (one column per op of :meth:`ops`), plus
    ``'<cell>_edges': (edges,)`` under edge normalisation."""
    n_ops = len(self.ops(primitives))
    shapes = {k: (v[0], n_ops) for k, v in space_shapes.items()}
    if self.edge_normalization:
      shapes.update({k + EDGES_SUFFIX: (v[0],) for k, v in space_shapes.items()})
    return shapes

  def mix_all(self, alpha, key=None, progress=None) -> dict[str, Array]:
    """Op mixing weights of every cell α array (edge arrays left out); one key per cell."""
    keys = cell_keys(alpha)
    subkeys = [None] * len(keys) if key is None else list(jax.random.split(key, len(keys)))
    return {k: self.mix(alpha[k], sk, progress) for k, sk in zip(keys, subkeys)}

  def derive_weights(self, alpha) -> dict[str, np.ndarray]:
    """The weights the derive rule reads, as NumPy arrays."""
    fn = self.derive_fn or (lambda a: self.mix(a, None, None))
    return {k: np.asarray(fn(jnp.asarray(alpha[k]))) for k in cell_keys(alpha)}

  def edge_strength(self, alpha, n_in: int) -> dict[str, np.ndarray] | None:
    """Per-edge factors for the derive rule (PC-DARTS), or None."""
    if not self.edge_normalization:
      return None
    return {k: np.asarray(edge_weights(jnp.asarray(alpha[k + EDGES_SUFFIX]), n_in))
            for k in cell_keys(alpha)}

  def edge_weights(self, alpha, n_in: int) -> dict[str, Array | None]:
    """PC-DARTS' per-edge scales of every cell (None without edge normalisation)."""
    return {k: edge_weights(alpha[k + EDGES_SUFFIX], n_in) if self.edge_normalization else None
            for k in cell_keys(alpha)}

  def regularize(self, alpha) -> Array:
    """The regulariser of the cells' α (0 when there is none)."""
    if self.regularizer is None:
      return jnp.zeros(())
    return self.regularizer([alpha[k] for k in cell_keys(alpha)])


def cell_keys(alpha) -> list[str]:
  """The α arrays of the cells (not PC-DARTS' edge arrays)."""
  return sorted(k for k in alpha if not k.endswith(EDGES_SUFFIX))


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


def linear_ramp(start: float, end: float):
  """``weight(epoch, epochs) = start + (end − start)·epoch/(epochs − 1)`` (constant when
  start == end)."""
  def weight(epoch, epochs):
    return start + (end - start) * epoch / jnp.maximum(epochs - 1, 1)
  return weight
