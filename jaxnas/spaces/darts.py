"""The DARTS CNN cell space (Liu, Simonyan and Yang, 2019).

Two cell types, normal and reduction, each with 2 inputs, 4 intermediate
nodes and 14 edges over 8 candidate ops; α has shape (14, 8) per cell type.
Networks follow quark0/darts: ``model_search.Network`` (the supernet) and
``model.NetworkCIFAR`` (the discrete network with auxiliary head and
drop-path). One module for the space, as quark0/darts' ``genotypes.py``,
``model_search.py`` and ``model.py`` read together: the genotype (and the
published ones), the derive rule, the supernet and the network.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import kernels, ops
from jaxnas.relax import Relaxation, standard
from jaxnas.spaces.base import CellDrawing, SearchSpace, check_op
from jaxnas.spaces.cells import MixedCell, edge_list

PRIMITIVES = ('none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
              'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5')
# How an edge runs under a hard relaxation (cells.SelectedOp): the chosen op alone
# (D-X-Y/AutoDL-Projects xautodl/models/cell_searchs/search_cells.py MixedOp.forward_gdas)
HARD_SELECT = 'chosen'
N_INPUTS, N_NODES = 2, 4
EDGES = edge_list(N_INPUTS, N_NODES)  # 14 (source, node) pairs


# ----------------------------------------------------------------------------
# Genotype
# ----------------------------------------------------------------------------

def _as_triples(gene, cell: str) -> tuple[tuple[str, int, int], ...]:
  """A cell's gene as (op, input state, node) triples: DARTS' (op, input) pairs, two per
  node in node order, or triples already (a node with fewer than two inputs)."""
  items = [tuple(x) for x in gene]
  if items and all(len(x) == 2 for x in items):
    if len(items) % 2:
      raise ValueError(f'{cell} cell lists (op, input) pairs, two per node, got {len(items)} pairs')
    return tuple((str(o), int(i), k // 2) for k, (o, i) in enumerate(items))
  if all(len(x) == 3 for x in items):
    return tuple(sorted(((str(o), int(i), int(n)) for o, i, n in items), key=lambda t: t[2]))
  raise ValueError(f'{cell} cell must list (op, input) pairs, two per node, or (op, input, node) '
                   f'triples, got {items[:3]}...')


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A DARTS cell pair. Each cell lists its ops as ``(op, input state, node)``
  triples; a DARTS genotype has two per node and is written, as quark0/darts
  writes it, as ``(op, input)`` pairs in node order. Fair DARTS' threshold may
  keep 0, 1 or 2 inputs of a node: a node without inputs is absent (no state,
  not concatenated), as FairDARTS' ``DCOCell`` skips it. State ``i`` is input
  ``i`` for i < 2, else node ``i − 2``."""
  normal: tuple[tuple[str, int, int], ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[tuple[str, int, int], ...]
  reduce_concat: tuple[int, ...]

  def __post_init__(self):
    for field in ('normal', 'reduce'):
      object.__setattr__(self, field, _as_triples(getattr(self, field), field))
    for field in ('normal_concat', 'reduce_concat'):
      object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))
    self.validate()

  def nodes(self, cell: str) -> tuple[int, ...]:
    """The nodes of ``cell`` that have inputs, in order."""
    return tuple(sorted({n for _, _, n in getattr(self, cell)}))

  def validate(self) -> None:
    for cell in ('normal', 'reduce'):
      present = set(range(N_INPUTS)) | {n + N_INPUTS for n in self.nodes(cell)}
      if not getattr(self, cell):
        raise ValueError(f'the {cell} cell has no op at all: a cell needs at least one node')
      for op, idx, node in getattr(self, cell):
        check_op(op, PRIMITIVES, 'darts')
        if node < 0 or not 0 <= idx < node + N_INPUTS:
          raise ValueError(f'{cell} cell node {node}: input index {idx} out of range '
                           f'[0, {node + N_INPUTS})')
        if idx not in present:
          raise ValueError(f'{cell} cell node {node} reads state {idx}, a node without inputs')
      for idx in getattr(self, cell + '_concat'):
        if idx not in present:
          raise ValueError(f'{cell}_concat index {idx} is not a state of the cell '
                           f'(states: {sorted(present)})')

  def _classic(self, cell: str) -> bool:
    """Two inputs on every node 0..n−1: quark0/darts' pair form."""
    gene = getattr(self, cell)
    return [n for _, _, n in gene] == [k // 2 for k in range(len(gene))] and len(gene) % 2 == 0

  def gene(self, cell: str) -> list:
    """``cell`` as written: (op, input) pairs when every node has two inputs, else triples."""
    gene = getattr(self, cell)
    return [(o, i) for o, i, _ in gene] if self._classic(cell) else [tuple(t) for t in gene]

  def __str__(self) -> str:
    return (f'Genotype(normal={self.gene("normal")}, normal_concat={list(self.normal_concat)}, '
            f'reduce={self.gene("reduce")}, reduce_concat={list(self.reduce_concat)})')

  def to_json(self) -> dict[str, Any]:
    return {'space': 'darts', 'normal': [list(p) for p in self.gene('normal')],
            'normal_concat': list(self.normal_concat),
            'reduce': [list(p) for p in self.gene('reduce')], 'reduce_concat': list(self.reduce_concat)}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> 'Genotype':
    if d.get('space', 'darts') != 'darts':
      raise ValueError(f'genotype is for space {d["space"]!r}, not darts')
    try:
      return cls(d['normal'], d['normal_concat'], d['reduce'], d['reduce_concat'])
    except KeyError as e:
      raise ValueError(f'DARTS genotype JSON is missing the field {e}') from None

  @classmethod
  def from_text(cls, text: str) -> 'Genotype':
    """Parses ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)``."""
    try:
      call = ast.parse(text.strip(), mode='eval').body
    except SyntaxError as e:
      raise ValueError(f'malformed DARTS genotype text: {e.msg}') from None
    if not (isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'Genotype'):
      raise ValueError("DARTS genotype text must look like Genotype(normal=[...], normal_concat=[...], "
                       "reduce=[...], reduce_concat=[...])")
    fields = {}
    for kw in call.keywords:
      v = kw.value
      if isinstance(v, ast.Call) and getattr(v.func, 'id', None) == 'range':  # range(2, 6)
        fields[kw.arg] = list(range(*[ast.literal_eval(a) for a in v.args]))
      else:
        try:
          fields[kw.arg] = ast.literal_eval(v)
        except ValueError:
          raise ValueError(f'malformed value for {kw.arg} in DARTS genotype text') from None
    return cls.from_json(fields)


# Published genotypes (quark0/darts genotypes.py; yuhuixu1993/PC-DARTS genotypes.py).
GENOTYPES = {
    'DARTS_V1': Genotype(
        normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
                ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
                ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)],
        reduce_concat=[2, 3, 4, 5]),
    'DARTS_V2': Genotype(
        normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
                ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
                ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
        reduce_concat=[2, 3, 4, 5]),
    'PC_DARTS': Genotype(
        normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1),
                ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)],
        normal_concat=[2, 3, 4, 5],
        reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2),
                ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)],
        reduce_concat=[2, 3, 4, 5]),
}
GENOTYPES['DARTS'] = GENOTYPES['DARTS_V2']


