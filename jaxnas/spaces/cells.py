"""The mixed-op cell shared by both search spaces, laid out for the compiler.

A cell has ``n_in`` input states and ``n_nodes`` intermediate nodes; node j
sums one mixed op from each earlier state, so its edges are
``[(i, j) for j in range(n_nodes) for i in range(n_in + j)]`` (state i >= n_in
is node i - n_in). This is DARTS' edge order (n_in = 2, n_nodes = 4, 14 edges)
and NAS-Bench-201's (n_in = 1, n_nodes = 3: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

Why this layout: XLA compiles a program with hundreds of separately traced
ops very slowly (minutes per cell on CPU). Here the edges of a cell run
under ``lax.scan``, with parameters stacked per edge, over a buffer of node
partial sums: edge (i -> j) adds its output to node j, and the edge order
(node-major) guarantees that node i is complete when it is read. (One module over 300
lines: the mixed op, the one-op edge and the scans that run them are one layout.)

* In a stride-1 cell on small maps (<= :data:`ONE_SCAN_PIXELS` pixels) every
  edge is one scan body (``all_edges``): it reads a cell input (a broadcast
  constant) or a node.
* Otherwise (a reduction cell's n_in x n_nodes input edges have stride 2, the
  rest stride 1) the input edges are one scan (``input_edges``, the edge
  outputs summed per node afterwards), the others a second (``inner_edges``).

No edge is padded or computed twice, and each mixed op is rematerialised in
the backward pass, one edge at a time, so that memory holds node states, not
the intermediates of every candidate op. (A vmap over the input edges, tried
first, recomputed all of them at once in the backward pass: 5 GiB of XLA
temporaries for the DARTS supernet at batch 64, and a slower trace.)
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import kernels, ops


def edge_list(n_in: int, n_nodes: int) -> list[tuple[int, int]]:
  """(source state, destination node) of every edge, in α row order."""
  return [(i, j) for j in range(n_nodes) for i in range(n_in + j)]


def channel_shuffle(x, groups: int):
  """PyTorch's ``channel_shuffle`` in NHWC: channel ``g·(C/G) + c`` moves to ``c·G + g``."""
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


# (kernel size, dilation, blocks) of the ops that are ReLU -> depthwise -> 1x1 -> BN, `blocks` times
_DW_CHAINS = {'sep_conv_3x3': (3, 1, 2), 'sep_conv_5x5': (5, 1, 2), 'sep_conv_7x7': (7, 1, 2),
              'dil_conv_3x3': (3, 2, 1), 'dil_conv_5x5': (5, 2, 1)}
_POOLS = {'max_pool_3x3': kernels.max_pool_3x3, 'avg_pool_3x3': kernels.avg_pool_3x3}


