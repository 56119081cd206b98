"""Gram matrices of a network at initialisation: the empirical neural tangent kernel
(TE-NAS, Chen et al. 2021), NASWOT's kernel of ReLU codes (Mellor et al. 2021) and its
first version's correlation of input Jacobians (``jacov``). (:mod:`jaxnas.kernels` is
another thing: the XLA kernels the networks run on.)"""
from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import ops
from jaxnas.options import Limits
from jaxnas.proxies.base import logits_train, merge, normal_like, split_weights

NTK_STATISTICS = ('cond', 'trace', 'logdet')


def _logit_sums(apply_fn, variables, x):
  """``s_i = Σ_c f(x)_{i,c}`` (TE-NAS differentiates the sum of each sample's
  logits), BatchNorm in training mode as TE-NAS' default."""
  return jnp.sum(logits_train(apply_fn, variables, x)[0], axis=-1)


def _outputs(apply_fn, variables):
  """``(weights, x) -> s`` (:func:`_logit_sums`) with the scored weights given."""
  _, rest = split_weights(variables['params'])

  def outputs(weights, x):
    return _logit_sums(apply_fn, dict(variables, params=merge(variables['params'], weights, rest)), x)
  return outputs


def ntk_matrix(apply_fn, variables, x, mode: str = 'auto') -> jax.Array:
  """``Θ = J Jᵀ`` (B, B), ``J = ∂s/∂θ`` over the conv and linear weights.

  ``mode``: ``'rev'`` builds J from B vector-Jacobian products (``jax.jacrev``),
  ``'fwd'`` from P Jacobian-vector products (``jax.jacfwd``); ``'auto'`` takes
  the one with fewer products, min(B, P) — reverse for any real network.
  (Forward mode cannot pass the DARTS ops' hand-written depthwise VJP.)
  """
  weights, _ = split_weights(variables['params'])
  n_params = sum(int(np.prod(w.shape)) for w in weights.values())
  if mode == 'auto':
    mode = 'rev' if x.shape[0] <= n_params else 'fwd'
  if mode not in ('rev', 'fwd'):
    raise ValueError(f"unknown NTK mode {mode!r}; known: 'auto', 'rev', 'fwd'")
  jac = (jax.jacrev if mode == 'rev' else jax.jacfwd)(_outputs(apply_fn, variables))(weights, x)
  j = jnp.concatenate([v.reshape(x.shape[0], -1) for v in jax.tree_util.tree_leaves(jac)], axis=1)
  return j @ j.T


def ntk_statistic(theta: jax.Array, statistic: str) -> jax.Array:
  if statistic == 'trace':
    return jnp.trace(theta)
  if statistic == 'logdet':
    return jnp.linalg.slogdet(theta)[1]
  if statistic == 'cond':
    eig = jnp.linalg.eigvalsh(theta)
    return eig[-1] / eig[0]
  raise ValueError(f'unknown NTK statistic {statistic!r}; known: {", ".join(NTK_STATISTICS)}')


def ntk(apply_fn, variables, batch, key, *,
        statistic: Annotated[str, Limits('cond (TE-NAS), trace or logdet',
                                         choices=NTK_STATISTICS)] = 'cond',
        mode: Annotated[str, Limits('the Jacobian by reverse or forward products',
                                    choices=('auto', 'rev', 'fwd'))] = 'auto'):
  """A statistic of the empirical NTK ``Θ = J Jᵀ`` on a real batch (TE-NAS).

  ``cond`` (TE-NAS' score, ``λ_max / λ_min``; lower means more trainable),
  ``trace`` (``Σ_i ‖∂s_i/∂θ‖²``) or ``logdet``. ``s_i`` is the sum of sample
  i's logits, BatchNorm in training mode, as TE-NAS' ``get_ntk_n``; θ the conv
  and linear weights (TE-NAS also counts BatchNorm γ).
  """
  return ntk_statistic(ntk_matrix(apply_fn, variables, batch[0], mode), statistic)


