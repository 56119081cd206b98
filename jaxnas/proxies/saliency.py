"""Pruning-at-initialisation saliencies (SNIP, GraSP, SynFlow), and the proxies built
from them and from the gradient's norm.

The saliencies are written once, per element of any pytree ``x`` that the loss
is a function of: the conv and linear weights θ for the proxies below (the
leaves :func:`~jaxnas.proxies.base.split_weights` selects), α for FreeDARTS
(:mod:`jaxnas.free`, which stages and compiles them):

* :func:`snip_saliency`:    ``|x ⊙ ∂L/∂x|``;
* :func:`grasp_saliency`:   ``−x ⊙ H v``, ``H = ∂²L/∂x²`` and ``v = ∂L/∂x`` held
  constant (or a given v), exact (:func:`jaxnas.hypergrad.base.grad_and_hvp`);
* :func:`synflow_saliency`: ``x ⊙ ∂R/∂x``.

The proxies follow Abdelfattah et al. 2021's ``zero-cost-nas`` code: a score per
layer (per ``nn.Conv2d``/``nn.Linear`` weight), summed over layers. ``L`` is the
mean cross-entropy of the batch with BatchNorm in training mode.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxnas import kernels, ops
from jaxnas.hypergrad.base import grad_and_hvp
from jaxnas.proxies.base import cross_entropy, logits_train, merge, split_weights, tree_sum


class SaliencyConvention(NamedTuple):
  """How FreeDARTS computes its saliencies of α (``jaxnas.free`` docstring): the paper's
  formulas (the defaults), or the authors' notebooks on a space
  (``jaxnas.free.CODE_CONVENTIONS``)."""
  abs_weights: tuple[str, ...] = ()   # the saliencies computed at |θ|
  synflow_train_bn: bool = False      # BatchNorm in training mode, one all-ones image, float32
  synflow_abs_alpha: bool = True      # SynFlow at |α| (else α signed)
  # 'paper': −α ⊙ H g; after one Adam step α → α' on ∂L/∂α, the backward of g(α')·v
  # with v = α' ('vector_alpha': |α ⊙ (H(α')α' + g(α'))|) or v = g(α) ('vector_grad':
  # α ⊙ H(α') g(α), signed)
  grasp: str = 'paper'
  grasp_alpha_lr: float = 0.0         # that Adam step's learning rate


def snip_saliency(loss, x):
  """SNIP (Lee et al. 2019), per element: ``|x ⊙ ∂L/∂x|``."""
  return jax.tree_util.tree_map(lambda a, g: jnp.abs(a * g), x, jax.grad(loss)(x))


def grasp_saliency(loss, x, v=None, forward_over_reverse: bool = False):
  """GraSP (Wang et al. 2020), per element: ``−x ⊙ (H v)``, ``H = ∂²L/∂x²`` and
  ``v = ∂L/∂x`` (held constant) unless given; forward over reverse where the
  model admits it."""
  _, hv = grad_and_hvp(loss, x, v, forward_over_reverse, kernels.forward_over_reverse)
  return jax.tree_util.tree_map(lambda a, h: -a * h, x, hv)


def synflow_saliency(r, x):
  """SynFlow (Tanaka et al. 2020), per element: ``x ⊙ ∂R/∂x``; the caller makes
  ``R`` SynFlow's (:func:`synflow_inputs`)."""
  return jax.tree_util.tree_map(lambda a, g: a * g, x, jax.grad(r)(x))


def _layer_norms(name: str, g) -> jax.Array:
  """``‖g_l‖₂`` of every layer a weight leaf holds (its leading axes stack layers)."""
  return jnp.sqrt(jnp.sum(g * g, axis=tuple(range(g.ndim - ops.WEIGHT_NDIM[name], g.ndim))))


def grad_norm(apply_fn, variables, batch, key):
  """``Σ_l ‖∂L/∂θ_l‖₂``: the Frobenius norm of each layer's weight gradient, summed
  over layers. A leaf that stacks layers (scanned cells, a supernet's edges)
  holds one layer per index of its leading axes, each its own norm."""
  weights, _ = split_weights(variables['params'])
  g = jax.grad(cross_entropy(apply_fn, variables, batch))(weights)
  names = {jax.tree_util.keystr(p): p[-1].key
           for p, _ in jax.tree_util.tree_flatten_with_path(variables['params'])[0]}
  return sum(jnp.sum(_layer_norms(names[k], x)) for k, x in g.items())


