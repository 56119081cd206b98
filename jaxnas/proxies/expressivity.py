"""Zen-score (Lin et al. 2021), its BatchNorm term, and the combined Zen(F) score.

All three are label-free: the input is Gaussian noise of the batch's shape.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxnas import ops
from jaxnas.proxies.base import is_weight, normal_like
from jaxnas.proxies.kernels import ntk_matrix, ntk_trace_estimate

BN_MOMENTUM = 0.9  # ops.batch_norm's (PyTorch's 0.1)


def gaussian_init(variables, key):
  """Zen-NAS' initialisation: conv and linear weights N(0, 1), every bias 0,
  BatchNorm γ = 1, statistics mean 0 and variance 1."""
  flat = traverse_util.flatten_dict(variables)
  drawn = normal_like(key, {p: v for p, v in flat.items() if p[0] == 'params' and is_weight(p)})
  out = {}
  for path, v in flat.items():
    if path in drawn:
      out[path] = drawn[path]
    elif path[-1] in ('scale', 'var'):
      out[path] = jnp.ones_like(v)
    else:
      out[path] = jnp.zeros_like(v)
  return traverse_util.unflatten_dict(out)


def forward_stats(apply_fn, variables, x):
  """``(logits, features, log_bn)``: the logits, the pre-pooling feature map (sown by the network as
  ``intermediates/features``) and ``Σ_BN log sqrt(mean_c σ²_c)``, σ² the batch
  variance at the input of every BatchNorm, in training mode.

  The batch variance is read back from the running variance the forward pass
  writes, ``σ² = (v_new − m·v_old)/(1 − m)``, so the networks need no hook.
  """
  logits, state = apply_fn(variables, x, True, mutable=['batch_stats', ops.FEATURES])
  features = state[ops.FEATURES]['features'][0]
  old = traverse_util.flatten_dict(variables.get('batch_stats', {}))
  new = traverse_util.flatten_dict(state['batch_stats'])
  log_bn = jnp.zeros((), jnp.float32)
  for path, v_new in new.items():
    if path[-1] == 'var':
      var = (v_new - BN_MOMENTUM * old[path]) / (1 - BN_MOMENTUM)
      # leading axes stack BatchNorms (scanned cells, edges): one term per BatchNorm
      log_bn = log_bn + jnp.sum(0.5 * jnp.log(jnp.mean(var, axis=-1)))
  return logits, features, log_bn


def zen(apply_fn, variables, batch, key, gamma: float = 1e-2):
  """Zen-score: ``log E_x ‖f(x) − f(x + γε)‖₁ + Σ_BN log sqrt(mean_c σ²_c)``.

  Zen-NAS' ``compute_zen_score``: weights re-drawn N(0, 1)
  (:func:`gaussian_init`), x and ε N(0, 1) of the batch's shape, γ = 0.01, f
  the pre-global-pooling feature map, ‖·‖₁ summed over (H, W, C) and
  averaged over the batch, BatchNorm in training mode. The BN term uses the
  batch variance of the clean pass (the reference reads ``running_var`` after
  the two passes, i.e. the variance shrunk towards 1 by the momentum).
  """
  k_init, k_x, k_eps = jax.random.split(key, 3)
  v = gaussian_init(variables, k_init)
  x = jax.random.normal(k_x, batch[0].shape, jnp.float32)
  mixed = x + gamma * jax.random.normal(k_eps, x.shape, jnp.float32)
  _, f, log_bn = forward_stats(apply_fn, v, x)
  _, f_mixed, _ = forward_stats(apply_fn, v, mixed)
  delta = jnp.mean(jnp.sum(jnp.abs(f - f_mixed), axis=tuple(range(1, f.ndim))))
  return jnp.log(delta) + log_bn


def bn(apply_fn, variables, batch, key):
  """The BatchNorm term of :func:`zen` alone, ``Σ_BN log sqrt(mean_c σ²_c)``, in
  Zen's setting (N(0, 1) weights and inputs)."""
  k_init, k_x = jax.random.split(key)
  x = jax.random.normal(k_x, batch[0].shape, jnp.float32)
  return forward_stats(apply_fn, gaussian_init(variables, k_init), x)[2]


def zen_f(apply_fn, variables, batch, key, beta1: float = 1.0, beta2: float = 1.0,
          estimate: bool = False, eps: float = 1e-3):
  """Zen(F) = ``β1 · log tr Θ + β2 · Σ_BN log sqrt(mean_c σ²_c)`` on Gaussian inputs,
  at the given weights (no re-initialisation: the warm-up trains them).

  The NTK statistic is the trace, ``tr Θ = Σ_i ‖∂s_i/∂θ‖²`` (:mod:`kernels`): it
  grows with trainability as the BN term grows with expressivity, so both
  terms are "larger is better" and their sum can be maximised; it is smooth
  (the condition number needs an eigendecomposition and jumps when
  eigenvalues cross); and it has an unbiased two-forward-pass estimate
  (``estimate=True``, :func:`ntk_trace_estimate`: one pass vmapped over two
  weight sets), which makes the score cheap to differentiate — what the
  label-free warm-up needs. Only the shape of ``batch[0]`` is read.
  """
  k_x, k_u = jax.random.split(key)
  x = jax.random.normal(k_x, batch[0].shape, jnp.float32)
  if estimate:  # the BN term from the estimate's clean pass
    def outputs(v):
      logits, _, log_bn = forward_stats(apply_fn, v, x)
      return jnp.sum(logits, -1), log_bn
    trace, log_bn = ntk_trace_estimate(apply_fn, variables, x, k_u, eps, outputs)
  else:
    log_bn = forward_stats(apply_fn, variables, x)[2]
    trace = jnp.trace(ntk_matrix(apply_fn, variables, x))
  return beta1 * jnp.log(trace) + beta2 * log_bn
