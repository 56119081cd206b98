"""DrNAS (Chen et al. 2021): the mixing weights of an edge drawn from a Dirichlet.

α holds the concentration parameters through ``c = elu(α) + 1`` (positive);
each edge's weights are one reparameterised sample ``w ~ Dir(c)``, so that
``∂w/∂c`` is the pathwise derivative (JAX differentiates its gamma sampler
implicitly). The regulariser is DrNAS' KL to the anchor ``Dir(1)``, summed over
every edge of every cell::

    KL(Dir(c) ‖ Dir(1)) = ln Γ(c₀) − Σ ln Γ(c_i) − ln Γ(K) + Σ (c_i − 1)(ψ(c_i) − ψ(c₀)),

c₀ = Σ c_i, K ops, weighted by ``kl_weight`` (xiangning-chen/DrNAS ``201-space``
``search_model.py`` ``_get_kl_reg``, ``reg_scale`` 1e-3 with ``--reg_type kl``;
its default ``--reg_type l2`` is Adam's weight decay of 1e-3 on α instead, which
jaxnas' α optimiser applies anyway: ``--drnas-kl-weight 0`` gives that recipe).
Without a key the weights are the Dirichlet's mean ``c / c₀``; the derive rule
reads ``softmax(α)``, as DrNAS' ``genotype()``.
"""
from __future__ import annotations

from typing import Annotated, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from jaxnas.options import Limits
from jaxnas.relax.base import Relaxation, linear_ramp


def concentration(a):
  return jax.nn.elu(a) + 1.0


def kl_to_uniform(c):
  """``KL(Dir(c) ‖ Dir(1))`` of each row of ``c`` (module docstring)."""
  c0 = jnp.sum(c, axis=-1)
  k = c.shape[-1]
  return (gammaln(c0) - jnp.sum(gammaln(c), axis=-1) - gammaln(jnp.asarray(k, c.dtype))
          + jnp.sum((c - 1.0) * (digamma(c) - digamma(c0)[..., None]), axis=-1))


def kl_loss(alphas: Sequence[jax.Array]):
  return sum(jnp.sum(kl_to_uniform(concentration(a))) for a in alphas)


def mix(a, key=None, progress=None):
  c = concentration(a)
  if key is None:
    return c / jnp.sum(c, axis=-1, keepdims=True)
  return jax.random.dirichlet(key, c).astype(a.dtype)


def drnas(*, kl_weight: Annotated[float, Limits('weight of the KL to Dir(1) (DrNAS reg_scale 1e-3, '
                                               'reg_type kl)', min=0)] = 1e-3) -> Relaxation:
  """DrNAS' relaxation (module docstring)."""
  return Relaxation('drnas', mix, (('kl_weight', kl_weight),), kl_loss,
                    linear_ramp(kl_weight, kl_weight), stochastic=True,
                    derive_fn=lambda a: jax.nn.softmax(a, axis=-1))
