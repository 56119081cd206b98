"""The bilevel problem and the estimator interface shared by every hypergradient estimator.

A search solves ``min_α L_val(w*(α), α)`` with ``w*(α) = argmin_w L_train(w, α)``.
Both losses are pure functions ``(w, α, batch, state) -> (loss, (state, metrics))``
where ``state`` is model state that is not differentiated (BatchNorm
statistics; ``()`` when there is none).

An estimator is one function with the signature of :data:`Estimator`: from
the weights ``w`` (with their optimiser state), α and this search step's
batches it returns an estimate of ``dL_val/dα`` and the weights after the
weight updates it makes itself (none, for the DARTS family: the search moves α
first and then takes the weight step at the new α, as quark0/darts does; see
``EstimatorSpec.weights_after_alpha``). The search moves α by its own optimiser.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
PyTree = Any
Loss = Callable[[PyTree, PyTree, PyTree, PyTree], tuple[Array, tuple[PyTree, dict]]]


class Problem(NamedTuple):
  """``train_loss`` and ``val_loss``: ``(w, α, batch, state) -> (loss, (state, metrics))``.

  ``forward_over_reverse``: ``jax.jvp`` of the losses' gradients is possible (no
  custom VJP on the way whose rules call a custom VJP: jaxnas' kernels call none
  when traced under :func:`jaxnas.kernels.forward_over_reverse`); second-order
  estimators then take their mixed products that way, which is cheaper than reverse
  over reverse, each traced under ``jvp_context()`` (the model's say: jaxnas'
  supernets give :func:`jaxnas.kernels.forward_over_reverse`).
  """
  train_loss: Loss
  val_loss: Loss
  forward_over_reverse: bool = False
  jvp_context: Callable[[], ContextManager] = contextlib.nullcontext


class WeightOpt(NamedTuple):
  """The weight optimiser: the optax transformation of a real weight step, its
  learning-rate schedule (of the weight-step count), and the transformation of
  DARTS' virtual step: the same optimiser at learning rate 1 and without its
  gradient clipping, so that its update times η is the real step's and times ξ the
  virtual one's, whatever η is (0 at the end of a schedule to ``lr_min=0``). None:
  ``tx`` itself, its update divided by η. Both must share one state structure
  (``optax.identity`` in the clip's place does), so that the virtual step reads
  the real step's momentum."""
  tx: optax.GradientTransformation
  lr: Callable[[Array], Array]
  virtual_tx: optax.GradientTransformation | None = None


class Weights(NamedTuple):
  """The lower level's variables: weights, model state, optimiser state, weight-step count."""
  w: PyTree
  state: PyTree
  opt_state: PyTree
  step: Array


class Batches(NamedTuple):
  """One search step's data: ``train`` stacks n >= 1 batches on a leading axis
  (estimators that take one weight step use the first), ``val`` is one batch."""
  train: PyTree
  val: PyTree


class Estimate(NamedTuple):
  alpha_grad: PyTree
  weights: Weights
  metrics: dict


class EstimatorFn(Protocol):
  """``fn(problem, opt, weights, alpha, batches, key, *, options...) -> Estimate``; each
  option keyword-only, its default in the signature and its limits in ``Annotated``."""
  def __call__(self, problem: Problem, opt: WeightOpt, weights: Weights, alpha: PyTree,
               batches: Batches, key: Array, **options) -> Estimate: ...


def check_batches(batches: Batches, n: int) -> None:
  """Raises unless ``batches.train`` stacks the ``n`` batches an estimator's options ask for."""
  got = jax.tree_util.tree_leaves(batches.train)[0].shape[0]
  if got != n:
    raise ValueError(f'the estimator takes n = {n} training batches per step, got {got}')


def first(tree: PyTree) -> PyTree:
  """The first of the stacked training batches."""
  return jax.tree_util.tree_map(lambda a: a[0], tree)


def train_grad(problem: Problem, w, alpha, batch, state):
  """``∇w L_train(w, α)`` and ``(new model state, metrics)``."""
  (_, aux), g = jax.value_and_grad(problem.train_loss, has_aux=True)(w, alpha, batch, state)
  return g, aux


def apply_weight_grad(opt: WeightOpt, weights: Weights, g: PyTree, state: PyTree) -> Weights:
  """One optimiser step along the weight gradient ``g``; ``state`` the new model state."""
  updates, opt_state = opt.tx.update(g, weights.opt_state, weights.w)
  return Weights(optax.apply_updates(weights.w, updates), state, opt_state, weights.step + 1)


def prefixed(prefix: str, metrics: dict) -> dict:
  return {f'{prefix}_{k}': v for k, v in metrics.items()}


def weight_step(problem: Problem, opt: WeightOpt, weights: Weights, alpha: PyTree,
                batch: PyTree) -> tuple[Weights, dict]:
  """One optimiser step on ``L_train(w, α)``."""
  g, (state, metrics) = train_grad(problem, weights.w, alpha, batch, weights.state)
  return apply_weight_grad(opt, weights, g, state), prefixed('train', metrics)


def weight_steps(problem: Problem, opt: WeightOpt, weights: Weights, alpha: PyTree,
                 train_batches: PyTree) -> tuple[Weights, dict]:
  """One optimiser step on ``L_train(w, α)`` per stacked training batch (``lax.scan``);
  the weights after them and the mean training metrics."""
  def body(weights, batch):
    return weight_step(problem, opt, weights, alpha, batch)
  new, metrics = jax.lax.scan(body, weights, train_batches)
  return new, jax.tree_util.tree_map(jnp.mean, metrics)


def _val(problem: Problem, argnums, w, alpha, batch, state):
  (_, (_, metrics)), grads = jax.value_and_grad(problem.val_loss, argnums=argnums,
                                                has_aux=True)(w, alpha, batch, state)
  return grads, prefixed('val', metrics)


def val_grads(problem: Problem, w, alpha, batch, state):
  """``∇w L_val``, ``∇α L_val`` and the validation metrics (prefixed ``val_``)."""
  (gw, ga), metrics = _val(problem, (0, 1), w, alpha, batch, state)
  return gw, ga, metrics


def val_alpha_grad(problem: Problem, w, alpha, batch, state):
  """``∇α L_val`` and the validation metrics, without the weight gradient."""
  return _val(problem, 1, w, alpha, batch, state)


def exact_mixed_product(loss, w, alpha, v):
  """``∇²_{α,w} L(w, α) v = ∇α ⟨∇w L(w, α), v⟩``, exactly, by reverse over reverse.

  It works for every problem. Forward over reverse (:func:`mixed_product_fwd`)
  computes the same number more cheaply, but only where no custom VJP whose
  rules call a custom VJP lies on the way (``Problem.forward_over_reverse``):
  JAX cannot push a tangent through a ``custom_vjp`` call. (jaxnas' kernels call
  none traced under :func:`jaxnas.kernels.forward_over_reverse`.)
  """
  def inner(w, a):
    return optax.tree.vdot(jax.grad(loss, argnums=0)(w, a), v)
  return jax.grad(inner, argnums=1)(w, alpha)


def mixed_product_fwd(loss, w, alpha, v, context=contextlib.nullcontext):
  """``∇²_{α,w} L(w, α) v`` exactly, forward over reverse: the tangent of
  ``w ↦ ∇α L(w, α)`` along v. The inner gradient is taken in (w, α) and its α
  part kept, so that the inner reverse pass, not the outer tangent, meets every
  custom VJP that depends on w (the unused w part is dead code to XLA). Traced under
  ``context()`` (:attr:`Problem.jvp_context`)."""
  def grad_alpha(w):
    return jax.grad(loss, argnums=(0, 1))(w, alpha)[1]
  with context():
    return jax.jvp(grad_alpha, (w,), (v,))[1]


def hessian_product(loss, w, alpha, v):
  """``∇²_{w,w} L(w, α) v``, exactly (reverse over reverse, for the reason in
  :func:`exact_mixed_product`)."""
  return grad_and_hvp(lambda w: loss(w, alpha), w, v)[1]


def grad_and_hvp(loss, x, v=None, forward_over_reverse: bool = False,
                 context=contextlib.nullcontext):
  """``(∇L(x), ∇²L(x) v)`` exactly, in one program, for ``loss`` a scalar function of
  a pytree ``x``; ``v = ∇L(x)`` when None.

  Reverse over reverse (the default) applies the pullback of ``x ↦ ∇L(x)`` to v
  (H is symmetric), and with ``v=None`` to its own output, so the gradient is
  taken once. Forward over reverse (``jax.jvp`` of ``∇L`` along v) is cheaper
  but needs a model without nested custom VJPs (``Problem.forward_over_reverse``);
  with ``v=None`` it takes ∇L(x) first; traced under ``context()``
  (:attr:`Problem.jvp_context`).
  """
  grad = jax.grad(loss)
  if forward_over_reverse:
    with context():
      return jax.jvp(grad, (x,), (grad(x) if v is None else v,))
  g, pullback = jax.vjp(grad, x)
  return g, pullback(g if v is None else v)[0]


def tree_norm(x) -> Array:
  return optax.tree.norm(x)
