"""The optimisers of search and evaluation training, as PyTorch's recipes in optax.

The references step PyTorch's ``CosineAnnealingLR`` once per epoch, clip with
``clip_grad_norm_`` before the step, and add the weight decay to the gradient
(L2, not decoupled): :func:`sgd` and :func:`alpha_optimizer` are those.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def cosine_per_epoch(lr: float, lr_min: float, epochs: int, steps_per_epoch: int
                     ) -> Callable[[jax.Array], jax.Array]:
  """PyTorch's ``CosineAnnealingLR(T_max=epochs, eta_min=lr_min)`` stepped per epoch, as a
  schedule of the update count: epoch e uses ``lr_min + (lr − lr_min)(1 + cos(π e / epochs)) / 2``."""
  def schedule(count):
    epoch = jnp.minimum(count // steps_per_epoch, epochs)
    return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * epoch / epochs))
  return schedule


def sgd(lr: Callable, momentum: float, weight_decay: float, grad_clip: float = 0.0,
        nesterov: bool = False) -> optax.GradientTransformation:
  """``torch.optim.SGD(lr, momentum, weight_decay, nesterov)`` after
  ``clip_grad_norm_(grad_clip)`` (0: no clipping), ``lr`` a schedule of the update count."""
  return optax.chain(optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity(),
                     optax.add_decayed_weights(weight_decay),
                     optax.trace(decay=momentum, nesterov=nesterov),
                     optax.scale_by_schedule(lambda c: -lr(c)))


ALPHA_OPTIMIZERS = ('adam', 'sgd')


def alpha_optimizer(kind: str, lr: float, beta1: float, beta2: float, weight_decay: float
                    ) -> optax.GradientTransformation:
  """``torch.optim.Adam(lr, betas, weight_decay)`` (``kind`` 'adam', eps 1e-8) or
  ``torch.optim.SGD(lr, weight_decay)`` ('sgd'): the L2 term added to the gradient."""
  if kind not in ALPHA_OPTIMIZERS:
    raise ValueError(f'unknown alpha optimizer {kind!r}; known: {", ".join(ALPHA_OPTIMIZERS)}')
  scale = optax.scale_by_adam(b1=beta1, b2=beta2, eps=1e-8) if kind == 'adam' else optax.identity()
  return optax.chain(optax.add_decayed_weights(weight_decay), scale, optax.scale(-lr))
