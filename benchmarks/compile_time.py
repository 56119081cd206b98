"""Compile time, step time and memory of the search supernet's forward+backward.

    python benchmarks/compile_time.py                  # small and DARTS search size
    python benchmarks/compile_time.py --sizes small    # just the small one

Each configuration runs in a fresh process twice: first with an empty
persistent compilation cache (the cold start), then with the cache it filled
(the cached start a second CLI run sees). The forward+backward goes through
``jaxnas.xla.persistent_jit``, as the CLI's search step does: the cold start
traces, lowers and exports it; the cached start reads the exported program
back instead. Printed per run: time to trace and lower (cached: to load the
program), XLA compile time (cached: to load the executable), the median steady-state step, XLA's memory analysis
of the compiled step and the process's peak RSS. Writes
benchmarks/results/compile_time.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, compile_and_time, write_results  # noqa: E402

SIZES = {
    'small': dict(space='darts', channels=8, layers=5, batch=32, image=32),
    'darts': dict(space='darts', channels=16, layers=8, batch=64, image=32),
    'nb201': dict(space='nb201', channels=16, layers=5, batch=64, image=32),
}


def measure(space, channels, layers, batch, image, steps=3, **_):
  """In this process: build, init, compile and time the forward+backward."""
  import jax
  import jax.numpy as jnp
  from jaxnas import get_space, xla
  from jaxnas.spaces.base import count_params, init_variables

  programs = xla.program_dir(xla.enable_compilation_cache(os.environ['JAXNAS_CACHE_DIR']))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  sp = get_space(space)
  model = sp.supernet(channels, layers, 10)
  alpha = sp.init_alpha(jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (batch, image, image, 3))
  y = jax.random.randint(jax.random.key(3), (batch,), 0, 10)

  t0 = time.perf_counter()
  variables = init_variables(model, jax.random.key(0), x, alpha, programs=programs)
  jax.block_until_ready(variables)
  t_init = time.perf_counter() - t0

  def loss_fn(params, batch_stats, alpha, x, y):
    logits, new_state = model.apply({'params': params, 'batch_stats': batch_stats}, x, alpha,
                                    train=True, mutable=['batch_stats'])
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1)), new_state['batch_stats']

  grad_fn = xla.persistent_jit(jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True),
                               ['compile_time', space, channels, layers], programs)
  args = (variables['params'], variables['batch_stats'], alpha, x, y)
  t0 = time.perf_counter()
  lowered = grad_fn.lower(*args)
  t_lower = time.perf_counter() - t0
  return dict(params=count_params(variables['params']), init_s=t_init, trace_lower_s=t_lower,
              **compile_and_time(lowered, lambda compiled, i: compiled(*args), steps))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--sizes', default='small,darts', help=f'comma list of {list(SIZES)}')
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--out', default=os.path.join(RESULTS, 'compile_time.json'))
  p.add_argument('--child', help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(measure(**SIZES[args.child], steps=args.steps)))
    return

  rows = []
  cache = tempfile.mkdtemp(prefix='jaxnas-bench-cache-')
  try:
    for size in args.sizes.split(','):
      for start in ('cold', 'cached'):
        env = dict(os.environ, JAXNAS_CACHE_DIR=cache)
        if start == 'cold':
          shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, '--child', size, '--steps', str(args.steps)],
                             env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode:
          print(out.stderr[-3000:], file=sys.stderr)
          raise SystemExit(f'{size} ({start}) failed')
        row = dict(size=size, start=start, **SIZES[size], process_wall_s=wall,
                   **json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(f"{size:6s} {start:6s} C={row['channels']:<3d} L={row['layers']:<2d} B={row['batch']:<3d} "
              f"params={row['params']:>9,d} init {row['init_s']:6.1f}s  trace+lower {row['trace_lower_s']:5.1f}s  "
              f"compile {row['compile_s']:6.1f}s  step {row['step_s']:6.2f}s  "
              f"XLA temp {row['xla_temp_gib']:.2f} GiB  peak RSS {row['peak_rss_gib']:.2f} GiB  "
              f"process {wall:6.1f}s", flush=True)
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  write_results(args.out, rows, key=('size', 'start'))


if __name__ == '__main__':
  main()
