"""Pruning-at-initialisation proxies: grad_norm, SNIP, GraSP, SynFlow.

Each sums a per-weight saliency over the conv and linear weights θ (the
convention of Abdelfattah et al. 2021's ``zero-cost-nas`` code: a per-layer
score, summed over layers). ``L`` is the mean cross-entropy of the batch with
BatchNorm in training mode.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from typing import NamedTuple

from jaxnas.proxies.base import cross_entropy, merge, split_weights, tree_sum


class SaliencyConvention(NamedTuple):
  """How FreeDARTS computes its saliencies of α (``jaxnas.free`` docstring): the paper's
  formulas (the defaults), or the authors' notebooks on a space (that space's
  ``SearchSpace.saliency_code``)."""
  abs_weights: tuple[str, ...] = ()   # the saliencies computed at |θ|
  synflow_train_bn: bool = False      # BatchNorm in training mode, one all-ones image, float32
  synflow_abs_alpha: bool = True      # SynFlow at |α| (else α signed)
  # 'paper': −α ⊙ H g; after one Adam step α → α' on ∂L/∂α, the backward of g(α')·v
  # with v = α' ('vector_alpha': |α ⊙ (H(α')α' + g(α'))|) or v = g(α) ('vector_grad':
  # α ⊙ H(α') g(α), signed)
  grasp: str = 'paper'
  grasp_alpha_lr: float = 0.0         # that Adam step's learning rate


def grad_norm(apply_fn, variables, batch, key):
  """``Σ_l ‖∂L/∂θ_l‖₂``, the Frobenius norm of each weight tensor's gradient, summed."""
  weights, _ = split_weights(variables['params'])
  g = jax.grad(cross_entropy(apply_fn, variables, batch))(weights)
  return sum(jnp.sqrt(jnp.sum(x * x)) for x in g.values())


def snip(apply_fn, variables, batch, key):
  """SNIP (Lee et al. 2019): ``Σ |θ ⊙ ∂L/∂θ|``."""
  weights, _ = split_weights(variables['params'])
  g = jax.grad(cross_entropy(apply_fn, variables, batch))(weights)
  return tree_sum(jax.tree_util.tree_map(lambda w, g: jnp.abs(w * g), weights, g))


def grasp(apply_fn, variables, batch, key):
  """GraSP (Wang et al. 2020): ``Σ −θ ⊙ (H g)``, ``g = ∂L/∂θ`` held constant and
  ``H = ∂²L/∂θ²``; ``H g`` exact (reverse over reverse): the pullback of
  ``θ ↦ ∂L/∂θ`` applied to g (H is symmetric), g and H g from one program."""
  weights, _ = split_weights(variables['params'])
  g, pullback = jax.vjp(jax.grad(cross_entropy(apply_fn, variables, batch)), weights)
  hg, = pullback(g)
  return tree_sum(jax.tree_util.tree_map(lambda w, h: -w * h, weights, hg))


def synflow_inputs(variables, x_shape):
  """SynFlow's network and input: ``(variables, ones)`` in float64, every parameter
  replaced by its absolute value, BatchNorm statistics mean 0 and variance 1
  (applied in inference mode), an all-ones input of one sample. Call under
  ``jax.enable_x64()``."""
  params = jax.tree_util.tree_map(lambda p: jnp.abs(p.astype(jnp.float64)), variables['params'])
  stats = jax.tree_util.tree_map_with_path(
      lambda p, s: jnp.ones_like(s, jnp.float64) if jax.tree_util.keystr(p).endswith("'var']")
      else jnp.zeros_like(s, jnp.float64), variables.get('batch_stats', {}))
  return {'params': params, 'batch_stats': stats}, jnp.ones((1,) + tuple(x_shape[1:]), jnp.float64)


def synflow_per_weight(apply_fn, variables, batch):
  """SynFlow's per-weight saliency ``θ ⊙ ∂R/∂θ`` with ``R = 1ᵀ f(1; |θ|)``.

  The reference convention: every parameter replaced by its absolute value,
  an all-ones input of one sample, float64, and BatchNorm off — here its
  statistics set to mean 0 and variance 1 in inference mode, which with
  |γ| = 1 and |β| = 0 (their initial values) is the identity.
  """
  with jax.enable_x64():
    v, ones = synflow_inputs(variables, batch[0].shape)
    weights, rest = split_weights(v['params'])

    def r(w):
      return jnp.sum(apply_fn(dict(v, params=merge(v['params'], w, rest)), ones, False))
    g = jax.grad(r)(weights)
    return jax.tree_util.tree_map(lambda w, g: w * g, weights, g)


def synflow(apply_fn, variables, batch, key):
  """SynFlow (Tanaka et al. 2020): ``Σ θ ⊙ ∂R/∂θ`` (:func:`synflow_per_weight`),
  in float64; returned as float32."""
  with jax.enable_x64():
    return tree_sum(synflow_per_weight(apply_fn, variables, batch)).astype(jnp.float32)
