"""What every search space provides, and the helpers they share."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxnas import ops, xla


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A cell search space.

  Attributes:
    name: registry name.
    primitives: candidate op names, in α column order.
    alpha_shapes: α array name -> (edges, ops).
    supernet: ``(channels, layers, num_classes, relaxation, **kw) -> nn.Module``;
      the module is applied as ``apply(variables, x, alpha, train=...)``.
    network: ``(genotype, channels, layers, num_classes, **kw) -> nn.Module``,
      the discrete network, applied as ``apply(variables, x, train=...)``.
    derive: mixing weights (α array name -> (edges, ops)) -> genotype.
    genotype_from_text: parses the space's text form of a genotype.
    genotype_from_json: inverse of ``genotype.to_json()``.
    genotypes: published genotypes by name.
    defaults: default supernet/network sizes: ``channels`` and ``layers``.
    cell_inputs: input states of a cell (DARTS 2, NAS-Bench-201 1): node j
      has ``cell_inputs + j`` incoming edges.
  """
  name: str
  primitives: tuple[str, ...]
  alpha_shapes: Mapping[str, tuple[int, int]]
  supernet: Callable[..., nn.Module]
  network: Callable[..., nn.Module]
  derive: Callable[[Mapping[str, Any]], Any]
  genotype_from_text: Callable[[str], Any]
  genotype_from_json: Callable[[Any], Any]
  genotypes: Mapping[str, Any]
  defaults: Mapping[str, int]
  cell_inputs: int = 2

  def shapes(self, relaxation: str = 'softmax') -> dict[str, tuple[int, ...]]:
    """α array name -> shape: the space's, plus what the relaxation adds (PC-DARTS' edge arrays)."""
    from jaxnas import relax
    return relax.alpha_shapes(relaxation, self.alpha_shapes)

  def init_alpha(self, key: jax.Array, scale: float = 1e-3,
                 relaxation: str = 'softmax') -> dict[str, jax.Array]:
    """α = scale · N(0, 1) for every α array (DARTS uses scale 1e-3; PC-DARTS its
    edge arrays the same way)."""
    shapes = self.shapes(relaxation)
    keys = jax.random.split(key, len(shapes))
    return {k: scale * jax.random.normal(kk, shape)
            for kk, (k, shape) in zip(keys, sorted(shapes.items()))}

  def check_alpha(self, alpha: Mapping[str, Any], relaxation: str = 'softmax') -> None:
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


def init_variables(model: nn.Module, key: jax.Array, x: jax.Array, *args) -> dict:
  """Variables of ``model`` for inputs shaped like ``x``, drawn in NumPy.

  The shapes come from ``jax.eval_shape(model.init)`` (a trace, no compile;
  kept on disk by :func:`jaxnas.xla.persistent_eval_shape`);
  the values from the distributions of the modules' own initialisers
  (PyTorch's: U(±1/sqrt(fan_in)) for weights and conv/linear biases, BN
  scale 1 and bias 0, running mean 0 and variance 1), with fan-in read off
  each parameter's name by ``ops.FAN_IN``. Compiling ``model.init`` instead
  takes minutes for a supernet whose cells sit under ``scan``.
  """
  rngs = {'params': key, 'dropout': key}
  # (kept on disk with the program cache on; a module's repr is its configuration)
  shapes = xla.persistent_eval_shape(functools.partial(model.init, train=False),
                                     ['init', type(model).__module__, repr(model)], rngs, x[:1],
                                     *args)
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
