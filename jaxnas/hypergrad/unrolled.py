"""Hypergradients through N unrolled inner steps: exact (reverse mode) and
stochastic (SGE-NAS, ESJ).

The inner problem is solved by N plain SGD steps of size p on the stacked
training batches ``S_0 .. S_{N−1}``:

    Y^0 = w,    Y^{k+1} = Y^k − p ∇w L_train(Y^k, α; S_k),

and the hypergradient is that of ``F(α) = L_val(Y^N(α), α; D_F)``:

    dF/dα = ∇α L_val(Y^N, α) + (dY^N/dα)ᵀ ∇w L_val(Y^N, α).

:func:`unroll` computes it exactly by reverse mode through the N steps;
:func:`sge` estimates the Jacobian-vector product with Gaussian perturbations
of α and forward runs only (no second derivatives). With N = 1, ``dF/dα`` is
DARTS' second-order hypergradient with ξ = p and no momentum.

The inner runs are the estimator's model of training; the weights themselves
then move by N steps of the configured weight optimiser (SGE-NAS §3: SGD with
momentum 0.9, weight decay 3e-4, lr 0.005, cosine), one per training batch, at
the same α (:func:`~jaxnas.hypergrad.base.weight_steps`). With the optimiser
plain SGD of step p (no momentum, decay or clipping) they end at ``Y^N``.
"""
from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp
import optax

from jaxnas.options import Limits, Setting
from jaxnas.hypergrad.base import (Batches, Estimate, Problem, WeightOpt, Weights, check_batches,
                                   prefixed, val_grads, weight_steps)

# The options the unrolled estimators share. SGE-NAS (§4): p = q = 0.01, Q = 10.
N = Annotated[int, Limits('inner SGD steps N (training batches per step)', min=1)]
P = Annotated[float, Limits('inner SGD step size p (SGE-NAS: 0.01)', gt=0)]
MU = Annotated[float, Limits('smoothing μ of the perturbations of α', gt=0)]


def sgd_steps(problem: Problem, alpha, w, state, train_batches, p: float, remat: bool = False):
  """``Y^N`` from ``Y^0 = w`` by N SGD steps of size ``p``, one per stacked batch
  (``lax.scan``). The model state (BatchNorm statistics) is carried along and
  not differentiated. ``remat`` recomputes each step's forward pass in the
  backward pass (``jax.checkpoint``): memory O(1) steps instead of O(N).
  Returns ``(Y^N, state, mean training metrics as inner_train_*)``."""
  def step(carry, batch):
    y, state = carry
    (_, (state, metrics)), g = jax.value_and_grad(problem.train_loss, has_aux=True)(
        y, alpha, batch, state)
    y = jax.tree_util.tree_map(lambda a, b: a - p * b, y, g)
    return (y, jax.lax.stop_gradient(state)), metrics
  if remat:
    step = jax.checkpoint(step)
  (y, state), metrics = jax.lax.scan(step, (w, state), train_batches)
  return y, state, {f'inner_train_{k}': jnp.mean(v) for k, v in metrics.items()}


def _train(problem, opt, weights, alpha, batches, estimate: Estimate) -> Estimate:
  """``estimate`` with the weights moved by the weight optimiser (module docstring)."""
  new, train_metrics = weight_steps(problem, opt, weights, alpha, batches.train)
  return Estimate(estimate.alpha_grad, new, {**estimate.metrics, **train_metrics})


def unroll(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
           n: N = 1, p: P = 0.01,
           remat: Annotated[bool, Limits('rematerialise each inner step (memory O(1) in N)')] = False
           ) -> Estimate:
  """Exact reverse mode through N inner SGD steps (N = the number of stacked
  training batches): ``g_α = d/dα L_val(Y^N(α), α)``, ``jax.grad`` through the
  ``lax.scan`` of :func:`sgd_steps`. The ground truth :func:`sge` estimates.
  Memory grows with N unless ``remat``."""
  check_batches(batches, n)

  def objective(a):
    y, state, train_metrics = sgd_steps(problem, a, weights.w, weights.state, batches.train, p,
                                        remat)
    loss, (_, metrics) = problem.val_loss(y, a, batches.val, state)
    return loss, {**train_metrics, **prefixed('val', metrics)}
  (_, metrics), g = jax.value_and_grad(objective, has_aux=True)(alpha)
  return _train(problem, opt, weights, alpha, batches, Estimate(g, weights, metrics))


def gaussian_directions(key, alpha, q: int, normalize: bool = False):
  """Q directions ``u_j`` in α-space, stacked on a leading axis: ``u ~ N(0, I)``,
  or with ``normalize`` each tensor of each ``u_j`` scaled to norm ``sqrt(d)``
  (d its size; uniform on that sphere), which keeps ``E[u uᵀ] = I`` and so
  the estimator unbiased, with less variance."""
  leaves, treedef = jax.tree_util.tree_flatten(alpha)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, a in zip(keys, leaves):
    u = jax.random.normal(k, (q,) + a.shape, a.dtype)
    if normalize:
      axes = tuple(range(1, u.ndim))
      u = u * jnp.sqrt(a.size) / jnp.sqrt(jnp.sum(u * u, axis=axes, keepdims=True))
    out.append(u)
  return jax.tree_util.tree_unflatten(treedef, out)