class MixedOp(nn.Module):
  """``y = Σ_o w_o · op_o(x)`` over the candidate ops; ``none`` contributes nothing.

  The ops of one kind run as one: the poolings stacked under one (grouped)
  BatchNorm; the separable and dilated convolutions block by block, every
  op's first block on the shared ``relu(x)`` (one stacked depthwise product,
  one batched 1x1 product, one grouped BatchNorm), then the separable ones'
  second block the same way. The same function as one module per op, with a
  few times fewer kernels for XLA to compile. Other ops run one by one.

  With ``partial`` K > 1 (PC-DARTS), only the first C/K channels go through
  the ops; the rest bypass them (2x2 max-pooled when the edge reduces), and
  the channels are shuffled in K groups. ``edge_weight`` scales the output
  (PC-DARTS' edge normalisation).
  """
  primitives: Sequence[str]
  channels: int
  stride: int
  train: bool
  pool_bn: bool = False  # DARTS' supernet appends an affine-free BN to pooling
  partial: int = 1

  @nn.compact
  def __call__(self, x, weights, edge_weight=None):
    c = self.channels // self.partial
    xs = x[..., :c] if self.partial > 1 else x
    rows, outs = [], []  # op rows of `weights`, their outputs (G, B, H, W, C) or [one]
    pools = [k for k, n in enumerate(self.primitives) if n in _POOLS]
    if pools:
      y = jnp.stack([_POOLS[self.primitives[k]](xs, self.stride) for k in pools])
      rows.append(pools)
      outs.append(ops.BatchNorm(self.train, False, groups=True, name='pool_bn')(y)
                  if self.pool_bn else y)
    # the ops with the most blocks first: each later block runs on a prefix of the stack
    chains = sorted((k for k, n in enumerate(self.primitives) if n in _DW_CHAINS),
                    key=lambda k: -_DW_CHAINS[self.primitives[k]][2])
    for r, y in self._dw_chains(chains, xs):
      rows.append(r)
      outs.append(y)
    for k, name in enumerate(self.primitives):
      if name == 'none' or k in pools or k in chains:
        continue
      rows.append([k])
      outs.append([ops.get_op(name, c, c, self.stride, affine=False, name=name)(xs, self.train)])
    if outs:
      # Σ_o w_o y_o as scalar multiply-adds: a concatenation and one tensordot
      # made the cell's second-order pass 40% slower
      # in the wider of α's and the activations' dtypes: float32 under bfloat16
      # activations (∂/∂w_o = <g, y_o> sums over the whole batch, and the sum then sets
      # the α gradient's precision); float64 under SynFlow's float64 activations, whose
      # values pass float32's range at NAS-Bench-201's size
      dtype = jnp.promote_types(weights.dtype, xs.dtype)
      out = sum(weights[k].astype(dtype) * y[g].astype(dtype) for r, y in zip(rows, outs)
                for g, k in enumerate(r)).astype(xs.dtype)
    else:  # only 'none' in the space
      out = jnp.zeros_like(xs[:, ::self.stride, ::self.stride, :])
    if self.partial > 1:
      rest = x[..., c:]
      if self.stride == 2:
        b, h, w, r = rest.shape
        rest = rest.reshape(b, h // 2, 2, w // 2, 2, r).max(axis=(2, 4))
      out = channel_shuffle(jnp.concatenate([out, rest], axis=-1), self.partial)
    return out if edge_weight is None else jnp.asarray(edge_weight).astype(out.dtype) * out

  def _dw_chains(self, rows, x):
    """The ReLU -> depthwise -> 1x1 -> BN blocks of ops ``rows`` (most blocks first),
    block by block, every op's first block reading ``x`` (only the first block is
    strided and dilated); yields (rows, their outputs (G, B, H', W', C)) as ops finish."""
    c = x.shape[-1]
    for block in range(_DW_CHAINS[self.primitives[rows[0]]][2] if rows else 0):
      names = [self.primitives[k] for k in rows]
      dw = [ops.Weight('depthwise', (_DW_CHAINS[n][0],) * 2 + (c,), name=f'{n}_dw{block}')(x.dtype)
            for n in names]
      pw = jnp.stack([ops.Weight('pointwise', (c, c), name=f'{n}_pw{block}')(x.dtype)
                      for n in names])
      if block == 0:
        for _ in names:  # each op's own ReLU, as NASWOT counts them
          xr = ops.relu(self, x)
        x = kernels.depthwise_conv_stack(xr, dw, self.stride, [_DW_CHAINS[n][1] for n in names])
      else:
        x = kernels.depthwise_conv_stack(ops.relu(self, x, batch_axis=1), dw, 1, [1] * len(names))
      x = jnp.einsum('gbhwc,gcd->gbhwd', x, pw)
      x = ops.BatchNorm(self.train, False, groups=True, name=f'bn{block}')(x)
      go_on = sum(_DW_CHAINS[n][2] > block + 1 for n in names)
      if go_on < len(rows):
        yield rows[go_on:], x[go_on:]
      rows, x = rows[:go_on], x[:go_on]


class PoolBN(nn.Module):
  """A pooling (``kind``: ``max_pool_3x3``, ``avg_pool_3x3``) followed by an
  affine-free BatchNorm, as DARTS' supernet pools (:class:`MixedOp`)."""
  kind: str
  stride: int

  @nn.compact
  def __call__(self, x, train: bool):
    return ops.BatchNorm(train, False)(_POOLS[self.kind](x, self.stride))


class SelectedOp(nn.Module):
  """``y = w_k·op_k(x)`` (``select='chosen'``) or ``y = w_k·op_k(x) + Σ_{o≠k} w_o``
  (``'chosen_and_rest'``), ``k = argmax_o w_o``: only the chosen op runs.

  The mixed op of a relaxation whose weights are one-hot in value (GDAS' hard
  sample, a one-hot α): every edge runs one op (a ``lax.switch``), as AutoDL's
  GDAS does (D-X-Y/AutoDL-Projects ``xautodl/models/cell_searchs/search_cells.py``:
  ``NAS201SearchCell.forward_gdas`` adds the unchosen weights, 0 in value, as
  scalars, so that each gets the sum of the output's cotangent as its gradient;
  the DARTS space's ``MixedOp.forward_gdas`` does not). Either is AutoDL's
  stand-in for the straight-through gradient through every op's output, at the
  cost of one op per edge. The ops are those of :class:`MixedOp`, one module
  each, named as there (where MixedOp runs an op by itself, the two share its
  variables). Under ``vmap`` over the weights the switch becomes a select that
  runs every op: call it per architecture.
  """
  primitives: Sequence[str]
  channels: int
  stride: int
  train: bool
  pool_bn: bool = False
  select: str = 'chosen'

  @nn.compact
  def __call__(self, x, weights, edge_weight=None):
    if edge_weight is not None:
      raise ValueError('edge normalisation (PC-DARTS) does not combine with one op per edge')
    def branch(name):  # the op built inside the branch, so that its BatchNorms update there
      def run(mdl, x):
        if self.pool_bn and name in _POOLS:
          return PoolBN(name, self.stride, name=name)(x, self.train)
        return ops.get_op(name, self.channels, self.channels, self.stride, affine=False,
                          name=name)(x, self.train)
      return run
    branches = [branch(n) for n in self.primitives]
    k = jax.lax.argmax(weights, 0, jnp.int32)  # int32 under SynFlow's float64 too
    if self.is_initializing():  # every op's variables, whichever is chosen
      y = jnp.stack([b(self, x) for b in branches])[k]
    else:
      y = nn.switch(k, branches, self, x)
    y = weights[k] * y
    if self.select == 'chosen_and_rest':
      y = y + jnp.sum(jnp.where(jnp.arange(weights.shape[-1]) == k, 0, weights))
    return y.astype(x.dtype)


SELECT = (None, 'chosen', 'chosen_and_rest')


# What is rematerialised is what keeps the scan's residuals small: an edge between
# nodes remats its op, not the scan body, whose inputs include the whole node buffer
# (a rematerialised body keeps it once per edge: 5x3x3 maps of 64x32x32x16, 189 MB
# zeroed and written every step in NAS-Bench-201's first stage, where 5x3 suffice);
# an edge from a cell input remats the read of its input with the op, so that the
# residual is the loop-invariant inputs and an index (_InputEdge).
_REMAT = {MixedOp: nn.remat(MixedOp), SelectedOp: nn.remat(SelectedOp)}


def edge_op(primitives, channels, stride, train, pool_bn, partial, select, remat, name):
  """The op of one edge: :class:`MixedOp` where ``select`` is None, else
  :class:`SelectedOp` with that rule; rematerialised in the backward pass with
  ``remat``."""
  if select not in SELECT:
    raise ValueError(f'select must be one of {SELECT}, got {select!r}')
  if select is None:
    cls, rule = MixedOp, partial
  elif partial > 1:
    raise ValueError('partial channels (PC-DARTS) do not combine with one op per edge')
  else:
    cls, rule = SelectedOp, select
  return (_REMAT[cls] if remat else cls)(primitives, channels, stride, train, pool_bn, rule,
                                         name=name)


class _InputEdge(nn.Module):
  """One edge from a cell input, as a scan body: the inputs are a broadcast
  constant, so the scan keeps no per-edge residual but its index."""
  primitives: Sequence[str]
  channels: int
  stride: int
  train: bool
  pool_bn: bool
  partial: int
  select: str | None
  remat: bool

  @nn.compact
  def __call__(self, carry, inputs, edge):
    # rematerialised with the read of its input: the residuals are the loop-invariant
    # inputs and the index, not a copy of the input per edge
    return carry, (_REMAT_READ_AND_OP if self.remat else _read_and_op)(self, inputs, *edge)


def _read_and_op(edge: _InputEdge, inputs, src, weights, edge_weight):
  x = jax.lax.dynamic_index_in_dim(inputs, src, keepdims=False)
  return edge_op(edge.primitives, edge.channels, edge.stride, edge.train, edge.pool_bn,
                 edge.partial, edge.select, False, 'op')(x, weights, edge_weight)


_REMAT_READ_AND_OP = nn.remat(_read_and_op)


# A stride-1 cell on maps of at most this many pixels runs all its edges in one
# scan. DARTS supernet, first-order gradient, batch 64, C=16, one scan vs two:
# 8x8 inputs compile 29.5 -> 22.2 s, step 0.59 -> 0.48 s; 32x32 inputs (one scan
# in every normal cell) compile 41.8 -> 24.4 s but step 7.6 -> 10.7 s and XLA
# temporaries 0.83 -> 1.27 GiB (measured when the scan body was rematerialised and kept
# the node buffer once per edge).
ONE_SCAN_PIXELS = 64


class _NodeEdge(nn.Module):
  """One edge that adds to the node buffer, as a scan body: it reads state ``src`` (a
  cell input, broadcast, where ``src < n_in``; else node ``src - n_in``; ``inputs``
  None: nodes only) and adds its output to node ``dst``."""
  primitives: Sequence[str]
  channels: int
  train: bool
  pool_bn: bool
  partial: int
  select: str | None
  remat: bool

  @nn.compact
  def __call__(self, nodes, inputs, edge):
    src, dst, weights, edge_weight = edge
    if inputs is None:
      x = jax.lax.dynamic_index_in_dim(nodes, src, keepdims=False)
    else:
      n_in = inputs.shape[0]
      x = jnp.where(src < n_in,
                    jax.lax.dynamic_index_in_dim(inputs, jnp.minimum(src, n_in - 1), keepdims=False),
                    jax.lax.dynamic_index_in_dim(nodes, jnp.maximum(src - n_in, 0), keepdims=False))
    y = edge_op(self.primitives, self.channels, 1, self.train, self.pool_bn, self.partial,
                self.select, self.remat, 'op')(x, weights, edge_weight)
    return nodes.at[dst].add(y), None


def _rows(edge_weights, rows):
  # None (no edge normalisation) stays None: no multiply by ones in the program
  return None if edge_weights is None else edge_weights[rows]


# No constancy check: it traces each scan body once more to verify that broadcast
# inputs stay loop invariant, which the edge bodies' broadcasts (a cell input, the op
# options) are by construction; a darts2 step's trace 6.0 -> 4.5 s.
_STACKED = dict(variable_axes={'params': 0, 'batch_stats': 0, ops.RELU_CODES: 0},
                split_rngs={'params': True}, check_constancy_invariants=False)


def edge_scan(body, length: int):
  """The scan over one edge group as a lifted ``jit``, built once per (body,
  length, kernel path): the cells whose edge groups match in shapes and options then
  share one trace (JAX caches the jaxpr and its derivatives by function and input
  types), so tracing costs per distinct group, not per cell; a model traced on the
  other kernel path (:func:`jaxnas.kernels.use`) or for forward over reverse
  (:func:`jaxnas.kernels.forward_over_reverse`) gets a scan of its own
  (:func:`jaxnas.kernels.trace_key`)."""
  return _edge_scan(body, length, kernels.trace_key())


def fresh_edge_scans():
  """Forget the edge scans built so far, at the start of a program's trace: the
  program then lowers the same whatever this process traced before, and JAX's
  persistent compilation cache finds it. (A scan's lifted ``jit`` keeps its traces,
  and a kept trace lowers its constants otherwise than a fresh one: the same search
  step traced second in a process missed the cache of the first.)"""
  _edge_scan.cache_clear()


@functools.lru_cache(maxsize=None)
def _edge_scan(body, length: int, trace_key: tuple):
  return nn.jit(nn.scan(body, in_axes=(nn.broadcast, 0), length=length, **_STACKED))


class MixedCell(nn.Module):
  """The edges of one search cell; returns the node states, shape (n_nodes, B, H, W, C).

  ``weights`` has shape (n_edges, n_ops), rows in :func:`edge_list` order;
  ``edge_weights`` (n_edges,), if given, scales each edge (PC-DARTS), and
  ``partial`` K > 1 sends 1/K of the channels through the ops (:class:`MixedOp`);
  ``select`` runs only each edge's op of the largest weight (:class:`SelectedOp`).
  Input edges have stride ``stride``; edges between nodes have stride 1.
  Parameters are stacked per edge group, in α row order: with stride 1 on
  small maps ``all_edges`` (n_edges, ...); else ``input_edges``
  (n_in·n_nodes, ...) and ``inner_edges`` (the rest, ...).
  """
  primitives: Sequence[str]
  channels: int
  n_in: int
  n_nodes: int
  stride: int
  train: bool
  pool_bn: bool = False
  remat: bool = True
  partial: int = 1
  select: str | None = None

  @nn.compact
  def __call__(self, inputs: Sequence[jax.Array], weights: jax.Array, edge_weights=None):
    edges = edge_list(self.n_in, self.n_nodes)
    if weights.shape != (len(edges), len(self.primitives)):
      raise ValueError(f'cell weights must have shape {(len(edges), len(self.primitives))}, '
                       f'got {weights.shape}')
    # α order is node-major, so the input edges of node j are rows j·n_in .. j·n_in + n_in - 1
    # of the input group.
    in_rows = np.array([r for r, (i, j) in enumerate(edges) if i < self.n_in])
    in_src = np.array([i for i, j in edges if i < self.n_in], np.int32)  # int32 under x64 too
    inner = [(i - self.n_in, j, r) for r, (i, j) in enumerate(edges) if i >= self.n_in]

    if self.channels % self.partial:
      raise ValueError(f'partial channels: {self.channels} channels do not split into '
                       f'{self.partial} groups')
    x = jnp.stack(list(inputs))
    options = (self.primitives, self.channels, self.train, self.pool_bn, self.partial, self.select,
               self.remat)
    if self.stride == 1 and x.shape[2] * x.shape[3] <= ONE_SCAN_PIXELS:
      src, dst = (np.array(v, np.int32) for v in zip(*edges))
      scan = edge_scan(_NodeEdge, len(edges))
      nodes, _ = scan(*options, name='all_edges')(
          jnp.zeros((self.n_nodes,) + x.shape[1:], x.dtype), x,
          (src, dst, weights, edge_weights))
      return nodes
    scan = edge_scan(_InputEdge, len(in_rows))
    _, y = scan(self.primitives, self.channels, self.stride, self.train, self.pool_bn, self.partial,
                self.select, self.remat, name='input_edges')(
        (), x, (in_src, weights[in_rows], _rows(edge_weights, in_rows)))
    nodes = jnp.sum(y.reshape((self.n_nodes, self.n_in) + y.shape[1:]), axis=1)
    if inner:
      src, dst, rows = (np.array(v, np.int32) for v in zip(*inner))
      scan = edge_scan(_NodeEdge, len(inner))
      nodes, _ = scan(*options, name='inner_edges')(
          nodes, None, (src, dst, weights[rows], _rows(edge_weights, rows)))
    return nodes
