"""Zero-cost proxies: one signature, one registry.

``PROXIES[name].fn(apply_fn, variables, batch, key, **options) -> scalar`` (see
:mod:`jaxnas.proxies.base` for the interface; every docstring gives the
formula and the reference convention). A proxy is its function and one entry
(:class:`ProxySpec`: its sign, whether the one-hot supernet computes it exactly,
whether FreeDARTS takes it of α). :func:`jitted` compiles one with its options
bound; :func:`score` scores once.

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
from typing import Any, Callable, NamedTuple

import jax

from jaxnas import options as options_lib
from jaxnas.proxies.base import network_apply, supernet_apply
from jaxnas.proxies.gram import jacov, naswot, ntk
from jaxnas.proxies.saliency import fisher, grad_norm, grasp, snip, synflow
from jaxnas.proxies.expressivity import bn, zen, zen_f


class ProxySpec(NamedTuple):
  """A registered proxy: its function (options keyword-only, with their defaults and
  limits: ``--{proxy}-{option}`` on ``jaxnas zc``) and what the rest of jaxnas needs to
  know of it."""
  fn: Callable
  # +1 where a larger score predicts a better network, −1 where a smaller one does;
  # or a function of the options that says which
  sign: int | Callable[[dict], int] = 1
  # built from the logits and their gradients alone: the one-hot supernet computes it
  # exactly (jaxnas.zc scores through it; proxies that read the network's insides,
  # ReLU codes or BatchNorm statistics or layer outputs, would see the unused ops)
  supernet_exact: bool = False
  # a pruning saliency that FreeDARTS takes of α (jaxnas.free)
  of_alpha: bool = False

  @property
  def options(self) -> dict[str, options_lib.Param]:
    return options_lib.signature_options(self.fn)


PROXIES: dict[str, ProxySpec] = {
    # TE-NAS ranks by the condition number ascending; the trace and log-det grow with
    # trainability
    'ntk': ProxySpec(ntk, lambda o: -1 if o.get('statistic', 'cond') == 'cond' else 1,
                     supernet_exact=True),
    'zen': ProxySpec(zen),
    'bn': ProxySpec(bn),
    'zen_f': ProxySpec(zen_f),
    'synflow': ProxySpec(synflow, supernet_exact=True, of_alpha=True),
    'snip': ProxySpec(snip, supernet_exact=True, of_alpha=True),
    'grasp': ProxySpec(grasp, supernet_exact=True, of_alpha=True),
    'grad_norm': ProxySpec(grad_norm, supernet_exact=True),
    'naswot': ProxySpec(naswot),
    'jacov': ProxySpec(jacov, supernet_exact=True),
    'fisher': ProxySpec(fisher),
}


def get_proxy(name: str) -> Callable:
  return _spec(name).fn


def _spec(name: str) -> ProxySpec:
  try:
    return PROXIES[name]
  except KeyError:
    raise ValueError(f'unknown proxy {name!r}; known proxies: {", ".join(PROXIES)}') from None


def names(**flags) -> tuple[str, ...]:
  """The proxies whose entries have ``flags`` (``names(supernet_exact=True)``)."""
  return tuple(n for n, s in PROXIES.items() if all(getattr(s, k) == v for k, v in flags.items()))


def bind_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
  """Every option of proxy ``name``: the given ones checked against their limits, the
  defaults of the rest (an unknown option is an error naming the known ones)."""
  return options_lib.bind_options(PROXIES, name, options, 'proxy')


def sign(name: str, options: dict | None = None) -> int:
  """+1 if larger is better for this proxy and options, else −1."""
  s = _spec(name).sign
  return s(options or {}) if callable(s) else s


def jitted(name: str, apply_fn, **options) -> Callable:
  """``(variables, batch, key) -> scalar``, compiled once."""
  return jax.jit(functools.partial(get_proxy(name), apply_fn, **options))


def score(name: str, apply_fn, variables, batch, key, **options) -> float:
  return float(jitted(name, apply_fn, **options)(variables, batch, key))


__all__ = ['PROXIES', 'ProxySpec', 'bind_options', 'get_proxy', 'jitted', 'names',
           'network_apply', 'score', 'sign', 'supernet_apply']
