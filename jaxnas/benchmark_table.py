"""Tabular benchmarks: the real accuracy of a derived cell, looked up.

NAS-Bench-201 trained every one of its 15,625 cells to the end (200 epochs,
CIFAR-10, CIFAR-100 and ImageNet16-120), so a search on its space is judged by
reading the accuracy of the cell it derives from that table: what every
NAS-Bench-201 paper reports. ``--benchmark-table FILE`` (``jaxnas search``,
``free``, ``zc`` and ``run``) does that look-up.

A table file is JSON::

  {"source": "where the numbers come from",
   "columns": ["cifar10_test", "cifar100_test", "imagenet16_120_test"],
   "archs": {"|nor_conv_3x3~0|+|...|": [94.37, 73.51, 47.31], ...}}

keyed by the space's genotype text (NAS-Bench-201's arch string), one number
per column. ``benchmarks/nb201_test_acc_200ep.json`` is NAS-Bench-201's
(its ``source`` field says where it was exported from).
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, NamedTuple

# The spaces whose every cell a table can hold, and what its keys are.
TABLE_KEYS = {'nb201': "NAS-Bench-201's arch strings ('|nor_conv_3x3~0|+|...|')"}


class BenchmarkTable(NamedTuple):
  path: str
  source: str
  columns: tuple[str, ...]
  rows: dict[str, tuple[float, ...]]

  def lookup(self, genotype: Any) -> dict[str, float]:
    """``{column: value}`` of ``genotype`` (its text is the key)."""
    key = str(genotype)
    try:
      return dict(zip(self.columns, self.rows[key]))
    except KeyError:
      raise ValueError(f'--benchmark-table {self.path}: the cell {key} is not in the table '
                       f'({len(self.rows)} cells)') from None


def check_space(space: str) -> None:
  """Raises unless a table can hold the cells of ``space``."""
  if space not in TABLE_KEYS:
    raise ValueError(f'--benchmark-table: the {space} space has no benchmark table (spaces with '
                     f'one: {", ".join(TABLE_KEYS)})')


@functools.lru_cache(maxsize=4)
def load(path: str) -> BenchmarkTable:
  """The table in ``path``; a missing, unreadable or malformed file is one message."""
  where = f'--benchmark-table {path}'
  if not os.path.isfile(path):
    raise ValueError(f'{where}: no such file')
  try:
    with open(path) as f:
      doc = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{where}: not readable as JSON ({e})') from None
  if not (isinstance(doc, dict) and isinstance(doc.get('columns'), list) and doc['columns']
          and isinstance(doc.get('archs'), dict) and doc['archs']):
    raise ValueError(f'{where}: not a benchmark table: expected a JSON object with "columns" '
                     '(a list of names) and "archs" (an object of arch string -> one number '
                     'per column)')
  columns = tuple(str(c) for c in doc['columns'])
  rows = {}
  for arch, values in doc['archs'].items():
    if not (isinstance(values, list) and len(values) == len(columns)
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
      raise ValueError(f'{where}: the row of {arch} is {values!r}, not {len(columns)} finite '
                       f'numbers (columns {", ".join(columns)})')
    rows[arch] = tuple(float(v) for v in values)
  return BenchmarkTable(path, str(doc.get('source', '')), columns, rows)


def lookup(path: str | None, space: str, genotype: Any) -> dict[str, float] | None:
  """The table's row of ``genotype`` (None without a table)."""
  if path is None:
    return None
  check_space(space)
  return load(path).lookup(genotype)


def format_row(row: dict[str, float] | None) -> str:
  return ', '.join(f'{k} {v:.2f}' for k, v in row.items()) if row else ''