def ntk_trace_estimate(apply_fn, variables, x, key, eps: float = 1e-3, outputs=None):
  """An unbiased (to O(ε)) two-forward-pass estimate of ``tr Θ``:
  ``‖s(θ + εu) − s(θ)‖² / ε²``, ``u ~ N(0, I)`` over the weights, since
  ``E_u ‖J u‖² = tr(JᵀJ) = tr Θ``. Its gradient needs one backward pass
  (no Jacobian, no second derivative): the warm-up's objective uses it.

  The two passes run as one, vmapped over the weights θ and θ + εu: half the
  kernels of two passes (the label-free warm-up step of the DARTS supernet on
  digits, C=8, 5 cells: 0.49 -> 0.40 s). ``outputs(variables) -> (s, aux)``
  is what each pass computes (default: ``s`` alone, aux None); returns the
  estimate and ``aux`` at θ.
  """
  weights, rest = split_weights(variables['params'])
  u = normal_like(key, weights)
  pair = {k: jnp.stack([w, w + eps * u[k]]) for k, w in weights.items()}
  if outputs is None:
    def outputs(v):
      return _logit_sums(apply_fn, v, x), None
  s, aux = jax.vmap(lambda w: outputs(dict(variables, params=merge(variables['params'], w, rest))))(pair)
  return jnp.sum((s[1] - s[0]) ** 2) / eps ** 2, jax.tree_util.tree_map(lambda a: a[0], aux)


def relu_codes(apply_fn, variables, x) -> jax.Array:
  """The binary codes ``c_i ∈ {0, 1}^{N_A}`` of sample i: ``x > 0`` at the input
  of every ReLU the network records (:func:`jaxnas.ops.relu`), shape (B, N_A)."""
  _, state = apply_fn(variables, x, True, mutable=['batch_stats', ops.RELU_CODES])
  leaves = jax.tree_util.tree_leaves(state.get(ops.RELU_CODES, {}))
  if not leaves:
    raise ValueError('the network records no ReLU codes: its ReLUs must be jaxnas.ops.relu')
  b = x.shape[0]
  # leaves are (scan axes..., B, d): bring the batch axis first
  return jnp.concatenate([jnp.moveaxis(c, -2, 0).reshape(b, -1) for c in leaves], axis=1)


def naswot(apply_fn, variables, batch, key):
  """NASWOT (Mellor et al. 2021): ``log |det K_H|`` with
  ``K_H = C Cᵀ + (1 − C)(1 − C)ᵀ``, i.e. ``(K_H)_ij = N_A − d_Hamming(c_i, c_j)``,
  C the binary codes of the ReLU inputs (:func:`relu_codes`) on a real batch,
  BatchNorm in training mode."""
  c = relu_codes(apply_fn, variables, batch[0]).astype(jnp.float32)
  k = c @ c.T + (1 - c) @ (1 - c).T
  return jnp.linalg.slogdet(k)[1]


def jacov(apply_fn, variables, batch, key, *,
          k: Annotated[float, Limits('added to each eigenvalue (NASLib: 1e-5)', gt=0)] = 1e-5):
  """Jacobian covariance (Mellor et al., arXiv 2006.04647v1; NASLib's and
  ``zero-cost-nas``' ``jacob_cov``): ``−Σ_i [log(λ_i + k) + 1/(λ_i + k)]``, λ the
  eigenvalues of the correlation matrix of the rows of ``J = ∂(Σ_{n,c} f(x)_{n,c})/∂x``
  (one flattened row per image) on a real batch, BatchNorm in training mode, k = 1e-5.
  The correlation and its eigenvalues in float64, as NumPy computes them there
  (``np.corrcoef``, ``np.linalg.eig``); a Jacobian row that is constant (no path from
  the input) makes the correlation undefined: NaN, as the reference's."""
  x = batch[0]
  j = jax.grad(lambda x: jnp.sum(logits_train(apply_fn, variables, x)[0]))(x)
  with jax.enable_x64():
    lam = jnp.linalg.eigvalsh(jnp.corrcoef(j.reshape(x.shape[0], -1).astype(jnp.float64)))
    return (-jnp.sum(jnp.log(lam + k) + 1 / (lam + k))).astype(jnp.float32)