def snip(apply_fn, variables, batch, key):
  """SNIP: ``Σ |θ ⊙ ∂L/∂θ|``."""
  weights, _ = split_weights(variables['params'])
  return tree_sum(snip_saliency(cross_entropy(apply_fn, variables, batch), weights))


def grasp(apply_fn, variables, batch, key):
  """GraSP: ``Σ −θ ⊙ (H g)``, ``g = ∂L/∂θ`` held constant and ``H = ∂²L/∂θ²``;
  forward over reverse (jaxnas' kernels pass it: :func:`jaxnas.kernels.forward_over_reverse`),
  g and H g from one program. (NAS-Bench-201, C=16, 5 cells per stage, batch 64 of
  32x32, through the one-hot supernet: 0.27 / 0.31 -> 0.39 / 0.42 cells/s against
  reverse over reverse, alternating.)"""
  weights, _ = split_weights(variables['params'])
  return tree_sum(grasp_saliency(cross_entropy(apply_fn, variables, batch), weights,
                                 forward_over_reverse=True))


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
  """SynFlow's per-weight saliency ``θ ⊙ ∂R/∂θ`` with ``R = 1ᵀ f(1; |θ|)``, float64.

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
    return synflow_saliency(r, weights)


def synflow(apply_fn, variables, batch, key):
  """SynFlow: ``log Σ θ ⊙ ∂R/∂θ`` (:func:`synflow_per_weight`), the natural
  logarithm, as NASLib reports it. The sum grows with depth and width past
  float32's range (NAS-Bench-201 at C=16, 5 cells per stage, 32x32: up to
  ~1e50, 41 of NAS-Bench-201's ~725 CIFAR-10 cells past 3.4e38), so it is
  summed and its logarithm taken in float64, and only the logarithm is
  returned in float32; a cell with no path from input to output scores −inf.
  """
  with jax.enable_x64():
    return jnp.log(tree_sum(synflow_per_weight(apply_fn, variables, batch))).astype(jnp.float32)


def _channel_probes(next_fun, args, kwargs, context):
  """Flax interceptor: the output a of every conv and linear layer times ``1 + δ``,
  δ = 0 of shape (batch, channels) in the :data:`jaxnas.ops.PROBES` collection."""
  out = next_fun(*args, **kwargs)
  if isinstance(context.module, (ops.Conv, ops.Linear)) and context.method_name == '__call__':
    scale = context.module.perturb('channel_scale', jnp.ones((out.shape[0], out.shape[-1]), out.dtype),
                                   collection=ops.PROBES)
    out = out * scale.reshape((out.shape[0],) + (1,) * (out.ndim - 2) + (out.shape[-1],))
  return out


def fisher(apply_fn, variables, batch, key):
  """Fisher (Theis et al. 2018; Turner et al. 2020), as ``zero-cost-nas`` and NASLib
  compute it: ``Σ_l Σ_c ½ mean_n (Σ_hw a ⊙ ∂L/∂a)²_{n,c}``, a the output of every conv
  and linear layer l (before its BatchNorm), L the mean cross-entropy of the batch,
  BatchNorm in training mode. The inner sum is ``∂L/∂δ_{n,c}`` for the output scaled
  by ``1 + δ`` at δ = 0 (:func:`_channel_probes`), so one backward pass gives every
  layer's. A layer that scanned cells stack gives one term per cell."""
  x, y = batch
  with nn.intercept_methods(_channel_probes):
    _, state = apply_fn(variables, x, True, mutable=['batch_stats', ops.PROBES])

    def loss(probes):
      logits, _ = logits_train(apply_fn, dict(variables, **{ops.PROBES: probes}), x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    g = jax.grad(loss)(state[ops.PROBES])
  # each leaf (..., batch, channels): stacked layers first
  return sum(jnp.sum(0.5 * jnp.mean(v * v, axis=-2)) for v in jax.tree_util.tree_leaves(g))
