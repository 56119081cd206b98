"""Zero-cost DARTS' label-free warm-up step: ascend Zen(F) on Gaussian inputs.

Zen(F) = β1·log tr Θ + β2·Σ_BN log sqrt(mean_c σ²_c)
(:func:`jaxnas.proxies.expressivity.zen_f`), with the NTK trace by its
two-pass estimate (one backward pass per gradient). No data and no labels are
read.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxnas import proxies


def warmup_step(spec, state, epochs):
  """One warm-up step of a search of ``epochs`` epochs (``spec`` a
  :class:`jaxnas.search.StepSpec`).

  Moving w: n weight steps (the estimator's training batches per step), each on its
  own Gaussian batch of ``spec.warmup.batch_size`` images, by the weight optimiser on
  −∇w Zen(F), so that the schedule counts them as the labelled steps. Moving α: one α
  step on −∇α Zen(F) at the step's start weights. BatchNorm statistics are left as
  they are.
  """
  settings = spec.warmup
  key = jax.random.wrap_key_data(state.key)
  key, k_alpha, k_w = jax.random.split(key, 3)
  shape = jax.ShapeDtypeStruct((settings.batch_size,) + tuple(spec.image_shape), jnp.float32)
  wopt, aopt, n = spec.weight_opt(epochs), spec.alpha_opt(), spec.estimator.train_batches

  def zen_f(params, alpha, k):
    return proxies.expressivity.zen_f(
        proxies.supernet_apply(spec.model, alpha),
        {'params': params, 'batch_stats': state.batch_stats}, (shape, None), k,
        beta1=settings.beta1, beta2=settings.beta2, estimate=True)
  params, w_opt, wstep, alpha, a_opt = (state.params, state.w_opt, state.wstep, state.alpha,
                                        state.a_opt)
  values = []
  if settings.moves in ('alpha', 'both'):
    value, ga = jax.value_and_grad(zen_f, argnums=1)(params, alpha, k_alpha)
    updates, a_opt = aopt.update(jax.tree_util.tree_map(jnp.negative, ga), a_opt, alpha)
    alpha = optax.apply_updates(alpha, updates)
    values.append(value)
  if settings.moves in ('w', 'both'):
    def body(carry, k):
      params, w_opt = carry
      value, g = jax.value_and_grad(zen_f)(params, state.alpha, k)
      updates, w_opt = wopt.tx.update(jax.tree_util.tree_map(jnp.negative, g), w_opt, params)
      return (optax.apply_updates(params, updates), w_opt), value
    (params, w_opt), vals = jax.lax.scan(body, (params, w_opt), jax.random.split(k_w, n))
    wstep = wstep + n
    values.append(jnp.mean(vals))
  new = state._replace(params=params, w_opt=w_opt, alpha=alpha, a_opt=a_opt, wstep=wstep,
                       key=jax.random.key_data(key))
  return new, {'zen_f': values[-1], 'lr': wopt.lr(state.wstep)}
