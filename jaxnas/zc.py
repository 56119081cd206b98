"""Zero-cost NAS: sample architectures, score each with a proxy, keep the best.

Two ways to score an architecture:

* ``network``: build its discrete network (one compile per architecture);
* ``supernet``: the raw-α supernet (output of an edge ``Σ_o α_o op_o(x)``) with
  a one-hot α — one compile for all architectures, ``vmap``-ped over α in
  chunks, one set of weights for all. The logits are those of the discrete
  network with the supernet's weights, and the weights of the unused ops get
  exactly zero gradient, so the proxies built from the logits and their
  gradients (:data:`SUPERNET_PROXIES`) score exactly that network. Proxies
  that read the network's insides (ReLU codes, BatchNorm statistics) would
  also see the unused ops: they always go through ``network``.

``via='auto'`` takes the supernet where it is exact and the space is
NAS-Bench-201 (DARTS' supernet pools with an extra BatchNorm and its
discrete cells differ in preprocessing), the networks otherwise.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import proxies, sharding, spaces
from jaxnas.config import option
from jaxnas.spaces import get_space
from jaxnas.spaces.base import init_variables

SUPERNET_PROXIES = ('synflow', 'snip', 'grasp', 'grad_norm', 'ntk')
VIAS = ('auto', 'supernet', 'network')


@dataclasses.dataclass(frozen=True)
class ZCConfig:
  space: str = option('nb201', 'search space', choices=lambda: spaces.SPACES)
  proxy: str = option('synflow', 'zero-cost proxy', choices=lambda: proxies.PROXIES)
  samples: int = option(100, 'architectures to sample and score', min=1)
  dataset: str = option('digits', 'digits, a tensorflow-datasets name, or npz:PATH',
                        check=data_lib.check_name)
  data_dir: str | None = option(None, 'tensorflow-datasets directory')
  channels: int | None = option(None, "initial channels C (None: 8 on digits, else the space's "
                                      "evaluation size)", min=1)
  layers: int | None = option(None, 'cells (darts) or cells per stage (nb201)', min=1)
  batch_size: int = option(64, 'images in the batch the proxy reads', min=1)
  via: str = option('auto', 'score through the one-hot supernet or each network', choices=VIAS)
  chunk: int = option(16, 'supernet: architectures vmapped at once', min=1)
  seed: int = option(0, 'random seed (sampling, weights, batch)')
  devices: str | None = option(None, "'all' or N: the batch split over a mesh (None: "
                                     "$JAXNAS_DEVICES, else all)", check=sharding.check_devices)
  workdir: str = option('runs/zc', 'output directory')

  def __post_init__(self):
    config_lib.validate(self)
    resolve_via(get_space(self.space), self.proxy, self.via)


@dataclasses.dataclass
class ZCResult:
  best: Any
  best_score: float
  ranking: list[tuple[str, float]]   # best first
  via: str
  seconds: float                     # all scoring, compile included
  archs_per_second: float            # compile excluded


def resolve_via(space, proxy: str, via: str) -> str:
  """The way ``proxy`` scores architectures of ``space`` (a SearchSpace)."""
  if via == 'supernet' and proxy not in SUPERNET_PROXIES:
    raise ValueError(f'{proxy} reads the network\'s insides and is not exact through the '
                     f'supernet: use via network (supernet-exact: {", ".join(SUPERNET_PROXIES)})')
  if via == 'auto':
    return 'supernet' if space.onehot_supernet_exact and proxy in SUPERNET_PROXIES else 'network'
  return via


def _batch(ds: data_lib.Dataset, batch_size: int, seed: int):
  idx = np.random.default_rng(seed).choice(len(ds.x_train), min(batch_size, len(ds.x_train)),
                                           replace=False)
  return jnp.asarray(ds.normalize(ds.x_train[idx])), jnp.asarray(ds.y_train[idx])


def score_genotypes(space, genotypes: list, proxy: str, dataset: data_lib.Dataset,
                    channels: int, layers: int, batch_size: int = 64, via: str = 'auto',
                    chunk: int = 16, seed: int = 0, devices: str | None = None,
                    **options) -> tuple[np.ndarray, str, float, float]:
  """Scores of ``genotypes`` (in order); also the way used, the seconds spent
  (compile included) and the architectures per second (compile excluded).
  The batch is split over the ``devices`` mesh (:mod:`jaxnas.sharding`)."""
  proxies.get_proxy(proxy)
  sp = get_space(space) if isinstance(space, str) else space
  via = resolve_via(sp, proxy, via)
  batch = _batch(dataset, batch_size, seed)
  key = jax.random.key(seed)
  x0 = batch[0][:1]
  batch = sharding.put_batch(batch, sharding.make_mesh(devices))
  t0 = time.perf_counter()
  if via == 'supernet':
    model = sp.supernet(channels, layers, dataset.num_classes, 'raw')
    alphas = [sp.onehot(g) for g in genotypes]
    stacked = {k: jnp.asarray(np.stack([a[k] for a in alphas])) for k in alphas[0]}
    variables = init_variables(model, key, x0, {k: v[0] for k, v in stacked.items()})
    fn = proxies.get_proxy(proxy)

    def one(alpha):
      return fn(proxies.supernet_apply(model, alpha), variables, batch, key, **options)
    run = jax.jit(lambda a: jax.lax.map(one, a, batch_size=chunk))
    first = {k: v[:min(chunk, len(genotypes))] for k, v in stacked.items()}
    jax.block_until_ready(run(first))  # compiles (for the first chunk's shape) and warms up
    t1 = time.perf_counter()
    scores = np.asarray(run(stacked))
    elapsed = time.perf_counter() - t1
    return scores, via, time.perf_counter() - t0, len(genotypes) / elapsed
  scores, run_seconds = [], 0.0
  for g in genotypes:
    net = sp.network(g, channels, layers, dataset.num_classes,
                     **{k: False for k in sp.network_options})  # no auxiliary head
    variables = init_variables(net, key, x0)
    fn = proxies.jitted(proxy, proxies.network_apply(net), **options)
    compiled = fn.lower(variables, batch, key).compile()
    t1 = time.perf_counter()
    scores.append(float(compiled(variables, batch, key)))
    run_seconds += time.perf_counter() - t1
  return np.asarray(scores), via, time.perf_counter() - t0, len(genotypes) / run_seconds


def zc(config: ZCConfig, dataset: data_lib.Dataset | None = None, **options) -> ZCResult:
  """Samples ``config.samples`` architectures, scores them, writes ``ranking.json``
  and the best genotype (``genotype.json``, ``genotype.txt``) to the work directory."""
  cfg = config
  sp = get_space(cfg.space)
  ds = dataset or data_lib.load(cfg.dataset, cfg.data_dir)
  small = cfg.dataset == 'digits'
  channels = cfg.channels or (sp.small['channels'] if small else sp.defaults['eval_channels'])
  layers = cfg.layers or (sp.small['layers'] if small else sp.defaults['eval_layers'])
  genotypes = sp.sample_distinct(cfg.samples, cfg.seed)
  scores, via, seconds, rate = score_genotypes(sp, genotypes, cfg.proxy, ds, channels,
                                               layers, cfg.batch_size, cfg.via, cfg.chunk,
                                               cfg.seed, cfg.devices, **options)
  sign = proxies.sign(cfg.proxy, options)
  ranked = np.argsort(-sign * np.nan_to_num(scores, nan=-sign * np.inf), kind='stable')
  ranking = [(str(genotypes[i]), float(scores[i])) for i in ranked]
  best = genotypes[int(ranked[0])]
  result = ZCResult(best, float(scores[ranked[0]]), ranking, via, seconds, rate)
  os.makedirs(cfg.workdir, exist_ok=True)
  with open(os.path.join(cfg.workdir, 'ranking.json'), 'w') as f:
    json.dump({'config': dataclasses.asdict(cfg), 'options': options, 'via': via,
               'seconds': seconds, 'archs_per_second': rate,
               'ranking': [{'genotype': g, 'score': s} for g, s in ranking]}, f, indent=1)
  with open(os.path.join(cfg.workdir, 'genotype.json'), 'w') as f:
    json.dump(best.to_json(), f, indent=1)
  with open(os.path.join(cfg.workdir, 'genotype.txt'), 'w') as f:
    f.write(str(best) + '\n')
  return result
