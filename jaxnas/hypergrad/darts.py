"""DARTS' hypergradient estimators: first order, second order (exact and finite
difference) and multi-step.

Notation: ``w`` the weights, ``α`` the architecture, ξ the virtual step size
(by default the current weight learning rate).

Order of the updates. DARTS (quark0/darts ``train_search.py`` ``train``:
``architect.step`` then ``optimizer.step`` on a fresh ``∇w L_train`` at the new
α) moves α first: :func:`darts1`, :func:`darts2` and :func:`darts2_fd` leave the
weights alone and the search takes the weight step at the new α
(``EstimatorSpec.weights_after_alpha``). Zero-cost DARTS' multi-step
(Eqs. 6-7) moves the weights first: :func:`multistep` takes its n weight steps
and then the α gradient at the new weights.
"""
from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp

from jaxnas.options import Limits

from jaxnas.hypergrad.base import (Batches, Estimate, Problem, WeightOpt, Weights,
                                   check_batches, first, mixed_product_fwd, prefixed, train_grad,
                                   tree_norm, val_alpha_grad, val_grads, weight_steps)


def darts1(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches,
           key) -> Estimate:
  """First order: ``g_α = ∇α L_val(w, α)`` (the weights unchanged; the search's
  weight step follows at the new α)."""
  ga, val_metrics = val_alpha_grad(problem, weights.w, alpha, batches.val, weights.state)
  return Estimate(ga, weights, val_metrics)


def virtual_step(opt: WeightOpt, weights: Weights, g, xi):
  """DARTS' unrolled weights ``w' = w + ξ · d(g)``, ``d`` the update the weight
  optimiser makes of ``g = ∇w L_train(w, α)`` from its current state at learning rate
  1 and without its clipping (``opt.virtual_tx``; without one, ``opt.tx``'s update
  divided by its current learning rate η), ξ None: η. For PyTorch's SGD this is
  quark0/darts' ``w − ξ (μ m + g + λ w)`` (architect.py ``_compute_unrolled_model``);
  for any other optax optimiser (Nesterov, per-group decay, Adam) it is the step that
  optimiser would take, so the virtual step never drifts from the real one.

  Returns ``w'`` and the transpose ``D`` of ``g ↦ w'`` (a linear map for SGD with
  momentum and decay: ``w' = w − ξ (μ m + λ w) − ξ g``): the hypergradient through the
  virtual step is ``∇α L_val(w', α) + ∇²_{α,w} L_train(w, α) Dᵀ ∇w' L_val(w', α)``, and
  for plain or heavy-ball SGD ``Dᵀ ∇w' L_val = −ξ ∇w' L_val``."""
  lr = opt.lr(weights.step)
  if opt.virtual_tx is not None:   # the update at learning rate 1
    tx, scale = opt.virtual_tx, lr if xi is None else xi
  else:                            # the update at η: ξ/η of it (η > 0)
    tx, scale = opt.tx, 1.0 if xi is None else xi / lr
  updates, transpose = jax.vjp(lambda g: tx.update(g, weights.opt_state, weights.w)[0], g)
  w_virtual = jax.tree_util.tree_map(lambda w, u: w + scale * u, weights.w, updates)

  def direction(gw):
    (v,) = transpose(gw)
    return jax.tree_util.tree_map(lambda x: scale * x, v)
  return w_virtual, direction


XI = Annotated[float | None, Limits('virtual step size ξ (None: the current weight learning '
                                   'rate, as quark0/darts architect.py)', min=0)]


