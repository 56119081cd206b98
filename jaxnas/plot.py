"""Pictures: genotype cells as graphs, α (mixing weights) per edge over the epochs.

Drawn on ``matplotlib.figure.Figure`` and saved through Agg, without pyplot:
drawing chooses no backend and leaves a notebook's matplotlib as it was.
"""
from __future__ import annotations

import time

import matplotlib
import numpy as np
from matplotlib.figure import Figure

_COLORS = matplotlib.colormaps['tab10']


class Redraw:
  """Whether a running job redraws its pictures now: at most once per ``interval``
  seconds, or when ``final``. (Drawing takes seconds per picture: redrawn every
  epoch, a few-minute search spent a fifth of its time drawing.)"""

  def __init__(self, interval: float = 60.0):
    self.interval, self.last = interval, time.monotonic()

  def __call__(self, final: bool = False) -> bool:
    now = time.monotonic()
    if final or now - self.last >= self.interval:
      self.last = now
      return True
    return False


def draw_cell(space, genotype, path: str, cell: str) -> None:
  """Draws one cell of a genotype of ``space`` (a SearchSpace) as a left-to-right graph,
  ops on the edges."""
  inputs, nodes, outputs, edges = space.drawing(genotype, cell)
  pos = {}
  for i, n in enumerate(inputs):
    pos[n] = (0.0, 1.0 - i * 1.2 if len(inputs) > 1 else 0.0)
  for i, n in enumerate(nodes):
    pos[n] = (1.2 + i * 1.1, 0.9 if i % 2 == 0 else -0.6)
  for n in outputs:
    pos[n] = (1.2 + len(nodes) * 1.1 + 0.4, 0.2)
  fig = Figure(figsize=(2.0 + 1.6 * (len(nodes) + 1), 3.6))
  ax = fig.subplots()
  ops = sorted({op for _, _, op in edges if op})
  color = {op: _COLORS(i % 10) for i, op in enumerate(ops)}
  for src, dst, op in edges:
    (x0, y0), (x1, y1) = pos[src], pos[dst]
    ax.annotate('', xy=(x1, y1), xytext=(x0, y0),
                arrowprops=dict(arrowstyle='->', color=color.get(op, 'grey'), lw=1.6,
                                shrinkA=14, shrinkB=14, connectionstyle='arc3,rad=0.12'))
    if op:
      ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, op, fontsize=7, ha='center',
              color=color[op], bbox=dict(fc='white', ec='none', alpha=0.8, pad=0.5))
  for n, (x, y) in pos.items():
    fc = '#9ecae1' if n in inputs else '#fdd0a2' if n in outputs else '#d9d9d9'
    ax.text(x, y, n, ha='center', va='center', fontsize=9,
            bbox=dict(boxstyle='round,pad=0.4', fc=fc, ec='black'))
  ax.set_xlim(-0.6, max(x for x, _ in pos.values()) + 0.6)
  ax.set_ylim(-1.6, 1.6)
  ax.axis('off')
  ax.set_title(f'{space.title} {cell} cell')
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def draw_alpha_trajectory(weights: np.ndarray, primitives, edge_names, path: str, title: str) -> None:
  """``weights``: (epochs, edges, ops) mixing weights; one panel per edge."""
  epochs, n_edges, _ = weights.shape
  cols = min(n_edges, 7)
  rows = -(-n_edges // cols)
  fig = Figure(figsize=(2.2 * cols, 1.9 * rows + 0.6))
  axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
  x = np.arange(1, epochs + 1)
  for e in range(rows * cols):
    ax = axes[e // cols][e % cols]
    if e >= n_edges:
      ax.axis('off')
      continue
    for k, name in enumerate(primitives):
      ax.plot(x, weights[:, e, k], color=_COLORS(k % 10), label=name, lw=1.3)
    ax.set_title(edge_names[e], fontsize=8)
    ax.tick_params(labelsize=7)
  axes[0][0].legend(fontsize=6, loc='upper left', ncol=1)
  fig.suptitle(title, fontsize=10)
  fig.supxlabel('epoch', fontsize=8)
  # fixed margins: tight_layout measured every panel's text and took ~40% of the drawing
  fig.subplots_adjust(left=0.06, right=0.98, bottom=0.45 / (1.9 * rows + 0.6) + 0.02,
                      top=1 - 0.5 / (1.9 * rows + 0.6), wspace=0.15, hspace=0.35)
  fig.savefig(path, dpi=110)


def draw_curves(history: list[dict], keys, path: str, title: str,
                benchmark_columns: tuple[str, ...] = ()) -> None:
  """Metric curves over epochs from a list of per-epoch records; with
  ``benchmark_columns``, a second panel below: the real accuracy (%) of the cell
  derived at each epoch's end (``record['benchmark'][column]``), the picture of a
  search that collapses (or does not)."""
  fig = Figure(figsize=(5, 5.6 if benchmark_columns else 3.2))
  axes = fig.subplots(2 if benchmark_columns else 1, 1, squeeze=False)[:, 0]
  ax = axes[0]
  for k in keys:  # a key may be missing from some epochs (a label-free warm-up has no loss)
    points = [(h['epoch'], h[k]) for h in history if h.get(k) is not None]
    if points:
      ax.plot(*zip(*points), marker='o', ms=3, label=k)
  ax.set_title(title, fontsize=10)
  if benchmark_columns:
    bx = axes[1]
    for c in benchmark_columns:  # an epoch without a derivable cell has no row
      points = [(h['epoch'], h['benchmark'][c]) for h in history if h.get('benchmark')]
      if points:
        bx.plot(*zip(*points), marker='o', ms=3, label=c)
    bx.set_ylabel('derived cell: real accuracy (%)', fontsize=8)
  for a in axes:
    a.set_xlabel('epoch')
    if a.get_legend_handles_labels()[0]:
      a.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
