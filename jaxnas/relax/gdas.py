"""GDAS (Dong and Yang 2019): a hard one-hot Gumbel sample per edge, straight-through.

Per edge, with Gumbel noise ``g`` and temperature τ::

    p = softmax((log softmax(α) + g) / τ),     w = onehot(argmax p) + (p − stop_grad(p))

The forward value of ``w`` is exactly one-hot (``p − p`` is exactly 0), its
derivative that of ``p``: the straight-through Gumbel-softmax estimator. τ falls
linearly from ``tau_max`` to ``tau_min`` over the search,
``τ_e = τ_max − (τ_max − τ_min)·e/(E − 1)`` (D-X-Y/AutoDL-Projects
``exps/NAS-Bench-201-algos/GDAS.py``, ``search_model.set_tau``; its NAS-Bench-201
scripts pass τ_max = 10, τ_min = 0.1). Without a key (deriving, scoring at fixed
α) the weights are ``softmax(α)``, the rule AutoDL's ``genotype()`` reads (a
supernet pass without a key runs each edge's most likely op, at its weight).

As in AutoDL, each edge runs only its sampled op (``hard``: the supernet's
edges are :class:`jaxnas.spaces.cells.SelectedOp`), so a step costs about one
network's step, not the supernet's: the α gradient reaches the sampled op's
weight through its output, and, on NAS-Bench-201, the other ops' weights
through the scalars AutoDL adds in their place (the rule is each space's
``HARD_SELECT``), not through every op's output as the textbook
straight-through estimator would.
"""
from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp

from jaxnas.options import Limits
from jaxnas.relax.base import Relaxation


def gumbel_hard(a, key, tau):
  """The straight-through hard Gumbel sample of each row of ``a`` at temperature ``tau``."""
  g = jax.random.gumbel(key, a.shape, a.dtype)
  p = jax.nn.softmax((jax.nn.log_softmax(a, axis=-1) + g) / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(p, axis=-1), a.shape[-1], dtype=a.dtype)
  return hard + (p - jax.lax.stop_gradient(p))


def gdas(*, tau_max: Annotated[float, Limits('Gumbel temperature at the first epoch (AutoDL: 10)',
                                             gt=0)] = 10.0,
         tau_min: Annotated[float, Limits('Gumbel temperature at the last epoch (AutoDL: 0.1)',
                                          gt=0)] = 0.1) -> Relaxation:
  """GDAS' relaxation (module docstring)."""
  def mix(a, key=None, progress=None):
    if key is None:
      return jax.nn.softmax(a, axis=-1)
    done = 1.0 if progress is None else progress
    return gumbel_hard(a, key, tau_max - (tau_max - tau_min) * done)
  return Relaxation('gdas', mix, (('tau_max', tau_max), ('tau_min', tau_min)), stochastic=True,
                    hard=True)