def sge(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
        n: N = 1, q: Annotated[int, Limits('Gaussian directions Q (SGE-NAS: 10)', min=1)] = 10,
        mu: MU = 1e-2, p: P = 0.01,
        chunk: Annotated[int | None, Limits('perturbed runs vmapped at once (None: one at a '
                                            'time on CPU, all Q on GPU/TPU)', min=1)] = None
        ) -> Estimate:
  """SGE-NAS (Algorithm 1): the Jacobian ``dY^N/dα`` by Gaussian smoothing.

  Draw ``u_1 .. u_Q ~ N(0, I)`` in α-space; run the N inner SGD steps of
  :func:`sgd_steps` at α and, vmapped over j, at ``α + μ u_j``, all from the
  same weights on the same batches; with ``δ_j = (Y_j^N − Y^N) / μ``

      g_α = ∇α L_val(Y^N, α) + (1/Q) Σ_j ⟨δ_j, ∇w L_val(Y^N, α)⟩ u_j

  on the validation batch ``D_F``. As μ → 0, ``E_u[⟨J u, v⟩ u] = Jᵀ v``, so
  the mean over many directions is :func:`unroll`'s hypergradient; the error
  of one estimate shrinks like ``1/sqrt(Q)``.

  Defaults: p = 0.01 and Q = 10 as in the paper. μ = 1e-2: α enters through
  a softmax whose inputs matter at scale O(1), so a perturbation of 1e-2 is
  in its linear range (bias O(μ)), while ``Y_j^N − Y^N`` stays well above
  float32 rounding of the weights. ``chunk`` bounds memory: the Q perturbed
  runs go through ``lax.map`` in vmapped groups of that size. None: all Q at once
  on an accelerator, one at a time on CPU, where XLA's kernels for a batch of
  networks are slower than a loop over them (NAS-Bench-201, C=8, one cell per
  stage, batch 64, Q = 10: 3.3 s a step one at a time, 11.4 s all at once;
  ``benchmarks/search_step.py --sizes nb201-reduced``).
  """
  return _smoothed(problem, opt, weights, alpha, batches, key, n, q, mu, p, False, chunk)


# SGE-NAS' search settings where they differ from DARTS': α by plain gradient steps of
# size q without decay (Algorithm 1), the weights by SGD lr 0.005 (momentum 0.9, weight
# decay 3e-4 and the cosine schedule as DARTS').
SGE_RECIPE = {
    'optim.alpha_optimizer': Setting('sgd', 'SGE-NAS Algorithm 1 (α ← α − q ĝ)'),
    'optim.alpha_lr': Setting(0.01, 'SGE-NAS §4 (q = 0.01)'),
    'optim.alpha_weight_decay': Setting(0.0, 'SGE-NAS Algorithm 1 (no decay on α)'),
    'optim.lr': Setting(0.005, 'SGE-NAS §3 (SGD lr 0.005, momentum 0.9, wd 3e-4, cosine)'),
}


def _smoothed(problem, opt, weights, alpha, batches, key, n, q, mu, p, normalize, chunk):
  check_batches(batches, n)
  y, state, train_metrics = sgd_steps(problem, alpha, weights.w, weights.state, batches.train, p)
  gw, ga, val_metrics = val_grads(problem, y, alpha, batches.val, state)
  u = gaussian_directions(key, alpha, q, normalize)

  def directional(u_j):
    # ⟨δ_j, ∇w L_val⟩ without keeping Y_j^N around
    a = jax.tree_util.tree_map(lambda a, d: a + mu * d, alpha, u_j)
    y_j, _, _ = sgd_steps(problem, a, weights.w, weights.state, batches.train, p)
    return optax.tree.vdot(optax.tree.sub(y_j, y), gw) / mu
  if chunk is None:
    chunk = 1 if jax.default_backend() == 'cpu' else q
  coeff = jax.lax.map(directional, u, batch_size=chunk)
  g = jax.tree_util.tree_map(lambda g, u: g + jnp.tensordot(coeff, u, axes=1) / q, ga, u)
  return _train(problem, opt, weights, alpha, batches,
                Estimate(g, weights, {**train_metrics, **val_metrics}))


def esj(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
        n: N = 1, mu: MU = 1e-2, p: P = 0.01) -> Estimate:
  """ES Jacobian (Sow, Ji and Liang): :func:`sge` with one direction per step
  (Q = 1), each tensor of u normalised (:func:`gaussian_directions`)."""
  return _smoothed(problem, opt, weights, alpha, batches, key, n, 1, mu, p, True, None)


# ESJ as SGE-NAS runs it: α by plain gradient steps (the weights keep DARTS' recipe).
ESJ_RECIPE = {k: SGE_RECIPE[k] for k in ('optim.alpha_optimizer', 'optim.alpha_lr',
                                         'optim.alpha_weight_decay')}
