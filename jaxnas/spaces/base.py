"""What every search space provides, and the helpers they share."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np


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

  def init_alpha(self, key: jax.Array, scale: float = 1e-3) -> dict[str, jax.Array]:
    """α = scale · N(0, 1) for every α array (DARTS uses scale 1e-3)."""
    keys = jax.random.split(key, len(self.alpha_shapes))
    return {k: scale * jax.random.normal(kk, shape)
            for kk, (k, shape) in zip(keys, sorted(self.alpha_shapes.items()))}

  def check_alpha(self, alpha: Mapping[str, Any]) -> None:
    """Raises ValueError unless ``alpha`` has exactly this space's arrays and shapes."""
    if not isinstance(alpha, Mapping) or set(alpha) != set(self.alpha_shapes):
      got = sorted(alpha) if isinstance(alpha, Mapping) else type(alpha).__name__
      raise ValueError(f'{self.name} α must be a dict with keys {sorted(self.alpha_shapes)}, '
                       f'got {got}')
    for k, shape in self.alpha_shapes.items():
      if tuple(np.shape(alpha[k])) != tuple(shape):
        raise ValueError(f'{self.name} α[{k!r}] must have shape {tuple(shape)} (edges, ops), '
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


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(np.prod(a.shape, dtype=np.int64) for a in jax.tree_util.tree_leaves(tree)))


def check_op(name: str, known: tuple[str, ...], space: str) -> None:
  if name not in known:
    raise ValueError(f'operation {name!r} is not in the {space} space; known: {", ".join(known)}')
