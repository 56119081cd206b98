"""Zero-cost NAS: sample architectures, score each with a proxy, keep the best.

Two ways to score an architecture:

* ``network``: build its discrete network (one compile per architecture);
* ``supernet``: the one-hot supernet, in which each edge runs only the op its
  one-hot α chooses (:class:`jaxnas.spaces.cells.SelectedOp`, a ``lax.switch``)
  — one compile for all architectures, one set of weights for all, the
  architectures run in sequence (``lax.map`` over chunks of α). The logits are
  those of the discrete network with the supernet's weights (its edges'
  convolution biases zeroed: :func:`_without_edge_biases`), and the weights of
  the unused ops get zero gradient, so the proxies built from the logits and
  their gradients (``proxies.PROXIES[name].supernet_exact``) score exactly that
  network, at that network's cost. Proxies that read the network's insides
  (ReLU codes, BatchNorm statistics) go through ``network``.

``via='auto'`` takes the supernet where it is exact and the space is
NAS-Bench-201 (DARTS' supernet pools with an extra BatchNorm and its
discrete cells differ in preprocessing), the networks otherwise.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import benchmark_table
from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import outputs, proxies, relax, sharding, spaces, xla
from jaxnas.config import Limits
from jaxnas.spaces import get_space
from jaxnas.spaces.base import init_variables

SUPERNET_PROXIES = proxies.names(supernet_exact=True)
VIAS = ('auto', 'supernet', 'network')
# The spaces whose one-hot raw-α supernet computes the discrete network's logits, so that
# the supernet-exact proxies may score through it: NAS-Bench-201's (the one-hot supernet
# has every edge of the discrete cell, and no BatchNorm the cell lacks); not DARTS' (its
# supernet follows each pooling op with a BatchNorm the network lacks, quark0/darts
# model_search.py MixedOp).
ONEHOT_SUPERNET_EXACT = frozenset({'nb201'})
# raw α, one op per edge: the one-hot supernet (module docstring)
ONE_HOT = relax.make('raw')._replace(hard=True)


ProxyOptions = config_lib.registry_field(lambda: proxies.PROXIES, 'proxy')


@dataclasses.dataclass(frozen=True)
class ZCConfig:
  space: Annotated[str, Limits(choices=lambda: spaces.SPACES)] = 'nb201'
  """search space"""
  proxy: Annotated[str, Limits(choices=lambda: proxies.PROXIES)] = 'synflow'
  """zero-cost proxy"""
  proxy_options: ProxyOptions = dataclasses.field(default_factory=dict)
  """the proxy's options (--{proxy}-{option})"""
  samples: Annotated[int | None, Limits(min=1)] = None
  """architectures to sample and score (None: 100, or the candidates)"""
  candidates: str | None = None
  """a file of architectures to rank instead of sampling: one genotype per line, or a JSON
  list or object keyed by genotype"""
  dataset: Annotated[str, Limits(check=data_lib.check_name)] = 'digits'
  """digits, a tensorflow-datasets name, or npz:PATH"""
  data_dir: str | None = None
  """tensorflow-datasets directory"""
  channels: Annotated[int | None, Limits(min=1)] = None
  """initial channels C (None: 8 on digits, else the space's evaluation size)"""
  layers: Annotated[int | None, Limits(min=1)] = None
  """cells (darts) or cells per stage (nb201)"""
  batch_size: Annotated[int, Limits(min=1)] = 64
  """images in the batch the proxy reads"""
  via: Annotated[str, Limits(choices=VIAS)] = 'auto'
  """score through the one-hot supernet or each network"""
  chunk: Annotated[int, Limits(min=1)] = 16
  """supernet: architectures scored per call"""
  seed: int = 0
  """random seed (sampling, weights, batch)"""
  devices: config_lib.Devices = None
  """'all' or N: the batch split over a mesh (None: $JAXNAS_DEVICES, else all)"""
  workdir: str = 'runs/zc'
  """output directory"""
  benchmark_table: str | None = None
  """a tabular benchmark's real accuracies (nb201: benchmarks/nb201_test_acc_200ep.json):
  every ranked cell looked up there"""

  @config_lib.checked
  def __post_init__(self):
    config_lib.validate(self)
    object.__setattr__(self, 'proxy_options', config_lib.chosen_options(
        proxies.PROXIES, self.proxy, self.proxy_options, 'proxy'))
    resolve_via(get_space(self.space), self.proxy, self.via)
    if self.samples is not None and self.candidates is not None:
      raise ValueError('give --samples or --candidates, not both')
    if self.benchmark_table is not None:
      benchmark_table.check_space(self.space)
    # the networks' sizes on the data set, the devices
    config_lib.complete(self, {**get_space(self.space).sizes(self.dataset, evaluation=True),
                               'devices': sharding.default_devices()})


@dataclasses.dataclass
class ZCResult:
  best: Any
  best_score: float
  ranking: list[tuple[str, float]]   # best first
  via: str
  seconds: float                     # all scoring, compile included
  archs_per_second: float            # compile excluded
  benchmark: list[dict[str, float]] | None = None   # each ranked cell's row of --benchmark-table


