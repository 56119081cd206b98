"""A bilevel problem with a closed-form hypergradient, to check estimators against.

Ridge regression with a log-penalty per feature as the architecture:

    L_train(w, α) = ‖X w − y‖² / 2n + ½ Σ_i e^{α_i} w_i²
    L_val(w, α)   = ‖X_v w − y_v‖² / 2n_v

The lower level has the solution ``w*(α) = A⁻¹ Xᵀy / n`` with
``A = XᵀX / n + diag(e^α)``, and the hypergradient is

    dL_val(w*(α))/dα_i = −e^{α_i} w*_i [A⁻¹ ∇w L_val(w*)]_i.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxnas.hypergrad.base import Problem


class RidgeData(NamedTuple):
  x_train: jax.Array
  y_train: jax.Array
  x_val: jax.Array
  y_val: jax.Array


def make_data(key, n_train=40, n_val=30, dim=6, noise=0.1, dtype=jnp.float64) -> RidgeData:
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  w_true = jax.random.normal(k1, (dim,), dtype)
  x_tr = jax.random.normal(k2, (n_train, dim), dtype)
  x_va = jax.random.normal(k3, (n_val, dim), dtype)
  y_tr = x_tr @ w_true + noise * jax.random.normal(k4, (n_train,), dtype)
  y_va = x_va @ w_true + noise * jax.random.normal(k5, (n_val,), dtype)
  return RidgeData(x_tr, y_tr, x_va, y_va)


def problem() -> Problem:
  """The ridge bilevel problem; a batch is an ``(x, y)`` pair, there is no state."""
  def train_loss(w, alpha, batch, state):
    x, y = batch
    loss = 0.5 * jnp.mean((x @ w - y) ** 2) + 0.5 * jnp.sum(jnp.exp(alpha) * w ** 2)
    return loss, (state, {'loss': loss})

  def val_loss(w, alpha, batch, state):
    x, y = batch
    loss = 0.5 * jnp.mean((x @ w - y) ** 2)
    return loss, (state, {'loss': loss})
  return Problem(train_loss, val_loss)


def solve(data: RidgeData, alpha) -> jax.Array:
  """``w*(α)``."""
  n = data.x_train.shape[0]
  a = data.x_train.T @ data.x_train / n + jnp.diag(jnp.exp(alpha))
  return jnp.linalg.solve(a, data.x_train.T @ data.y_train / n)


def hypergradient(data: RidgeData, alpha) -> jax.Array:
  """The closed form ``dL_val(w*(α))/dα`` of the module docstring."""
  n, nv = data.x_train.shape[0], data.x_val.shape[0]
  w = solve(data, alpha)
  a = data.x_train.T @ data.x_train / n + jnp.diag(jnp.exp(alpha))
  grad_val = data.x_val.T @ (data.x_val @ w - data.y_val) / nv
  return -jnp.exp(alpha) * w * jnp.linalg.solve(a, grad_val)


def one_step_hypergradient(data: RidgeData, alpha, w0, lr) -> jax.Array:
  """Closed form for one unrolled gradient step ``w1 = w0 − η ∇w L_train(w0, α)``:
  ``dL_val(w1)/dα = −η e^α ⊙ w0 ⊙ ∇w L_val(w1)``."""
  n, nv = data.x_train.shape[0], data.x_val.shape[0]
  g = data.x_train.T @ (data.x_train @ w0 - data.y_train) / n + jnp.exp(alpha) * w0
  w1 = w0 - lr * g
  grad_val = data.x_val.T @ (data.x_val @ w1 - data.y_val) / nv
  return -lr * jnp.exp(alpha) * w0 * grad_val
