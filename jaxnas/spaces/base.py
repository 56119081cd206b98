"""What every search space provides, and the helpers they share.

A space is its cells and networks only. What a feature needs to know about a
space lives with that feature, keyed by the space's name: the search recipe in
:mod:`jaxnas.search_config`, the evaluation recipe in :mod:`jaxnas.train_config`,
FreeDARTS' notebook conventions in :mod:`jaxnas.free`, whether the one-hot
supernet is exact for the proxies in :mod:`jaxnas.zc`, the compile options of
programs run once in :mod:`jaxnas.xla`. A new space is its module, one line in
``jaxnas.spaces.SPACES`` and its test.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxnas import kernels, ops, relax, xla
from jaxnas.relax import Relaxation

# the relaxation a space's methods assume where none is given
SOFTMAX = relax.make('softmax')


class CellDrawing(NamedTuple):
  """What :func:`jaxnas.plot.draw_cell` draws of one cell: input, intermediate and output
  node labels, and the kept edges as (source label, destination label, op)."""
  inputs: list[str]
  nodes: list[str]
  outputs: list[str]
  edges: list[tuple[str, str, str]]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A cell search space: its cells, its networks and its genotypes.

  Attributes:
    name: registry name; ``title`` its name in pictures.
    primitives: candidate op names, in α column order.
    alpha_shapes: α array name -> (edges, ops); the names are the cell types.
    build_supernet: ``(channels, layers, num_classes, relaxation, **kw) -> nn.Module``,
      applied as ``apply(variables, x, alpha, train=...)`` (:meth:`supernet`).
    network: ``(genotype, channels, layers, num_classes, **kw) -> nn.Module``,
      the discrete network, applied as ``apply(variables, x, train=...)``.
    derive: (mixing weights, edge strength, threshold, primitives) -> genotype,
      ``primitives`` the weights' columns (the relaxation's ops).
    genotype_from_text / genotype_from_json: parse a genotype.
    genotypes: published genotypes by name.
    defaults: search (``channels``, ``layers``) and evaluation (``eval_channels``,
      ``eval_layers``) sizes on real data.
    small: the sizes on the embedded 8x8 digits (``channels``, ``layers``).
    cell_inputs: input states of a cell (DARTS 2, NAS-Bench-201 1): node j has
      ``cell_inputs + j`` incoming edges.
    edge_labels: a label per α row ("c_{k-1}→0", "2←1").
    sample: a uniformly random architecture from a NumPy generator.
    onehot: the α that selects a genotype in the raw-α supernet.
    num_architectures: how many architectures the space holds (None: too many to list).
    drawing: ``(genotype, cell) -> CellDrawing``.
    forward_over_reverse: ``jax.jvp`` passes the supernet's gradients on the CPU
      kernels (their VJP rules, traced under :func:`jaxnas.kernels.forward_over_reverse`,
      call no custom VJP): second-order products take that way, cheaper in memory
      than reverse over reverse (on XLA's kernels every space does:
      :func:`forward_over_reverse`). Both spaces of jaxnas do.
    network_options: keyword options the discrete network takes (``auxiliary``).
  """
  name: str
  title: str
  primitives: tuple[str, ...]
  alpha_shapes: Mapping[str, tuple[int, int]]
  build_supernet: Callable[..., nn.Module]
  network: Callable[..., nn.Module]
  derive: Callable[..., Any]
  genotype_from_text: Callable[[str], Any]
  genotype_from_json: Callable[[Any], Any]
  genotypes: Mapping[str, Any]
  defaults: Mapping[str, int]
  small: Mapping[str, int]
  cell_inputs: int
  edge_labels: tuple[str, ...]
  sample: Callable[[np.random.Generator], Any]
  onehot: Callable[[Any], dict]
  num_architectures: int | None
  drawing: Callable[[Any, str], CellDrawing]
  forward_over_reverse: bool = False
  network_options: tuple[str, ...] = ()

  def sizes(self, dataset: str, evaluation: bool = False) -> dict[str, int]:
    """``channels`` and ``layers`` on the data set named ``dataset``: the small sizes on
    the embedded 8x8 digits, else the search (or ``evaluation``) sizes."""
    if dataset == 'digits':
      return dict(self.small)
    prefix = 'eval_' if evaluation else ''
    return {k: self.defaults[prefix + k] for k in ('channels', 'layers')}

  @property
  def cells(self) -> tuple[str, ...]:
    """The cell types, in α's key order."""
    return tuple(sorted(self.alpha_shapes))

  def supernet(self, channels: int | None = None, layers: int | None = None, num_classes: int = 10,
               relaxation: Relaxation = SOFTMAX, **kw) -> nn.Module:
    """The search supernet with ``relaxation`` over the relaxation's ops (:meth:`ops`)."""
    return self.build_supernet(channels or self.defaults['channels'],
                               layers or self.defaults['layers'], num_classes,
                               relaxation, primitives=self.ops(relaxation), **kw)

  def ops(self, relaxation: Relaxation = SOFTMAX) -> tuple[str, ...]:
    """The candidate ops under ``relaxation``, in α column order (Fair DARTS drops ``none``)."""
    return relaxation.ops(self.primitives)

  def shapes(self, relaxation: Relaxation = SOFTMAX) -> dict[str, tuple[int, ...]]:
    """α array name -> shape: one column per op of :meth:`ops`, plus what the relaxation
    adds (PC-DARTS' edge arrays)."""
    return relaxation.alpha_shapes(self.alpha_shapes, self.primitives)

  def derive_genotype(self, alpha, relaxation: Relaxation = SOFTMAX):
    """The genotype of α under ``relaxation``: its derive weights, edge strengths
    (PC-DARTS), threshold (Fair DARTS) and ops."""
    self.check_alpha(alpha, relaxation)
    return self.derive(relaxation.derive_weights(alpha),
                       relaxation.edge_strength(alpha, self.cell_inputs),
                       relaxation.threshold, self.ops(relaxation))

  def sample_distinct(self, k: int, seed: int = 0) -> list:
    """``k`` distinct random architectures."""
    if k < 1:
      raise ValueError(f'samples must be >= 1, got {k}')
    if self.num_architectures is not None and k > self.num_architectures:
      raise ValueError(f'{self.title} has {self.num_architectures} architectures, not {k}')
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    while len(out) < k:
      g = self.sample(rng)
      if str(g) not in seen:
        seen.add(str(g))
        out.append(g)
    return out

  def init_alpha(self, key: jax.Array, scale: float = 1e-3,
                 relaxation: Relaxation = SOFTMAX) -> dict[str, jax.Array]:
    """α = scale · N(0, 1) for every α array (DARTS uses scale 1e-3; PC-DARTS its
    edge arrays the same way)."""
    shapes = self.shapes(relaxation)
    keys = jax.random.split(key, len(shapes))
    return {k: scale * jax.random.normal(kk, shape)
            for kk, (k, shape) in zip(keys, sorted(shapes.items()))}

  def check_alpha(self, alpha: Mapping[str, Any], relaxation: Relaxation = SOFTMAX) -> None:
    """Raises ValueError unless ``alpha`` has exactly this space's arrays and shapes."""
    shapes = self.shapes(relaxation)
    if not isinstance(alpha, Mapping) or set(alpha) != set(shapes):
      got = sorted(alpha) if isinstance(alpha, Mapping) else type(alpha).__name__
      raise ValueError(f'{self.name} α must be a dict with keys {sorted(shapes)}, '
                       f'got {got}')
    for k, shape in shapes.items():
      if tuple(np.shape(alpha[k])) != tuple(shape):
        raise ValueError(f'{self.name} α[{k!r}] must have shape {tuple(shape)}, '
                         f'got {tuple(np.shape(alpha[k]))}')

  def load_genotype(self, spec: Any):
    """A genotype from a published name, a JSON file, a text file, a text form, or a dict."""
    if isinstance(spec, Mapping):
      return self.genotype_from_json(spec)
    if not isinstance(spec, str):
      return spec
    if spec in self.genotypes:
      return self.genotypes[spec]
    if os.path.isfile(spec):
      with open(spec) as f:
        text = f.read()
      try:
        return self.genotype_from_json(json.loads(text))
      except json.JSONDecodeError:
        return self.genotype_from_text(text.strip())
    if spec.strip().startswith('{'):
      return self.genotype_from_json(json.loads(spec))
    try:
      return self.genotype_from_text(spec.strip())
    except ValueError as e:
      raise ValueError(f'{spec!r} is not a known {self.name} genotype name '
                       f'({", ".join(self.genotypes)}), nor a file, nor a valid genotype: {e}') from None


