"""Zen-score (Lin et al. 2021), its BatchNorm term, and the combined Zen(F) score.

All three are label-free: the input is Gaussian noise of the batch's shape.
"""
from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxnas import ops
from jaxnas.options import Limits
from jaxnas.proxies.base import is_weight, normal_like
from jaxnas.proxies.gram import ntk_matrix, ntk_trace_estimate

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


BN_VARIANCES = ('running', 'batch')
GAMMA = Annotated[float, Limits("the mixup perturbation's size γ (Zen-NAS: 0.01)", gt=0)]
VARIANCE = Annotated[str, Limits("the BatchNorm term's variance: running (Zen-NAS' code) or batch "
                                 "(the paper's)", choices=BN_VARIANCES)]


def forward_stats(apply_fn, variables, x):
  """``(logits, features, batch_stats)``: the logits, the pre-pooling feature map (sown
  by the network as ``intermediates/features``) and the BatchNorm statistics the
  forward pass writes, in training mode."""
  logits, state = apply_fn(variables, x, True, mutable=['batch_stats', ops.FEATURES])
  return logits, state[ops.FEATURES]['features'][0], state['batch_stats']


def _log_bn(variances) -> jax.Array:
  # leading axes stack BatchNorms (scanned cells, edges): one term per BatchNorm
  return sum(jnp.sum(0.5 * jnp.log(jnp.mean(v, axis=-1))) for v in variances)


def log_bn_batch(old_stats, new_stats, epsilon: float = 1e-5) -> jax.Array:
  """``Σ_BN log sqrt(mean_c σ²_c + ε)``, σ² the batch variance at the input of every
  BatchNorm of one forward pass and ε the BatchNorm's own (a BatchNorm reading an
  always-zero map, a node no op reaches, adds log √ε, not −∞). The batch variance
  is read back from the running variance the pass wrote,
  ``σ² = (v_new − m·v_old)/(1 − m)``, so the networks need no hook: the unbiased one
  (:class:`jaxnas.ops.BatchNorm` records ``σ² n/(n − 1)``, as PyTorch), n/(n − 1)
  times what the BatchNorm divides by (1.0002 at NAS-Bench-201's last stage, batch 64)."""
  old = traverse_util.flatten_dict(old_stats)
  new = traverse_util.flatten_dict(new_stats)
  return _log_bn((v - BN_MOMENTUM * old[p]) / (1 - BN_MOMENTUM) + epsilon
                 for p, v in new.items() if p[-1] == 'var')


def log_bn_running(stats) -> jax.Array:
  """``Σ_BN log sqrt(mean_c v_c)``, v the running variance (Zen-NAS' code reads
  ``running_var``; it never falls below 0.9² of its initial 1, so the term is finite)."""
  return _log_bn(v for p, v in traverse_util.flatten_dict(stats).items() if p[-1] == 'var')


def _zen_passes(apply_fn, variables, batch, key, gamma, variance):
  if variance not in BN_VARIANCES:
    raise ValueError(f'unknown BatchNorm variance {variance!r}; known: {", ".join(BN_VARIANCES)}')
  k_init, k_x, k_eps = jax.random.split(key, 3)
  v = gaussian_init(variables, k_init)
  x = jax.random.normal(k_x, batch[0].shape, jnp.float32)
  mixed = x + gamma * jax.random.normal(k_eps, x.shape, jnp.float32)
  _, f, stats = forward_stats(apply_fn, v, x)
  # the mixed pass after the clean one, its running statistics moved on by both, as Zen-NAS'
  _, f_mixed, stats_after = forward_stats(apply_fn, dict(v, batch_stats=stats), mixed)
  if variance == 'running':
    log_bn = log_bn_running(stats_after)
  else:
    log_bn = log_bn_batch(v['batch_stats'], stats)
  return f, f_mixed, log_bn


def zen(apply_fn, variables, batch, key, *, gamma: GAMMA = 1e-2, variance: VARIANCE = 'running'):
  """Zen-score: ``log E_x ‖f(x) − f(x + γε)‖₁ + Σ_BN log σ̄_BN``.

  Zen-NAS' ``compute_zen_score``: weights re-drawn N(0, 1)
  (:func:`gaussian_init`, running statistics mean 0 and variance 1), x and ε
  N(0, 1) of the batch's shape, γ = 0.01, f the pre-global-pooling feature map,
  ‖·‖₁ summed over (H, W, C) and averaged over the batch, BatchNorm in training
  mode, the clean pass and then the mixed one. ``σ̄_BN``:

  * ``variance='running'`` (the default, Zen-NAS' code): ``sqrt(mean_c running_var)``
    after both passes, i.e. ``0.81 + 0.09 σ²_clean + 0.1 σ²_mixed`` per channel
    (momentum 0.1, the running variance starting at 1, σ² the unbiased batch
    variances as PyTorch's BatchNorm records them) — :func:`log_bn_running`;
  * ``variance='batch'`` (the paper's formula): ``sqrt(mean_c σ²_c + ε)``, σ² the
    clean pass's (unbiased) batch variance — :func:`log_bn_batch`.

  The two rank networks differently (Kendall τ 0.95 between them on 24
  NAS-Bench-201 cells).
  """
  f, f_mixed, log_bn = _zen_passes(apply_fn, variables, batch, key, gamma, variance)
  delta = jnp.mean(jnp.sum(jnp.abs(f - f_mixed), axis=tuple(range(1, f.ndim))))
  return jnp.log(delta) + log_bn


def bn(apply_fn, variables, batch, key, *, gamma: GAMMA = 1e-2, variance: VARIANCE = 'running'):
  """The BatchNorm term of :func:`zen` alone, ``Σ_BN log σ̄_BN``, in Zen's setting
  (N(0, 1) weights and inputs, the same two passes, ``variance`` as there: by
  default Zen-NAS' running variance, else the clean pass's batch variance)."""
  return _zen_passes(apply_fn, variables, batch, key, gamma, variance)[2]


def zen_f(apply_fn, variables, batch, key, *,
          beta1: Annotated[float, Limits('the weight of log tr NTK')] = 1.0,
          beta2: Annotated[float, Limits('the weight of the BN term')] = 1.0,
          estimate: Annotated[bool, Limits('tr NTK by its two-pass estimate')] = False,
          eps: Annotated[float, Limits("the estimate's step ε", gt=0)] = 1e-3):
  """Zen(F) = ``β1 · log tr Θ + β2 · Σ_BN log sqrt(mean_c σ²_c + ε)`` on Gaussian inputs
  (:func:`log_bn_batch`: the batch variance, which the warm-up differentiates), at the
  given weights (no re-initialisation: the warm-up trains them).

  The NTK statistic is the trace, ``tr Θ = Σ_i ‖∂s_i/∂θ‖²`` (:mod:`jaxnas.proxies.gram`): it
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

  def outputs(v):   # the BN term from a clean pass (with the estimate: its clean pass)
    logits, _, stats = forward_stats(apply_fn, v, x)
    return jnp.sum(logits, -1), log_bn_batch(v.get('batch_stats', {}), stats)
  if estimate:
    trace, log_bn = ntk_trace_estimate(apply_fn, variables, x, k_u, eps, outputs)
  else:
    log_bn = outputs(variables)[1]
    trace = jnp.trace(ntk_matrix(apply_fn, variables, x))
  return beta1 * jnp.log(trace) + beta2 * log_bn
