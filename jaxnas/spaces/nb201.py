"""The NAS-Bench-201 cell space (Dong and Yang, 2020).

One cell type with 1 input, 3 nodes and 6 edges (1<-0, 2<-0, 2<-1, 3<-0,
3<-1, 3<-2) over 5 ops; the cell's output is its last node. α has shape
(6, 5). Networks follow AutoDL-Projects: ``TinyNetworkDarts`` (supernet) and
``TinyNetwork`` (discrete): a 3x3 stem of C channels, three stages of N cells
with C, 2C, 4C channels, joined by residual reduction blocks, then BN-ReLU,
global pooling and a linear classifier.

All cells of a stage have one shape, so a stage is one ``nn.scan`` over its
cells (parameters stacked on a leading axis): one traced cell body per stage.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxnas import ops
from jaxnas.relax import Relaxation, standard
from jaxnas.spaces.base import CellDrawing, SearchSpace, check_op
from jaxnas.spaces.cells import MixedCell, edge_list

PRIMITIVES = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
# How an edge runs under a hard relaxation (cells.SelectedOp): the chosen op, plus the
# unchosen weights as scalars (D-X-Y/AutoDL-Projects
# xautodl/models/cell_searchs/search_cells.py NAS201SearchCell.forward_gdas)
HARD_SELECT = 'chosen_and_rest'
N_INPUTS, N_NODES = 1, 3
EDGES = edge_list(N_INPUTS, N_NODES)  # (0,0) (0,1) (1,1) (0,2) (1,2) (2,2) = 1<-0 2<-0 2<-1 3<-0 3<-1 3<-2


@dataclasses.dataclass(frozen=True)
class Genotype:
  """``nodes[i]`` lists ``(op, input node)`` for node i+1, one entry per input node 0..i."""
  nodes: tuple[tuple[tuple[str, int], ...], ...]

  def __post_init__(self):
    object.__setattr__(self, 'nodes', tuple(tuple((str(o), int(j)) for o, j in node)
                                            for node in self.nodes))
    self.validate()

  def validate(self) -> None:
    if len(self.nodes) != N_NODES:
      raise ValueError(f'an NAS-Bench-201 cell has {N_NODES} nodes, got {len(self.nodes)}')
    for i, node in enumerate(self.nodes, start=1):
      if sorted(j for _, j in node) != list(range(i)):
        raise ValueError(f'node {i} must have exactly one edge from each of nodes 0..{i - 1}, '
                         f'got inputs {[j for _, j in node]}')
      for op, _ in node:
        check_op(op, PRIMITIVES, 'nb201')

  def __str__(self) -> str:
    return '+'.join('|' + '|'.join(f'{op}~{j}' for op, j in node) + '|' for node in self.nodes)

  def to_json(self) -> dict[str, Any]:
    return {'space': 'nb201', 'arch': str(self)}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> 'Genotype':
    if d.get('space', 'nb201') != 'nb201':
      raise ValueError(f'genotype is for space {d["space"]!r}, not nb201')
    if 'arch' not in d:
      raise ValueError("NAS-Bench-201 genotype JSON needs the field 'arch'")
    return cls.from_text(d['arch'])

  @classmethod
  def from_text(cls, text: str) -> 'Genotype':
    """Parses ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...|``."""
    nodes = []
    for part in text.strip().split('+'):
      if not (part.startswith('|') and part.endswith('|') and len(part) > 2):
        raise ValueError(f'malformed NAS-Bench-201 arch string {text!r}: node {part!r} must be '
                         "'|op~input|...|'")
      node = []
      for item in part[1:-1].split('|'):
        op, sep, j = item.partition('~')
        if not sep or not j.isdigit():
          raise ValueError(f'malformed NAS-Bench-201 arch string {text!r}: edge {item!r} must be op~input')
        node.append((op, int(j)))
      nodes.append(tuple(node))
    return cls(tuple(nodes))

  def edge_ops(self) -> list[str]:
    """The op on each edge in α row order."""
    ops_by_edge = {(j, i - 1): op for i, node in enumerate(self.nodes, 1) for op, j in node}
    return [ops_by_edge[e] for e in EDGES]


GENOTYPES = {
    # The published best NAS-Bench-201 cell on CIFAR-10 (ResNet-like conv stack).
    'NB201_BEST': Genotype.from_text(
        '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'),
    'RESNET': Genotype.from_text(
        '|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|'),
}


def derive(weights: Mapping[str, Any], edge_strength: Mapping[str, Any] | None = None,
           threshold: float | None = None, primitives: Sequence[str] = PRIMITIVES) -> Genotype:
  """Argmax per edge, ``none`` included (AutoDL-Projects' rule; ties: the first op);
  ``primitives`` are the weights' columns. With ``threshold`` (Fair DARTS): the best
  non-``none`` op where its weight is >= threshold, else ``none`` (no op at all: an
  error, as the DARTS space's). ``edge_strength``
  (PC-DARTS) changes nothing here: every edge of the cell is kept."""
  w = np.asarray(weights['cell'])
  nodes = [[] for _ in range(N_NODES)]
  for row, (src, node) in enumerate(EDGES):
    if threshold is None:
      op = primitives[int(np.argmax(w[row]))]
    else:
      masked = np.where([p == 'none' for p in primitives], -np.inf, w[row])
      best = int(np.argmax(masked))
      op = primitives[best] if masked[best] >= threshold else 'none'
    nodes[node].append((op, src))
  if threshold is not None and all(op == 'none' for n in nodes for op, _ in n):
    raise ValueError(f'no op of the cell reaches the threshold {threshold}: lower it '
                     f'(--fair-threshold) or search longer (--resume with more --epochs)')
  return Genotype(tuple(tuple(n) for n in nodes))


def _stem(x, c, train):
  x = ops.Conv(c, 3, 1, 1, name='stem_conv')(x)
  return ops.batch_norm(train, True, name='stem_bn')(x)


def _head(module, x, num_classes, train):
  x = ops.relu(module, ops.batch_norm(train, True, name='lastact_bn')(x))
  module.sow(ops.FEATURES, 'features', x)
  x = jnp.mean(x, axis=(1, 2))
  return ops.Linear(num_classes, name='classifier')(x)


_STACKED = dict(variable_axes={'params': 0, 'batch_stats': 0, ops.RELU_CODES: 0, ops.PROBES: 0},
                split_rngs={'params': True})


class _SearchCellStep(nn.Module):
  primitives: Sequence[str]
  channels: int
  train: bool
  remat: bool
  partial: int
  select: str | None

  @nn.compact
  def __call__(self, x, weights):
    weights, edge_weights = weights
    nodes = MixedCell(self.primitives, self.channels, N_INPUTS, N_NODES, 1, self.train,
                      remat=self.remat, partial=self.partial, select=self.select,
                      name='edges')([x], weights, edge_weights)
    return nodes[-1], None


class _EvalCellStep(nn.Module):
  genotype: Genotype
  channels: int
  train: bool

  @nn.compact
  def __call__(self, x, _):
    states = [x]
    for i, node in enumerate(self.genotype.nodes, start=1):
      total = None
      for op_name, j in node:
        op = ops.get_op(op_name, self.channels, self.channels, 1, affine=True,
                        name=f'edge{i}<-{j}')
        h = op(states[j], self.train)
        total = h if total is None else total + h
      states.append(total)
    return states[-1], None


def _stages(x, channels, layers, train, cell_step, cell_args, xs):
  """Three stages of ``layers`` cells, joined by residual reduction blocks."""
  c = channels
  for stage in range(3):
    if stage:
      c *= 2
      x = ops.ResNetBasicBlock(c, 2, name=f'reduce{stage}')(x, train)
    scan = nn.scan(cell_step, in_axes=nn.broadcast, length=layers, **_STACKED)
    x, _ = scan(*cell_args(c), name=f'stage{stage}')(x, xs)
  return x


class Supernet(nn.Module):
  """TinyNetworkDarts. ``apply(variables, x, alpha, train=..., progress=...)`` with
  ``alpha = {'cell': (6, 5)}`` (under PC-DARTS also ``'cell_edges': (6,)``); a stochastic
  relaxation draws from the ``'relax'`` PRNG stream when one is given."""
  channels: int = 16
  layers: int = 5
  num_classes: int = 10
  relaxation: Relaxation = standard.softmax()  # jaxnas.relax.make resolves names
  primitives: Sequence[str] = PRIMITIVES
  remat: bool = True

  @nn.compact
  def __call__(self, x, alpha, train: bool = True, progress=None):
    r = self.relaxation
    key = self.make_rng('relax') if r.stochastic and self.has_rng('relax') else None
    weights = r.mix_all(alpha, key, progress)['cell']
    edge_weights = r.edge_weights(alpha, N_INPUTS)['cell']
    x = _stem(x, self.channels, train)
    x = _stages(x, self.channels, self.layers, train,
                _SearchCellStep,
                lambda c: (tuple(self.primitives), c, train, self.remat, r.partial_channels,
                           HARD_SELECT if r.hard else None),
                (weights, edge_weights))
    return _head(self, x, self.num_classes, train)


class TinyNetwork(nn.Module):
  """The discrete NAS-Bench-201 network. ``apply(variables, x, train)`` returns ``(logits, None)``."""
  genotype: Genotype
  channels: int = 16
  layers: int = 5
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False, drop_prob=None):
    x = _stem(x, self.channels, train)
    x = _stages(x, self.channels, self.layers, train, _EvalCellStep,
                lambda c: (self.genotype, c, train), None)
    return _head(self, x, self.num_classes, train), None


def sample(rng: np.random.Generator) -> Genotype:
  """A uniformly random cell: an op per edge, ``none`` included."""
  ops_ = [PRIMITIVES[i] for i in rng.integers(0, len(PRIMITIVES), len(EDGES))]
  nodes = [[] for _ in range(N_NODES)]
  for op, (src, node) in zip(ops_, EDGES):
    nodes[node].append((op, src))
  return Genotype(tuple(tuple(n) for n in nodes))


def onehot(genotype: Genotype) -> dict[str, np.ndarray]:
  """The α that selects ``genotype`` in the raw-α supernet: one one-hot row per edge."""
  alpha = np.zeros((len(EDGES), len(PRIMITIVES)), np.float32)
  for row, op in enumerate(genotype.edge_ops()):
    alpha[row, PRIMITIVES.index(op)] = 1.0
  return {'cell': alpha}


def drawing(genotype: Genotype, cell: str = 'cell') -> CellDrawing:
  nodes = [str(i) for i in range(1, len(genotype.nodes) + 1)]
  edges = [(str(j), str(i), op) for i, node in enumerate(genotype.nodes, 1) for op, j in node
           if op != 'none']
  return CellDrawing(['0'], nodes, [], edges)


def _supernet(channels, layers, num_classes, relaxation, **kw):
  return Supernet(channels, layers, num_classes, relaxation, **kw)


def _network(genotype, channels=16, layers=5, num_classes=10, **kw):
  return TinyNetwork(genotype, channels, layers, num_classes, **kw)


SPACE = SearchSpace(
    name='nb201', title='NAS-Bench-201', primitives=PRIMITIVES,
    alpha_shapes={'cell': (len(EDGES), len(PRIMITIVES))},
    build_supernet=_supernet, network=_network, derive=derive,
    genotype_from_text=Genotype.from_text, genotype_from_json=Genotype.from_json,
    genotypes=GENOTYPES, defaults={'channels': 16, 'layers': 5, 'eval_channels': 16,
                                   'eval_layers': 5},
    small={'channels': 8, 'layers': 1}, cell_inputs=N_INPUTS,
    edge_labels=tuple(f'{j + 1}←{i}' for i, j in EDGES), sample=sample, onehot=onehot,
    num_architectures=len(PRIMITIVES) ** len(EDGES), drawing=drawing, forward_over_reverse=True)