def forward_over_reverse(space: SearchSpace) -> bool:
  """Whether ``jax.jvp`` passes the supernet's gradients with the kernels in use: always
  on XLA's own (no custom VJP), else where the space says (``forward_over_reverse``)."""
  return space.forward_over_reverse or kernels.kernel_path() == 'xla'


def init_variables(model: nn.Module, key: jax.Array, x: jax.Array, *args,
                   programs: str | None = None) -> dict:
  """Variables of ``model`` for inputs shaped like ``x``, drawn in NumPy.

  The shapes come from ``jax.eval_shape(model.init)`` (a trace, no compile;
  kept on disk in the folder ``programs`` by :func:`jaxnas.xla.persistent_eval_shape`);
  the values from the distributions of the modules' own initialisers
  (PyTorch's: U(±1/sqrt(fan_in)) for weights and conv/linear biases, BN
  scale 1 and bias 0, running mean 0 and variance 1), with fan-in read off
  each parameter's name by ``ops.FAN_IN``. Compiling ``model.init`` instead
  takes minutes for a supernet whose cells sit under ``scan``.
  """
  rngs = {'params': key, 'dropout': key}
  # (a module's repr is its configuration)
  shapes = xla.persistent_eval_shape(functools.partial(model.init, train=False),
                                     ['init', type(model).__module__, repr(model)], rngs, x[:1],
                                     *args, programs=programs)
  seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                    else key).ravel()
  rng = np.random.default_rng(seed.astype(np.uint64))
  # only the variables: `init` also returns what the network sows (ops.FEATURES, ...)
  flat = traverse_util.flatten_dict({k: v for k, v in flax.core.unfreeze(shapes).items()
                                     if k in ('params', 'batch_stats')})
  out = {}
  for path in sorted(flat):
    leaf, name = flat[path], path[-1]
    shape, dtype = leaf.shape, leaf.dtype
    if path[0] == 'batch_stats':
      value = np.ones(shape) if name == 'var' else np.zeros(shape)
    elif name in ops.FAN_IN:
      bound = 1.0 / np.sqrt(ops.FAN_IN[name](shape))
      value = rng.uniform(-bound, bound, shape)
    elif name == 'bias' and (sib := [k for k in ops.FAN_IN if path[:-1] + (k,) in flat]):
      bound = 1.0 / np.sqrt(ops.FAN_IN[sib[0]](flat[path[:-1] + (sib[0],)].shape))
      value = rng.uniform(-bound, bound, shape)
    elif name == 'scale':
      value = np.ones(shape)
    elif name == 'bias':
      value = np.zeros(shape)
    else:
      raise ValueError(f'no initialisation rule for variable {"/".join(path)}')
    out[path] = jnp.asarray(value, dtype)
  return traverse_util.unflatten_dict(out)


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(np.prod(a.shape, dtype=np.int64) for a in jax.tree_util.tree_leaves(tree)))


def check_op(name: str, known: tuple[str, ...], space: str) -> None:
  if name not in known:
    raise ValueError(f'operation {name!r} is not in the {space} space; known: {", ".join(known)}')
