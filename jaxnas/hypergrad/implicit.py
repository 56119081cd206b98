"""The implicit-function-theorem hypergradient.

At a minimum ``w*`` of ``L_train(·, α)``, ``∇w L_train(w*(α), α) = 0``
implies ``dw*/dα = −H⁻¹ ∇²_{w,α} L_train`` with ``H = ∇²_{w,w} L_train``, so

    dL_val/dα = ∇α L_val − ∇²_{α,w} L_train · H⁻¹ ∇w L_val,

all at ``(w, α)``. The inverse-Hessian-vector product ``z = H⁻¹ ∇w L_val``
comes from K iterations of conjugate gradients or of the Neumann series

    z ≈ η Σ_{k=0}^{K} (I − η H)^k ∇w L_val          (converges for η < 2/λ_max(H)),

each iteration one exact Hessian-vector product
(:func:`~jaxnas.hypergrad.base.hessian_product`). Away from a minimum (a
supernet in training) H may be indefinite; ``damping`` δ solves
``(H + δI) z = ∇w L_val`` instead.
"""
from __future__ import annotations

from typing import Annotated

import jax
import jax.scipy.sparse.linalg
import optax

from jaxnas.options import Limits
from jaxnas.hypergrad.base import (Batches, Estimate, Problem, WeightOpt, Weights,
                                   exact_mixed_product, first, hessian_product, val_grads)

SOLVERS = ('cg', 'neumann')


def inverse_hvp(hvp, v, solver: str = 'cg', k: int = 10, eta: float = 0.01):
  """``z ≈ A⁻¹ v`` for the linear map ``hvp`` (a pytree function), K iterations of
  ``solver`` ('cg': conjugate gradients; 'neumann': the series above with step η)."""
  if solver == 'cg':
    z, _ = jax.scipy.sparse.linalg.cg(hvp, v, maxiter=k, tol=0.0, atol=0.0)
    return z
  if solver == 'neumann':
    def body(_, carry):
      term, total = carry   # term = (I − ηA)^i v
      term = optax.tree.add_scale(term, -eta, hvp(term))
      return term, optax.tree.add(total, term)
    _, total = jax.lax.fori_loop(0, k, body, (v, v))
    return optax.tree.scale(eta, total)
  check_solver(solver)


def check_solver(solver: str) -> None:
  if solver not in SOLVERS:
    raise ValueError(f'unknown implicit solver {solver!r}; known solvers: {", ".join(SOLVERS)}')


def implicit(problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches, key, *,
             solver: Annotated[str, Limits('inverse-HVP solver', choices=SOLVERS)] = 'cg',
             k: Annotated[int, Limits('solver iterations K', min=1)] = 10,
             eta: Annotated[float, Limits('Neumann step η (converges for η < 2/λ_max(H))', gt=0)] = 0.01,
             damping: Annotated[float, Limits('δ: solve (H + δI) z = ∇w L_val', min=0)] = 0.0
             ) -> Estimate:
  """IFT hypergradient at the current weights (module docstring):
  ``g_α = ∇α L_val(w, α) − ∇²_{α,w} L_train(w, α) (H + δI)⁻¹ ∇w L_val(w, α)``,
  H and the mixed term on the training batch. The weights are left alone: the
  search's weight step follows at the new α, as after :func:`~jaxnas.hypergrad.darts.darts1`."""
  batch = first(batches.train)
  gw, ga, val_metrics = val_grads(problem, weights.w, alpha, batches.val, weights.state)
  train_loss = lambda w, a: problem.train_loss(w, a, batch, weights.state)[0]

  def hvp(v):
    return optax.tree.add_scale(hessian_product(train_loss, weights.w, alpha, v), damping, v)
  z = inverse_hvp(hvp, gw, solver, k, eta)
  mixed = exact_mixed_product(train_loss, weights.w, alpha, z)
  g = jax.tree_util.tree_map(lambda a, m: a - m, ga, mixed)
  return Estimate(g, weights, val_metrics)