# ----------------------------------------------------------------------------
# Derive rule
# ----------------------------------------------------------------------------

def derive_cell(weights: np.ndarray, primitives: Sequence[str] = PRIMITIVES,
                edge_strength: np.ndarray | None = None,
                threshold: float | None = None) -> list[tuple[str, int, int]]:
  """One cell's (op, input state, node) triples from its mixing weights (``primitives``
  their columns).

  quark0/darts' rule: for node j, an incoming edge's strength is its largest
  non-``none`` weight (times ``edge_strength`` if given, as PC-DARTS' edge
  normalisation); the two strongest edges are kept (ties: the lower input
  first, as Python's stable sort), each with its argmax non-``none`` op (ties:
  the first op).

  With ``threshold``, Fair DARTS' rule (xiaomi-automl/FairDARTS ``fairdarts/utils.py``
  ``parse``, ``parse_method='threshold_sparse'``; independent sigmoid weights): of
  those two edges, one is kept only if its op's weight reaches ``threshold``, so
  a node keeps 0, 1 or 2 inputs. A node left without inputs is absent, and an
  edge from an absent node is dropped (as ``fairdarts/model.py`` ``DCOCell``
  skips a state it has not computed).
  """
  w = np.asarray(weights, np.float64)
  masked = np.where([p == 'none' for p in primitives], -np.inf, w)
  gene, start, node, present = [], 0, 0, set(range(N_INPUTS))
  while start < len(w):
    n = N_INPUTS + node
    block = masked[start:start + n]
    best = block.max(axis=1)
    strength = best if edge_strength is None else \
        best * np.asarray(edge_strength, np.float64)[start:start + n]
    for i in sorted(range(n), key=lambda i: -strength[i])[:2]:
      if threshold is None or (best[i] >= threshold and i in present):
        gene.append((primitives[int(np.argmax(block[i]))], i, node))
    if any(g[2] == node for g in gene):
      present.add(node + N_INPUTS)
    start += n
    node += 1
  return gene