def resolve_via(space, proxy: str, via: str) -> str:
  """The way ``proxy`` scores architectures of ``space`` (a SearchSpace)."""
  if via == 'supernet' and proxy not in SUPERNET_PROXIES:
    raise ValueError(f'{proxy} reads the network\'s insides and is not exact through the '
                     f'supernet: use via network (supernet-exact: {", ".join(SUPERNET_PROXIES)})')
  if via == 'auto':
    exact = space.name in ONEHOT_SUPERNET_EXACT
    return 'supernet' if exact and proxy in SUPERNET_PROXIES else 'network'
  return via


def _batch(ds: data_lib.Dataset, batch_size: int, seed: int):
  idx = np.random.default_rng(seed).choice(len(ds.x_train), min(batch_size, len(ds.x_train)),
                                           replace=False)
  return jnp.asarray(ds.normalize(ds.x_train[idx])), jnp.asarray(ds.y_train[idx])


class Scores(NamedTuple):
  scores: np.ndarray        # one per architecture, in the order given
  via: str                  # 'supernet' or 'network'
  seconds: float            # all scoring, compile included
  archs_per_second: float   # compile excluded


def score_batch(space, genotypes: list, proxy: str, batch, num_classes: int, channels: int,
                layers: int, via: str = 'auto', chunk: int = 16, seed: int = 0,
                progress: bool = False, **options) -> Scores:
  """Scores of ``genotypes`` (in order) by ``proxy`` on ``batch`` = (images, labels),
  images normalised, NHWC, placed as they should be (:mod:`jaxnas.sharding`).

  ``supernet``: one program that scores ``chunk`` one-hot α in sequence (the last
  chunk padded), called chunk by chunk (NAS-Bench-201 at C=16, 5 cells per stage,
  batch 64 of 32x32: SynFlow 9.8 -> 33 cells/s, SNIP 0.31 -> 1.3 against the
  ``vmap`` of the supernet that runs every op); ``network``: one program per
  architecture, compiled with the space's options for programs run once
  (:data:`jaxnas.xla.RUN_ONCE_OPTIONS`: NAS-Bench-201 at the same size, compile + run
  per architecture: SNIP 2.9 -> 2.2 s, GraSP 9.8 -> 7.3 s, Zen 2.6 -> 1.4 s).
  """
  fn = proxies.get_proxy(proxy)
  sp = get_space(space) if isinstance(space, str) else space
  via = resolve_via(sp, proxy, via)
  key = jax.random.key(seed)
  x0 = batch[0][:1]
  bar = _progress(len(genotypes), f'{proxy} via {via}', progress)
  t0 = time.perf_counter()
  if via == 'supernet':
    model = sp.supernet(channels, layers, num_classes, ONE_HOT)
    alphas = [sp.onehot(g) for g in genotypes]
    variables = _without_edge_biases(init_variables(model, key, x0, alphas[0]))
    chunk = min(chunk, len(alphas))

    def score(variables, batch, alphas):  # lax.map, not vmap: a vmapped switch runs every op
      return jax.lax.map(
          lambda a: fn(proxies.supernet_apply(model, a), variables, batch, key, **options), alphas)
    alphas += alphas[-1:] * (-len(alphas) % chunk)
    stacked = {k: np.stack([a[k] for a in alphas]) for k in alphas[0]}
    parts = [{k: v[i:i + chunk] for k, v in stacked.items()} for i in range(0, len(alphas), chunk)]
    run = jax.jit(score).lower(variables, batch, parts[0]).compile()
    t1 = time.perf_counter()
    scores = []
    for i, part in enumerate(parts):
      scores.append(np.asarray(run(variables, batch, part)))
      bar.update(min(chunk, len(genotypes) - i * chunk))
    elapsed = time.perf_counter() - t1
    bar.close()
    return Scores(np.concatenate(scores)[:len(genotypes)], via, time.perf_counter() - t0,
                  len(genotypes) / elapsed)
  scores, run_seconds = [], 0.0
  for g in genotypes:
    net = sp.network(g, channels, layers, num_classes,
                     **{k: False for k in sp.network_options})  # no auxiliary head
    variables = init_variables(net, key, x0)
    jitted = proxies.jitted(proxy, proxies.network_apply(net), **options)
    compiled = jitted.lower(variables, batch, key).compile(
        compiler_options=xla.run_once_options(sp.name))
    t1 = time.perf_counter()
    scores.append(float(compiled(variables, batch, key)))
    run_seconds += time.perf_counter() - t1
    bar.update(1)
  bar.close()
  return Scores(np.asarray(scores), via, time.perf_counter() - t0, len(genotypes) / run_seconds)


