"""Zero-cost proxies: one signature, one registry.

``PROXIES[name](apply_fn, variables, batch, key, **options) -> scalar`` (see
:mod:`jaxnas.proxies.base` for the interface; every docstring gives the
formula and the reference convention). :func:`jitted` compiles one with its
options bound; :func:`score` scores once.

======== ================================================ ==============
name     score                                            larger is
======== ================================================ ==============
ntk      statistic of the empirical NTK (TE-NAS cond)     worse (cond)
zen      Zen-score                                        better
bn       Zen's BatchNorm term                             better
zen_f    β1·log tr NTK + β2·BN                            better
synflow  Σ θ ⊙ ∂R/∂θ, R = 1ᵀf(1; |θ|)                     better
snip     Σ |θ ⊙ ∂L/∂θ|                                    better
grasp    Σ −θ ⊙ H ∂L/∂θ                                   better
grad_norm Σ_l ‖∂L/∂θ_l‖                                   better
naswot   log |det K_H| of the ReLU codes                  better
jacov    −Σ log(λ+k) + 1/(λ+k), λ of corr(∂Σf/∂x)         better
fisher   Σ_l Σ_c ½ mean_n (Σ_hw a ⊙ ∂L/∂a)²               better
======== ================================================ ==============
"""
from __future__ import annotations

import functools
from typing import Callable

import jax

from jaxnas.proxies.base import network_apply, supernet_apply
from jaxnas.proxies.kernels import jacov, naswot, ntk
from jaxnas.proxies.saliency import fisher, grad_norm, grasp, snip, synflow
from jaxnas.proxies.expressivity import bn, zen, zen_f

PROXIES: dict[str, Callable] = {
    'ntk': ntk, 'zen': zen, 'bn': bn, 'zen_f': zen_f, 'synflow': synflow, 'snip': snip,
    'grasp': grasp, 'grad_norm': grad_norm, 'naswot': naswot, 'jacov': jacov,
    'fisher': fisher,
}

# +1 where a larger score predicts a better network, −1 where a smaller one does
# (the NTK condition number: TE-NAS ranks by it ascending).
SIGN = {name: 1 for name in PROXIES} | {'ntk': -1}


def get_proxy(name: str) -> Callable:
  try:
    return PROXIES[name]
  except KeyError:
    raise ValueError(f'unknown proxy {name!r}; known proxies: {", ".join(PROXIES)}') from None


def sign(name: str, options: dict | None = None) -> int:
  """+1 if larger is better for this proxy and options, else −1."""
  get_proxy(name)
  if name == 'ntk' and (options or {}).get('statistic', 'cond') != 'cond':
    return 1
  return SIGN[name]


def jitted(name: str, apply_fn, **options) -> Callable:
  """``(variables, batch, key) -> scalar``, compiled once."""
  return jax.jit(functools.partial(get_proxy(name), apply_fn, **options))


def score(name: str, apply_fn, variables, batch, key, **options) -> float:
  return float(jitted(name, apply_fn, **options)(variables, batch, key))


__all__ = ['PROXIES', 'get_proxy', 'jitted', 'network_apply', 'score', 'sign', 'supernet_apply']