def derive(weights: Mapping[str, Any], edge_strength: Mapping[str, Any] | None = None,
           threshold: float | None = None, primitives: Sequence[str] = PRIMITIVES) -> Genotype:
  """Genotype from the mixing weights ``{'normal': (14, n_ops), 'reduce': (14, n_ops)}``
  (``primitives`` their columns) by :func:`derive_cell`, concatenating every node
  that has inputs. A threshold that leaves a cell without any node is an error."""
  es = edge_strength or {}
  genes, concats = {}, {}
  for kind in ('normal', 'reduce'):
    gene = derive_cell(weights[kind], primitives, es.get(kind), threshold)
    if not gene:
      raise ValueError(f'no op of the {kind} cell reaches the threshold {threshold}: lower it '
                       f'(--fair-threshold) or search longer (--resume with more --epochs)')
    genes[kind] = gene
    concats[kind] = sorted({n + N_INPUTS for _, _, n in gene})
  return Genotype(genes['normal'], concats['normal'], genes['reduce'], concats['reduce'])


# ----------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------

def _stem(x, c, train):
  # XLA's convolution (outside the cell scans JAX's transposes of it are fast):
  # the supernet's one dense k x k conv, so darts2's forward over reverse
  # meets no conv2d custom VJP (see SPACE's forward_over_reverse)
  x = ops.Conv(c, 3, 1, 1, hand_vjp=False, name='stem_conv')(x)
  return ops.batch_norm(train, True, name='stem_bn')(x)


def _reduction_layers(layers: int) -> tuple[int, int]:
  return layers // 3, 2 * layers // 3


class SearchCell(nn.Module):
  """model_search.Cell: preprocess both inputs, then the mixed-op edges; concat the nodes."""
  channels: int
  reduction: bool
  reduction_prev: bool
  train: bool
  primitives: Sequence[str] = PRIMITIVES
  remat: bool = True
  partial: int = 1
  select: str | None = None

  @nn.compact
  def __call__(self, s0, s1, weights, edge_weights=None):
    c = self.channels
    if self.reduction_prev:
      s0 = ops.FactorizedReduce(c, affine=False, name='preprocess0')(s0, self.train)
    else:
      s0 = ops.ReLUConvBN(c, affine=False, name='preprocess0')(s0, self.train)
    s1 = ops.ReLUConvBN(c, affine=False, name='preprocess1')(s1, self.train)
    nodes = MixedCell(self.primitives, c, N_INPUTS, N_NODES, 2 if self.reduction else 1,
                      self.train, pool_bn=True, remat=self.remat, partial=self.partial,
                      select=self.select, name='edges')([s0, s1], weights, edge_weights)
    return jnp.concatenate(list(nodes), axis=-1)