def _without_edge_biases(variables):
  """The supernet's variables with the biases of its edges' convolutions zeroed.
  NAS-Bench-201's search cells give a convolution a bias where its BatchNorm is
  affine-free (AutoDL-Projects ``xautodl/models/cell_operations.py`` ``ReLUConvBN``:
  ``bias=not affine``); the discrete network's have none. Under a BatchNorm in
  training mode a bias cancels, but SynFlow runs the BatchNorms as the identity, where
  it would add: zeroed, the one-hot supernet is the discrete network for every proxy."""
  def zero(path, leaf):
    keys = [getattr(p, 'key', None) for p in path]
    return jnp.zeros_like(leaf) if 'edges' in keys and keys[-1] == 'bias' else leaf
  return dict(variables, params=jax.tree_util.tree_map_with_path(zero, variables['params']))


def _progress(total: int, label: str, show: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, desc=label, unit='arch', disable=not show)


def score_genotypes(space, genotypes: list, proxy: str, dataset: data_lib.Dataset,
                    channels: int, layers: int, batch_size: int = 64, via: str = 'auto',
                    chunk: int = 16, seed: int = 0, devices: str | None = None,
                    progress: bool = False, **options) -> Scores:
  """:func:`score_batch` on ``batch_size`` training images of ``dataset`` (drawn with
  ``seed``), the batch split over the ``devices`` mesh (:mod:`jaxnas.sharding`)."""
  batch = sharding.put_batch(_batch(dataset, batch_size, seed), sharding.make_mesh(devices))
  return score_batch(space, genotypes, proxy, batch, dataset.num_classes, channels, layers, via,
                     chunk, seed, progress, **options)


def load_candidates(path: str, space) -> list:
  """The architectures a file lists: one genotype per line (``#`` starts a comment),
  or JSON, a list of genotypes or an object keyed by genotype (NAS-Bench-201's
  arch strings, or any form ``SearchSpace.load_genotype`` reads). Repeats are
  dropped."""
  sp = get_space(space) if isinstance(space, str) else space
  if not os.path.isfile(path):
    raise ValueError(f'--candidates {path}: no such file')
  with open(path) as f:
    text = f.read()
  try:
    doc = json.loads(text)
    entries = [(f'entry {i + 1}', e) for i, e in enumerate(doc)]
  except json.JSONDecodeError:
    entries = [(f'line {i + 1}', line.split('#')[0].strip()) for i, line in enumerate(text.splitlines())]
    entries = [(where, e) for where, e in entries if e]
  out, seen = [], set()
  for where, entry in entries:
    try:
      g = sp.load_genotype(entry)
    except ValueError as e:
      raise ValueError(f'--candidates {path}, {where}: {e}') from None
    if str(g) not in seen:
      seen.add(str(g))
      out.append(g)
  if not out:
    raise ValueError(f'--candidates {path}: no architectures in the file')
  return out


def zc(config: ZCConfig, dataset: data_lib.Dataset | None = None, progress: bool = False
       ) -> ZCResult:
  """Samples ``config.samples`` architectures (or reads ``config.candidates``), scores
  them with the proxy and its options (``config.proxy_options``), writes
  ``ranking.json`` and the best genotype (``genotype.json``, ``genotype.txt``) to the
  work directory."""
  cfg = config
  options = cfg.proxy_options
  sp = get_space(cfg.space)
  table = benchmark_table.load(cfg.benchmark_table) if cfg.benchmark_table else None
  if cfg.candidates:
    genotypes = load_candidates(cfg.candidates, sp)
  else:
    genotypes = sp.sample_distinct(cfg.samples or 100, cfg.seed)
  if table:   # a cell the table lacks stops before the scoring
    for g in genotypes:
      table.lookup(g)
  ds = dataset or data_lib.load(cfg.dataset, cfg.data_dir)
  scores, via, seconds, rate = score_genotypes(sp, genotypes, cfg.proxy, ds, cfg.channels,
                                               cfg.layers, cfg.batch_size, cfg.via, cfg.chunk,
                                               cfg.seed, cfg.devices, progress, **options)
  sign = proxies.sign(cfg.proxy, options)
  ranked = np.argsort(-sign * np.nan_to_num(scores, nan=-sign * np.inf), kind='stable')
  ranking = [(str(genotypes[i]), float(scores[i])) for i in ranked]
  best = genotypes[int(ranked[0])]
  rows = [table.lookup(genotypes[i]) for i in ranked] if table else None
  result = ZCResult(best, float(scores[ranked[0]]), ranking, via, seconds, rate, rows)
  os.makedirs(cfg.workdir, exist_ok=True)
  with open(os.path.join(cfg.workdir, 'ranking.json'), 'w') as f:
    json.dump({'config': dataclasses.asdict(cfg), 'via': via,
               'seconds': seconds, 'archs_per_second': rate,
               'ranking': [{'genotype': g, 'score': s} | ({'benchmark': rows[i]} if rows else {})
                           for i, (g, s) in enumerate(ranking)]}, f, indent=1)
  outputs.write_genotype(cfg.workdir, best, rows[0] if rows else None)
  return result
