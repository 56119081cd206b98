"""The mixed-op cell shared by both search spaces, laid out for the compiler.

A cell has ``n_in`` input states and ``n_nodes`` intermediate nodes; node j
sums one mixed op from each earlier state, so its edges are
``[(i, j) for j in range(n_nodes) for i in range(n_in + j)]`` (state i >= n_in
is node i - n_in). This is DARTS' edge order (n_in = 2, n_nodes = 4, 14 edges)
and NAS-Bench-201's (n_in = 1, n_nodes = 3: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

Why this layout: XLA compiles a program with hundreds of separately traced
ops very slowly (minutes per cell on CPU). Here the edges of a cell share two
traced bodies, each under ``lax.scan`` with parameters stacked per edge:

* the n_in x n_nodes edges that read the cell inputs are independent: one
  scan over them, the inputs a broadcast constant, the edge outputs summed
  per node afterwards;
* the edges between intermediate nodes run in order over a buffer of node
  partial sums: edge (i -> j) adds its output to node j, and DARTS' edge
  order guarantees node i is complete when it is read.

No edge is padded or computed twice, and each mixed op is rematerialised in
the backward pass, one edge at a time, so that memory holds node states, not
the intermediates of every candidate op. (A vmap over the input edges, tried
first, recomputed all of them at once in the backward pass: 5 GiB of XLA
temporaries for the DARTS supernet at batch 64, and a slower trace.)
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import ops


def edge_list(n_in: int, n_nodes: int) -> list[tuple[int, int]]:
  """(source state, destination node) of every edge, in α row order."""
  return [(i, j) for j in range(n_nodes) for i in range(n_in + j)]


class MixedOp(nn.Module):
  """``y = Σ_o w_o · op_o(x)`` over the candidate ops; ``none`` contributes nothing."""
  primitives: Sequence[str]
  channels: int
  stride: int
  train: bool
  pool_bn: bool = False  # DARTS' supernet appends an affine-free BN to pooling

  @nn.compact
  def __call__(self, x, weights):
    out = None
    for k, name in enumerate(self.primitives):
      if name == 'none':
        continue
      if self.pool_bn and name.endswith('pool_3x3'):
        op = ops.Pool(name[:3], self.stride, bn=True, name=name)
      else:
        op = ops.get_op(name, self.channels, self.channels, self.stride, affine=False, name=name)
      y = weights[k] * op(x, self.train)
      out = y if out is None else out + y
    if out is None:  # only 'none' in the space
      out = jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])
    return out


class _InputEdge(nn.Module):
  """One edge from a cell input, as a scan body: the inputs are a broadcast
  constant, so the scan keeps no per-edge residual but its index."""
  primitives: Sequence[str]
  channels: int
  stride: int
  train: bool
  pool_bn: bool

  @nn.compact
  def __call__(self, carry, inputs, edge):
    src, weights = edge
    x = jax.lax.dynamic_index_in_dim(inputs, src, keepdims=False)
    return carry, MixedOp(self.primitives, self.channels, self.stride, self.train, self.pool_bn,
                          name='op')(x, weights)


class _InnerEdge(nn.Module):
  """One edge between intermediate nodes, as a scan body over the node buffer."""
  primitives: Sequence[str]
  channels: int
  train: bool
  pool_bn: bool

  @nn.compact
  def __call__(self, nodes, edge):
    src, dst, weights = edge
    x = jax.lax.dynamic_index_in_dim(nodes, src, keepdims=False)
    y = MixedOp(self.primitives, self.channels, 1, self.train, self.pool_bn, name='op')(x, weights)
    return nodes.at[dst].add(y), None


_STACKED = dict(variable_axes={'params': 0, 'batch_stats': 0}, split_rngs={'params': True})


class MixedCell(nn.Module):
  """The edges of one search cell; returns the node states, shape (n_nodes, B, H, W, C).

  ``weights`` has shape (n_edges, n_ops), rows in :func:`edge_list` order.
  Input edges have stride ``stride``; edges between nodes have stride 1.
  Parameters are stacked per edge group: ``input_edges`` (n_in·n_nodes, ...)
  and ``inner_edges`` (the rest, ...), each in α row order.
  """
  primitives: Sequence[str]
  channels: int
  n_in: int
  n_nodes: int
  stride: int
  train: bool
  pool_bn: bool = False
  remat: bool = True

  @nn.compact
  def __call__(self, inputs: Sequence[jax.Array], weights: jax.Array):
    edges = edge_list(self.n_in, self.n_nodes)
    if weights.shape != (len(edges), len(self.primitives)):
      raise ValueError(f'cell weights must have shape {(len(edges), len(self.primitives))}, '
                       f'got {weights.shape}')
    # α order is node-major, so the input edges of node j are rows j·n_in .. j·n_in + n_in - 1
    # of the input group.
    in_rows = np.array([r for r, (i, j) in enumerate(edges) if i < self.n_in])
    in_src = np.array([i for i, j in edges if i < self.n_in])
    inner = [(i - self.n_in, j, r) for r, (i, j) in enumerate(edges) if i >= self.n_in]

    x = jnp.stack(list(inputs))
    body = nn.remat(_InputEdge) if self.remat else _InputEdge
    scan = nn.scan(body, in_axes=(nn.broadcast, 0), length=len(in_rows), **_STACKED)
    _, y = scan(self.primitives, self.channels, self.stride, self.train, self.pool_bn,
                name='input_edges')((), x, (in_src, weights[in_rows]))
    nodes = jnp.sum(y.reshape((self.n_nodes, self.n_in) + y.shape[1:]), axis=1)
    if inner:
      src, dst, rows = (np.array(v) for v in zip(*inner))
      body = nn.remat(_InnerEdge) if self.remat else _InnerEdge
      scan = nn.scan(body, in_axes=0, length=len(inner), **_STACKED)
      nodes, _ = scan(self.primitives, self.channels, self.train, self.pool_bn,
                      name='inner_edges')(nodes, (src, dst, weights[rows]))
    return nodes