class Supernet(nn.Module):
  """model_search.Network: stem, ``layers`` search cells (reductions at 1/3 and 2/3), classifier.

  Applied as ``apply(variables, x, alpha, train=..., progress=...)`` with ``alpha``
  the dict ``{'normal': (14, n_ops), 'reduce': (14, n_ops)}``; the relaxation turns α
  into mixing weights (a stochastic one draws from the ``'relax'`` PRNG stream when
  one is given). Under PC-DARTS α also holds ``'normal_edges'`` and
  ``'reduce_edges'`` (14,), and 1/K of the channels go through the mixed ops.
  """
  channels: int = 16
  layers: int = 8
  num_classes: int = 10
  relaxation: Relaxation = standard.softmax()  # jaxnas.relax.make resolves names
  stem_multiplier: int = 3
  primitives: Sequence[str] = PRIMITIVES
  remat: bool = True

  @nn.compact
  def __call__(self, x, alpha, train: bool = True, progress=None):
    r = self.relaxation
    key = self.make_rng('relax') if r.stochastic and self.has_rng('relax') else None
    weights = r.mix_all(alpha, key, progress)
    edge_weights = r.edge_weights(alpha, N_INPUTS)
    c_curr = self.stem_multiplier * self.channels
    s0 = s1 = _stem(x, c_curr, train)
    c_curr, reduction_prev = self.channels, False
    for i in range(self.layers):
      reduction = i in _reduction_layers(self.layers)
      c_curr = c_curr * 2 if reduction else c_curr
      cell = SearchCell(c_curr, reduction, reduction_prev, train, tuple(self.primitives),
                        self.remat, r.partial_channels,
                        HARD_SELECT if r.hard else None, name=f'cell{i}')
      kind = 'reduce' if reduction else 'normal'
      s0, s1 = s1, cell(s0, s1, weights[kind], edge_weights[kind])
      reduction_prev = reduction
    self.sow(ops.FEATURES, 'features', s1)
    out = jnp.mean(s1, axis=(1, 2))
    return ops.Linear(self.num_classes, name='classifier')(out)


def drop_path(module: nn.Module, x, drop_prob):
  """Zeroes whole samples with probability ``drop_prob`` and rescales the rest by 1/(1-p)."""
  keep = 1.0 - drop_prob
  mask = jax.random.bernoulli(module.make_rng('dropout'), keep, (x.shape[0], 1, 1, 1))
  return jnp.where(mask, x / keep, 0.0)


class EvalCell(nn.Module):
  """model.Cell: the genotype's ops, summed per node, drop-path on every non-identity
  op; the ``concat`` states concatenated. A node without inputs (Fair DARTS) has no
  state. Op ``k`` of the gene is ``op{k}``."""
  gene: tuple[tuple[str, int, int], ...]
  concat: tuple[int, ...]
  channels: int
  reduction: bool
  reduction_prev: bool

  @nn.compact
  def __call__(self, s0, s1, train: bool, drop_prob):
    c = self.channels
    if self.reduction_prev:
      s0 = ops.FactorizedReduce(c, name='preprocess0')(s0, train)
    else:
      s0 = ops.ReLUConvBN(c, name='preprocess0')(s0, train)
    s1 = ops.ReLUConvBN(c, name='preprocess1')(s1, train)
    states = {0: s0, 1: s1}
    for k, (name, idx, node) in enumerate(self.gene):
      stride = 2 if self.reduction and idx < N_INPUTS else 1
      op = ops.get_op(name, c, c, stride, affine=True, name=f'op{k}')
      h = op(states[idx], train)
      if train and drop_prob is not None and not isinstance(op, ops.Identity):
        h = drop_path(self, h, drop_prob)
      states[node + N_INPUTS] = h if node + N_INPUTS not in states else states[node + N_INPUTS] + h
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nn.Module):
  """AuxiliaryHeadCIFAR, for 8x8 inputs (the 2/3-depth feature map of a 32x32 image)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(x)
    # 8x8 maps (32x32 images) as published; smaller maps (small test images)
    # are average-pooled adaptively to the 2x2 the published pooling yields.
    x = kernels.avg_pool(x, 5, 3, 0) if x.shape[1] >= 5 else kernels.adaptive_avg_pool(x, 2)
    x = nn.relu(ops.batch_norm(train, True)(ops.Conv(128)(x)))
    x = ops.Conv(768, 2)(x)
    x = nn.relu(ops.batch_norm(train, True)(x))
    x = x.reshape(x.shape[0], -1)
    return ops.Linear(self.num_classes, name='classifier')(x)


class NetworkCIFAR(nn.Module):
  """model.NetworkCIFAR. ``apply(variables, x, train, drop_prob)`` returns ``(logits, aux_logits)``.

  ``aux_logits`` is None unless ``auxiliary`` and ``train``; the auxiliary head
  (parameters under ``auxiliary_head``) reads the output of cell 2·layers//3.
  ``drop_prob`` may be a traced scalar, so that a schedule does not recompile.
  """
  genotype: Genotype
  channels: int = 36
  layers: int = 20
  num_classes: int = 10
  auxiliary: bool = True
  stem_multiplier: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False, drop_prob=None):
    g = self.genotype
    c_curr = self.stem_multiplier * self.channels
    s0 = s1 = _stem(x, c_curr, train)
    c_curr, reduction_prev, aux = self.channels, False, None
    for i in range(self.layers):
      reduction = i in _reduction_layers(self.layers)
      c_curr = c_curr * 2 if reduction else c_curr
      gene, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
      cell = EvalCell(gene, concat, c_curr, reduction, reduction_prev, name=f'cell{i}')
      s0, s1 = s1, cell(s0, s1, train, drop_prob)
      reduction_prev = reduction
      if i == 2 * self.layers // 3 and self.auxiliary:
        head = AuxiliaryHead(self.num_classes, name='auxiliary_head')
        if train or self.is_initializing():
          aux = head(s1, train)
    self.sow(ops.FEATURES, 'features', s1)
    out = jnp.mean(s1, axis=(1, 2))
    logits = ops.Linear(self.num_classes, name='classifier')(out)
    return logits, (aux if train else None)


INPUT_LABELS = ('c_{k-2}', 'c_{k-1}')


def sample(rng: np.random.Generator) -> Genotype:
  """A uniformly random cell pair: per node two distinct inputs and a non-``none`` op
  for each, as the derive rule produces."""
  choices = [p for p in PRIMITIVES if p != 'none']

  def cell():
    gene = []
    for node in range(N_NODES):
      for src in sorted(rng.choice(node + N_INPUTS, 2, replace=False)):
        gene.append((choices[rng.integers(len(choices))], int(src)))
    return gene
  concat = list(range(N_INPUTS, N_INPUTS + N_NODES))
  return Genotype(cell(), concat, cell(), concat)


def onehot(genotype: Genotype) -> dict[str, np.ndarray]:
  """The α that selects ``genotype`` in the raw-α supernet: one-hot rows on the
  genotype's edges, zero rows on the edges it does not keep."""
  alpha = {k: np.zeros((len(EDGES), len(PRIMITIVES)), np.float32) for k in ('normal', 'reduce')}
  for kind, gene in (('normal', genotype.normal), ('reduce', genotype.reduce)):
    for op, src, node in gene:
      alpha[kind][EDGES.index((src, node)), PRIMITIVES.index(op)] = 1.0
  return alpha


