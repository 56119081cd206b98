"""What every benchmark shares: the results file, stamped with machine and date."""
import json
import os
import platform
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def write_results(path: str, rows: list[dict], key: tuple[str, ...] = (), quiet: bool = False) -> None:
  """Writes ``rows`` as JSON with the machine and the date. With ``key``, rows of an
  earlier file whose key fields match none of the new rows are kept (a partial
  re-run updates its rows only)."""
  if key and os.path.exists(path):
    with open(path) as f:
      old = json.load(f).get('rows', [])
    new_keys = {tuple(r.get(k) for k in key) for r in rows}
    rows = [r for r in old if tuple(r.get(k) for k in key) not in new_keys] + rows
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(dict(machine=platform.platform(), cpus=os.cpu_count(),
                   date=time.strftime('%Y-%m-%d %H:%M'), rows=rows), f, indent=1)
  if not quiet:
    print(f'wrote {path}')


def compile_and_time(lowered, step, steps: int) -> dict:
  """Compiles ``lowered``, then times ``steps`` calls of ``step(compiled, i)`` (which returns
  what to wait for). Returns compile seconds, the median step, XLA's temporary
  memory and the process's peak RSS."""
  import resource

  import jax
  import numpy as np
  t0 = time.perf_counter()
  compiled = lowered.compile()
  t_compile = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(step(compiled, i))
    times.append(time.perf_counter() - t0)
  gib = 2.0 ** 30
  return dict(compile_s=t_compile, step_s=float(np.median(times)),
              xla_temp_gib=getattr(mem, 'temp_size_in_bytes', 0) / gib if mem else None,
              peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib)


def time_search_step(size: dict, steps: int, warmup: bool = False, **config) -> dict:
  """Compiles and times one search step (jaxnas.search.Search) at ``size`` (space,
  channels, layers, batch, image) on random images, with ``config`` settings (spelt
  as jaxnas.config.build takes them) on top; with ``warmup``, the label-free Zen(F) warm-up step instead (multistep).
  Returns :func:`compile_and_time`'s figures."""
  import numpy as np
  import jaxnas.xla
  jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
  from jaxnas import config as config_lib
  from jaxnas import data
  from jaxnas.search import Search, SearchConfig

  n = 2 * size['batch'] * config.get('multistep_n', 1) * (steps + 1)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, size['image'], size['image'], 3), dtype=np.uint8)
  y = rng.integers(0, 10, n)
  ds = data.from_arrays(x, y, x[:8], y[:8], num_classes=10)  # random CIFAR-shaped images
  if warmup:
    config = {**config, 'zen_warmup.epochs': 1}
  cfg = config_lib.build(SearchConfig, space=size['space'], channels=size['channels'],
                        layers=size['layers'], batch_size=size['batch'], epochs=2 if warmup else 1,
                        dataset='cifar10', **config)
  run = Search(cfg, ds)
  state = run.init_state()
  from jaxnas import sharding

  def batch(i):  # the warm-up reads no data
    if warmup:
      return (run.epochs,)
    return sharding.put(run.batch(0, i), run.batch_shardings), run.epochs
  lowered = (run.warmup_fn if warmup else run.step_fn).lower(state, *batch(0))
  box = [state]

  def step(compiled, i):  # the compiled step itself: calling the jit would compile again
    box[0], metrics = compiled(box[0], *batch(i))
    return metrics
  return compile_and_time(lowered, step, steps)
