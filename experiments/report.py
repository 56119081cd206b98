"""What the experiments' tables share: the machine line, folder names, mean ± std."""
from __future__ import annotations

import os
import platform
import statistics


def machine() -> str:
  """The CPU, core count, Python and jax (and its platform) of this machine."""
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return (f'{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, '
          f'jax {jax.__version__} on {jax.devices()[0].platform}')


def choose(names: list[str], given: str | None, what: str) -> list[str]:
  """The names a comma-separated ``given`` picks (all when None); a name of the config is
  taken whole (names may hold commas). An unknown name is a ValueError listing the known."""
  chosen = ([given] if given in names else given.split(',')) if given else names
  unknown = [n for n in chosen if n not in names]
  if unknown:
    raise ValueError(f'unknown {what} {unknown}; the config has: {", ".join(names)}')
  return chosen


def slug(name: str) -> str:
  """A folder name for a row's name."""
  return ''.join(c if c.isalnum() else '_' for c in name).strip('_').lower()


def mean_std(values: list[float], fmt: str = '.2f') -> str:
  """``mean ± sample std`` (the value alone for one, '—' for none)."""
  if not values:
    return '—'
  if len(values) == 1:
    return format(values[0], fmt)
  return f'{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}'
