"""DrNAS (Chen et al. 2021): the mixing weights of an edge drawn from a Dirichlet.

α holds the concentration parameters through ``c = elu(α) + 1`` (positive);
each edge's weights are one reparameterised sample ``w ~ Dir(c)``, so that
``∂w/∂c`` is the pathwise derivative (JAX differentiates its gamma sampler
implicitly). The regulariser is DrNAS' KL to the anchor ``Dir(1)``, summed over
every edge of every cell::

    KL(Dir(c) ‖ Dir(1)) = ln Γ(c₀) − Σ ln Γ(c_i) − ln Γ(K) + Σ (c_i − 1)(ψ(c_i) − ψ(c₀)),

c₀ = Σ c_i, K ops, weighted by ``kl_weight`` (xiangning-chen/DrNAS ``201-space``
``search_model.py`` ``_get_kl_reg``: ``reg_scale`` with ``--reg_type kl``). DrNAS'
searches default to ``--reg_type l2``: no KL, and Adam's weight decay of
``reg_scale`` 1e-3 on α (``architect.py``), which is DARTS' α decay that jaxnas
applies anyway; so ``kl_weight`` is 0 by default. Its ``--reg_type kl`` also drops
α's weight decay: ``--drnas-kl-weight 1e-3 --alpha-weight-decay 0`` is that recipe.
Without a key the weights are the Dirichlet's mean ``c / c₀``; the derive rule
reads ``softmax(α)``, as DrNAS' ``genotype()``.

The recipe (:data:`RECIPE`) is DrNAS' ``201-space/train_search.py``: SGD weight
decay 3e-4 without Nesterov momentum (not NAS-Bench-201's 5e-4 with Nesterov), the
rest as DARTS' (lr 0.025 to 0.001, batch 64, α by Adam 3e-4, first order), 100
epochs (``--epochs 100``: an epoch count is the run's, not a recipe's). Its
progressive variant (``train_search_progressive.py``: partial channels 4 then 2,
pruning to 3 ops per edge after 50 epochs) and its DARTS-space search (lr 0.1,
α lr 6e-4, partial channels 6, progressive) are not implemented: on the DARTS
space the recipe leaves DARTS' settings.
"""
from __future__ import annotations

from typing import Annotated, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from jaxnas.options import Limits, Setting
from jaxnas.relax.base import Relaxation, linear_ramp

_DRNAS = 'xiangning-chen/DrNAS 201-space/train_search.py'
RECIPE = {
    'optim.weight_decay': Setting(3e-4, f'{_DRNAS} (--weight_decay 3e-4)'),
    'optim.nesterov': Setting(False, f'{_DRNAS} (torch.optim.SGD without nesterov)'),
}


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


def drnas(*, kl_weight: Annotated[float, Limits('weight of the KL to Dir(1) (0: DrNAS --reg_type '
                                               'l2, its default; --reg_type kl: reg_scale 1e-3)',
                                               min=0)] = 0.0) -> Relaxation:
  """DrNAS' relaxation (module docstring)."""
  return Relaxation('drnas', mix, (('kl_weight', kl_weight),), kl_loss,
                    linear_ramp(kl_weight, kl_weight), stochastic=True,
                    derive_fn=lambda a: jax.nn.softmax(a, axis=-1))
