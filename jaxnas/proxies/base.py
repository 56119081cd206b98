"""What every proxy shares: the network interface, the weights it scores, the loss.

A proxy is ``proxy(apply_fn, variables, batch, key, **options) -> scalar``:

* ``apply_fn(variables, x, train, mutable=False)`` returns the logits, or
  ``(logits, collections)`` when ``mutable`` names collections to return —
  Flax's ``Module.apply`` convention. :func:`network_apply` and
  :func:`supernet_apply` adapt a discrete network and a supernet at a fixed α.
* ``variables`` is ``{'params': ..., 'batch_stats': ...}``;
* ``batch`` is ``(x, y)``, images NHWC (label-free proxies read only the shape
  of ``x``, or ``x`` itself, never ``y``);
* ``key`` a PRNG key (proxies with no randomness ignore it).

The *weights* a proxy scores are the conv and linear weights (the leaves
named in :data:`jaxnas.ops.FAN_IN`), as the reference code scores the
``weight`` of every ``nn.Conv2d`` and ``nn.Linear``: no biases, no BatchNorm.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import ops

ApplyFn = Callable[..., Any]


def network_apply(model) -> ApplyFn:
  """The interface for a discrete network (``apply(v, x, train=...) -> (logits, aux)``)."""
  def apply(variables, x, train, mutable=False):
    out = model.apply(variables, x, train=train, mutable=mutable)
    if mutable:
      (logits, _), state = out
      return logits, state
    return out[0]
  return apply


def supernet_apply(model, alpha) -> ApplyFn:
  """The interface for a supernet at fixed ``alpha`` (``apply(v, x, alpha, train=...) -> logits``)."""
  def apply(variables, x, train, mutable=False):
    return model.apply(variables, x, alpha, train=train, mutable=mutable)
  return apply


def logits_train(apply_fn: ApplyFn, variables, x, collections=('batch_stats',)):
  """Logits in training mode (batch statistics in BatchNorm) and the returned collections."""
  return apply_fn(variables, x, True, mutable=list(collections))


def is_weight(path) -> bool:
  name = path[-1]
  name = getattr(name, 'key', getattr(name, 'name', name))
  return name in ops.FAN_IN


def split_weights(params):
  """``(weights, rest)``: the scored weights and every other leaf, as two dicts
  keyed by path; :func:`merge` puts them back."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  weights = {jax.tree_util.keystr(p): v for p, v in flat if is_weight(p)}
  rest = {jax.tree_util.keystr(p): v for p, v in flat if not is_weight(p)}
  if not weights:
    raise ValueError('the network has no conv or linear weights to score (leaves named '
                     f'{", ".join(ops.FAN_IN)})')
  return weights, rest


def merge(params, weights: dict, rest: dict):
  """The ``params`` tree with its leaves taken from ``weights`` and ``rest``."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = [weights.get(jax.tree_util.keystr(p), rest.get(jax.tree_util.keystr(p)))
            for p, _ in paths]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def cross_entropy(apply_fn: ApplyFn, variables, batch) -> Callable:
  """``weights -> mean cross-entropy`` of the batch, BatchNorm in training mode."""
  _, rest = split_weights(variables['params'])

  def loss(weights):
    v = dict(variables, params=merge(variables['params'], weights, rest))
    logits, _ = logits_train(apply_fn, v, batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
  return loss


def normal_like(key, arrays: dict) -> dict:
  """N(0, 1) draws shaped like each array of a dict, from one call of the RNG
  (one call per leaf makes XLA CPU compile for over a minute on a supernet)."""
  if not arrays:
    return {}
  names = sorted(arrays)
  sizes = [int(np.prod(arrays[k].shape)) for k in names]
  z = jax.random.normal(key, (sum(sizes),), jnp.float32)
  parts = jnp.split(z, np.cumsum(sizes)[:-1])
  return {k: p.reshape(arrays[k].shape).astype(arrays[k].dtype) for k, p in zip(names, parts)}


def tree_sum(tree) -> jax.Array:
  return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))
