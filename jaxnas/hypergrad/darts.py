"""DARTS' hypergradient estimators: first order, second order (exact and finite
difference) and multi-step.

Notation: ``w`` the weights, ``α`` the architecture, ξ the virtual step size
(by default the current weight learning rate), ``m`` the momentum buffer of
the weight optimiser with coefficient μ, λ its weight decay.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnas.hypergrad.base import (Batches, Estimate, Problem, WeightOpt, Weights,
                                   exact_mixed_product, first, momentum_buffer, tree_norm,
                                   val_grads, weight_step)


def darts1(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key,
           **_) -> Estimate:
  """First order: ``g_α = ∇α L_val(w, α)``, then one weight step on the training batch."""
  _, ga, val_metrics = val_grads(problem, weights.w, alpha, batches.val, weights.state)
  new, train_metrics = weight_step(problem, opt, weights, alpha, first(batches.train))
  return Estimate(ga, new, {**val_metrics, **train_metrics})


def virtual_step(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batch, xi):
  """DARTS' unrolled weights ``w' = w − ξ (μ m + ∇w L_train(w, α) + λ w)``: the
  SGD-with-momentum step the weight optimiser would take (without clipping)."""
  g = jax.grad(lambda w: problem.train_loss(w, alpha, batch, weights.state)[0])(weights.w)
  m = momentum_buffer(weights.opt_state, weights.w)
  return jax.tree_util.tree_map(
      lambda w, g, m: w - xi * (opt.momentum * m + g + opt.weight_decay * w), weights.w, g, m)


def _second_order(problem, opt, weights, alpha, batches, mixed_product, xi=None):
  batch = first(batches.train)
  xi = opt.lr(weights.step) if xi is None else xi
  w_virtual = virtual_step(problem, opt, weights, alpha, batch, xi)
  gw, ga, val_metrics = val_grads(problem, w_virtual, alpha, batches.val, weights.state)
  train_loss = lambda w, a: problem.train_loss(w, a, batch, weights.state)[0]
  hvp = mixed_product(train_loss, weights.w, alpha, gw)
  alpha_grad = jax.tree_util.tree_map(lambda a, h: a - xi * h, ga, hvp)
  new, train_metrics = weight_step(problem, opt, weights, alpha, batch)
  return Estimate(alpha_grad, new, {**val_metrics, **train_metrics, 'xi': jnp.asarray(xi)})


def make_fd_mixed_product(r: float = 1e-2):
  """DARTS' central difference ``(∇α L(w + εv) − ∇α L(w − εv)) / 2ε``, ε = r/‖v‖."""
  def fd(loss, w, alpha, v):
    eps = r / (tree_norm(v) + 1e-12)
    grad_alpha = jax.grad(loss, argnums=1)
    plus = grad_alpha(jax.tree_util.tree_map(lambda a, b: a + eps * b, w, v), alpha)
    minus = grad_alpha(jax.tree_util.tree_map(lambda a, b: a - eps * b, w, v), alpha)
    return jax.tree_util.tree_map(lambda p, m: (p - m) / (2 * eps), plus, minus)
  return fd


def darts2(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key,
           xi=None, **_) -> Estimate:
  """Second order, exact:
  ``g_α = ∇α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇w' L_val(w', α)``
  with ``w'`` the virtual step (:func:`virtual_step`); the mixed second
  derivative times a vector exactly (:func:`exact_mixed_product`), no finite
  difference. Then one weight step on the same training batch, as DARTS."""
  return _second_order(problem, opt, weights, alpha, batches, exact_mixed_product, xi)


def darts2_fd(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key,
              xi=None, fd_r: float = 1e-2, **_) -> Estimate:
  """Second order as quark0/darts computes it: the mixed product of :func:`darts2`
  by a central finite difference with ε = r/‖∇w' L_val‖ (r = 1e-2)."""
  return _second_order(problem, opt, weights, alpha, batches, make_fd_mixed_product(fd_r), xi)


def multistep(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key,
              **_) -> Estimate:
  """Multi-step: ``g_α = ∇α L_val(w, α)`` at the current weights, then one weight
  step on each of the n stacked training batches (``lax.scan``), so that the
  weights move n times per architecture step. n = 1 is DARTS' first order."""
  _, ga, val_metrics = val_grads(problem, weights.w, alpha, batches.val, weights.state)

  def body(weights, batch):
    return weight_step(problem, opt, weights, alpha, batch)
  new, train_metrics = jax.lax.scan(body, weights, batches.train)
  train_metrics = jax.tree_util.tree_map(jnp.mean, train_metrics)
  return Estimate(ga, new, {**val_metrics, **train_metrics})