def drawing(genotype: Genotype, cell: str = 'normal') -> CellDrawing:
  gene, concat = getattr(genotype, cell), getattr(genotype, cell + '_concat')
  nodes = [str(n) for n in genotype.nodes(cell)]
  label = lambda i: INPUT_LABELS[i] if i < N_INPUTS else str(i - N_INPUTS)
  edges = [(label(idx), str(node), op) for op, idx, node in gene]
  edges += [(label(i), 'c_{k}', '') for i in concat]
  return CellDrawing(list(INPUT_LABELS), nodes, ['c_{k}'], edges)


def _supernet(channels, layers, num_classes, relaxation, **kw):
  return Supernet(channels, layers, num_classes, relaxation, **kw)


def _network(genotype, channels=36, layers=20, num_classes=10, **kw):
  return NetworkCIFAR(genotype, channels, layers, num_classes, **kw)


SPACE = SearchSpace(
    name='darts', title='DARTS', primitives=PRIMITIVES,
    alpha_shapes={'normal': (len(EDGES), len(PRIMITIVES)), 'reduce': (len(EDGES), len(PRIMITIVES))},
    build_supernet=_supernet, network=_network, derive=derive,
    genotype_from_text=Genotype.from_text, genotype_from_json=Genotype.from_json,
    genotypes=GENOTYPES, defaults={'channels': 16, 'layers': 8, 'eval_channels': 36,
                                   'eval_layers': 20},
    small={'channels': 8, 'layers': 5}, cell_inputs=N_INPUTS,
    edge_labels=tuple(f'{(INPUT_LABELS + tuple(map(str, range(N_NODES))))[i]}→{j}'
                      for i, j in EDGES),
    sample=sample, onehot=onehot, num_architectures=None, drawing=drawing,
    # The supernet's one custom VJP (the depthwise convolution's shifted slices, on maps
    # of more than 64 pixels) has a plain-JAX fwd, so jax.jvp of a gradient passes it.
    forward_over_reverse=True,
    network_options=('auxiliary',))
