"""DARTS' softmax, FreeDARTS' raw α, PC-DARTS, Fair DARTS and β-DARTS.

Each factory takes its options as keywords (defaults: the authors'), and
returns a :class:`~jaxnas.relax.base.Relaxation`.
"""
from __future__ import annotations

from typing import Annotated, Sequence

import jax
import jax.numpy as jnp

from jaxnas.options import Limits, Setting
from jaxnas.relax.base import Array, Relaxation, linear_ramp


def softmax_mix(a: Array, key=None, progress=None) -> Array:
  """DARTS: ``w_{e,o} = exp(α_{e,o}) / Σ_o' exp(α_{e,o'})``."""
  return jax.nn.softmax(a, axis=-1)


def raw_mix(a: Array, key=None, progress=None) -> Array:
  """FreeDARTS: the raw α are the op weights, ``w = α``."""
  return a


def sigmoid_mix(a: Array, key=None, progress=None) -> Array:
  """Fair DARTS: independent weights ``w_{e,o} = σ(α_{e,o})`` (ops do not compete)."""
  return jax.nn.sigmoid(a)


def zero_one_loss(alphas: Sequence[Array]) -> Array:
  """Fair DARTS' zero-one loss ``−mean((σ(α) − ½)²)`` over every entry of every
  cell: pushes each σ(α) towards 0 or 1."""
  s = jnp.concatenate([jax.nn.sigmoid(a).ravel() for a in alphas])
  return -jnp.mean((s - 0.5) ** 2)


def beta_decay_loss(alphas: Sequence[Array]) -> Array:
  """β-DARTS' β-decay ``mean_e log Σ_o exp(α_{e,o})`` over every edge of every
  cell: its gradient is the softmax, so it pulls the α of each edge towards
  each other and keeps them small."""
  return jnp.mean(jnp.concatenate([jax.nn.logsumexp(a, axis=-1) for a in alphas]))


def softmax() -> Relaxation:
  """DARTS (Liu et al. 2019): a softmax over each edge's ops."""
  return Relaxation('softmax', softmax_mix)


def raw() -> Relaxation:
  """FreeDARTS: the raw α as op weights."""
  return Relaxation('raw', raw_mix)


def pc(*, k: Annotated[int, Limits('1/K of the channels through the mixed ops '
                                    '(yuhuixu1993/PC-DARTS model_search.py: k = 4)', min=1)] = 4
       ) -> Relaxation:
  """PC-DARTS (Xu et al. 2020): softmax mixing of 1/K of the channels, a channel
  shuffle, and edge normalisation β per edge."""
  return Relaxation('pc', softmax_mix, (('k', k),), partial_channels=k, edge_normalization=True)


# PC-DARTS' search settings where they differ from DARTS'.
_PC = 'yuhuixu1993/PC-DARTS train_search.py'
PC_RECIPE = {
    'size.batch_size': Setting(256, f'{_PC} (--batch_size 256)'),
    'optim.lr': Setting(0.1, f'{_PC} (--learning_rate 0.1)'),
    'optim.lr_min': Setting(0.0, f'{_PC} (--learning_rate_min 0.0)'),
    'optim.alpha_lr': Setting(6e-4, f'{_PC} (--arch_learning_rate 6e-4)'),
    'optim.alpha_warmup_epochs': Setting(15, f'{_PC} (architect.step only if epoch >= 15, of 50)',
                                         of_epochs=50),
}


def fair(*, weight: Annotated[float, Limits('weight of the zero-one loss (FairDARTS: w0-1 = 10)',
                                           min=0)] = 10.0,
         threshold: Annotated[float | None, Limits('derive: keep an op whose σ reaches it (FairDARTS: '
                                                  '0.85; None: the space\'s rule)', min=0)] = 0.85
         ) -> Relaxation:
  """Fair DARTS (Chu et al. 2020): independent sigmoids over the ops other than
  ``none`` (FairDARTS ``fairdarts/genotypes.py`` drops it: a zero op's σ means
  nothing, and the zero-one loss averages over the ops that remain), the
  zero-one loss, and the threshold derive rule."""
  return Relaxation('fair', sigmoid_mix, (('threshold', threshold), ('weight', weight)),
                    zero_one_loss, linear_ramp(weight, weight), threshold=threshold,
                    excluded_ops=('none',))


# Fair DARTS' search settings where they differ from DARTS'.
_FAIR = 'xiaomi-automl/FairDARTS fairdarts/train_search.py'
FAIR_RECIPE = {
    'size.batch_size': Setting(128, f'{_FAIR} (--batch_size 128)'),
    'optim.lr': Setting(0.005, f'{_FAIR} (--learning_rate 0.005)'),
    'optim.alpha_lr': Setting(3e-3, f'{_FAIR} (--arch_learning_rate 3e-3)'),
    'optim.alpha_beta1': Setting(0.9, f'{_FAIR} (Adam betas (0.9, 0.999))'),
    'optim.alpha_init_scale': Setting(0.0, 'xiaomi-automl/FairDARTS fairdarts/model_search.py (α = 0)'),
}


def beta(*, weight_start: Annotated[float, Limits('β-decay weight λ at epoch 0', min=0)] = 0.0,
         weight_per_epoch: Annotated[float, Limits('growth of λ per epoch (Beta-DARTS: 50/100)',
                                                   min=0)] = 0.5
         ) -> Relaxation:
  """β-DARTS (Ye et al. 2022): softmax mixing and the β-decay loss with weight
  ``λ_e = weight_start + weight_per_epoch · e``, as the reference computes it
  (Sunshine-Ye/Beta-DARTS ``optimizers/darts/architect.py`` ``_backward_step``:
  ``0 + 50*epoch/100``). The schedule does not depend on the number of epochs: a
  50-epoch search ends at λ = 24.5, as the published searches did."""
  return Relaxation('beta', softmax_mix,
                    (('weight_per_epoch', weight_per_epoch), ('weight_start', weight_start)),
                    beta_decay_loss, lambda epoch, epochs: weight_start + weight_per_epoch * epoch)