def _second_order(problem, opt, weights, alpha, batches, fd_r=None, xi=None):
  """Both second-order estimators; the weights unchanged (the search's weight step
  follows at the new α, on a fresh gradient, as quark0/darts). The exact mixed product ``∇²_{α,w} L_train v``,
  v the direction of :func:`virtual_step` (``−ξ ∇w' L_val`` for SGD), with ``fd_r`` None:

  - forward over reverse where the problem admits it (the DARTS supernet):
    ``jax.jvp`` of ``w ↦ ∇α L_train(w, α)`` along v (:func:`mixed_product_fwd`).
    DARTS supernet, C=16, 8 cells, batch 32: the step costs 2.4x a first-order
    step (batch 64: 2.2x), against 4.5x by reverse over reverse, with a quarter
    of the memory;
  - otherwise reverse over reverse: the gradient as a function of α under
    ``jax.vjp``, whose pullback maps v to ``∇α ⟨∇w L_train, v⟩``, reusing the
    training pass that gave ``∇w L_train``.
  """
  batch = first(batches.train)
  reverse = fd_r is None and not problem.forward_over_reverse
  def grad(a):
    return train_grad(problem, weights.w, a, batch, weights.state)
  if reverse:
    g, pullback, (state, metrics) = jax.vjp(grad, alpha, has_aux=True)
  else:
    g, (state, metrics) = grad(alpha)
  w_virtual, direction = virtual_step(opt, weights, g, xi)
  xi = opt.lr(weights.step) if xi is None else xi
  gw, ga, val_metrics = val_grads(problem, w_virtual, alpha, batches.val, weights.state)
  v = direction(gw)
  if reverse:
    (mixed,) = pullback(v)
  elif fd_r is None:
    mixed = mixed_product_fwd(lambda w, a: problem.train_loss(w, a, batch, weights.state)[0],
                              weights.w, alpha, v, problem.jvp_context)
  else:
    mixed = fd_mixed_product(lambda w, a: problem.train_loss(w, a, batch, weights.state)[0],
                             weights.w, alpha, v, fd_r)
  alpha_grad = jax.tree_util.tree_map(jnp.add, ga, mixed)
  return Estimate(alpha_grad, weights,
                  {**val_metrics, **prefixed('virtual_train', metrics), 'xi': jnp.asarray(xi)})


def fd_mixed_product(loss, w, alpha, v, r: float = 1e-2):
  """DARTS' central difference ``(∇α L(w + εv) − ∇α L(w − εv)) / 2ε``, ε = r/‖v‖: the
  points ``w ± r v/‖v‖`` at distance r (for v = −ξ ∇w' L_val the same points as
  quark0/darts' ε = r/‖∇w' L_val‖ along ∇w' L_val)."""
  eps = r / (tree_norm(v) + 1e-12)
  grad_alpha = jax.grad(loss, argnums=1)
  plus = grad_alpha(jax.tree_util.tree_map(lambda a, b: a + eps * b, w, v), alpha)
  minus = grad_alpha(jax.tree_util.tree_map(lambda a, b: a - eps * b, w, v), alpha)
  return jax.tree_util.tree_map(lambda p, m: (p - m) / (2 * eps), plus, minus)


def darts2(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
           xi: XI = None) -> Estimate:
  """Second order, exact:
  ``g_α = ∇α L_val(w', α) + ∇²_{α,w} L_train(w, α) v``, ``v = Dᵀ ∇w' L_val(w', α)``,
  with ``w'`` the virtual step and ``Dᵀ`` the transpose of the weight optimiser's
  own update (:func:`virtual_step`), so exact for Nesterov, per-group decay and Adam
  too; for plain or heavy-ball SGD ``v = −ξ ∇w' L_val`` (DARTS' Eq. 7). The mixed
  second derivative times v exactly (forward over reverse where the problem
  admits it, else reverse over reverse; see :func:`_second_order`), no finite
  difference."""
  return _second_order(problem, opt, weights, alpha, batches, xi=xi)


def darts2_fd(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
              xi: XI = None,
              r: Annotated[float, Limits('ε = r / ‖v‖ (quark0/darts architect.py: 1e-2)',
                                         gt=0)] = 1e-2) -> Estimate:
  """Second order as quark0/darts computes it: the mixed product of :func:`darts2`
  by a central finite difference along its v (:func:`fd_mixed_product`, ε = r/‖v‖,
  for SGD quark0/darts' r/‖∇w' L_val‖)."""
  return _second_order(problem, opt, weights, alpha, batches, fd_r=r, xi=xi)


def multistep(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
              n: Annotated[int, Limits('weight steps per α step', min=1)] = 2) -> Estimate:
  """Multi-step (Zero-Cost DARTS, Eqs. 6-7): n weight steps first, one on each of the
  n stacked training batches (``lax.scan``), then ``g_α = ∇α L_val(w_n, α)`` at the
  new weights ``w_n``, so that the weights move n times per architecture step. n = 1
  is DARTS' first order with the weight step moved before the α step."""
  check_batches(batches, n)
  new, train_metrics = weight_steps(problem, opt, weights, alpha, batches.train)
  ga, val_metrics = val_alpha_grad(problem, new.w, alpha, batches.val, new.state)
  return Estimate(ga, new, {**val_metrics, **train_metrics})
