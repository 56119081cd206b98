"""One prepared check of a machine's accelerator (or of this CPU): what jaxnas costs there
on each kernel path, and whether the two paths compute the same numbers.

    bash benchmarks/device_check.sh            # on a GPU or TPU host: DARTS' search size
    bash benchmarks/device_check.sh --smoke    # tiny sizes: a few minutes on 2 CPU cores

Prints, part by part:
  * the backend, the device and the kernel path jaxnas chooses there (jaxnas.kernels);
  * compile and step seconds of darts1 and darts2 at DARTS' search size (C=16, 8 cells,
    batch 64, 32x32) on each kernel path, and of darts1 with bfloat16 activations;
  * SGE at Q=10 directions;
  * FreeDARTS' three saliencies on both search spaces (batch 64, 32x32);
  * ``jaxnas zc --space nb201 --proxy synflow`` over 1,000 cells at NAS-Bench-201's size;
  * the cosine of darts1's α gradient in bfloat16 with float32's, on small supernets;
  * the equality of the two kernel paths on the device: every op's output and
    gradients, and a small supernet's loss, gradients and darts2 mixed product, in
    float32 at the 'highest' matmul precision (a GPU's default, TF32, rounds to 1e-3),
    as the largest difference relative to the largest entry, and each path's distance to
    the same computation in float64 on the host (ok where neither path is over 10 times
    further from it than the other, or within 1e-5: rounding depends on the machine).
Rows go to benchmarks/results/device_check.json as each finishes (a run cut short keeps
what it measured). Needs only ``pip install -e .`` (and the accelerator's jax wheel).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, time_search_step, write_results  # noqa: E402

import jaxnas.xla  # noqa: E402

jaxnas.xla.configure()  # before JAX starts its backend (CPU flags on the CPU backend only)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxnas import data, kernels, ops  # noqa: E402

FULL = dict(search=dict(space='darts', channels=16, layers=8, batch=64, image=32), steps=3,
            sge_q=10, free=dict(batch=64, image=32, channels=None, layers=None),
            zc=dict(archs=1000, channels=16, layers=5, image=32), equal=dict(channels=4, image=16))
SMOKE = dict(search=dict(space='darts', channels=4, layers=3, batch=8, image=8), steps=2,
             sge_q=2, free=dict(batch=8, image=8, channels=4, layers=3),
             zc=dict(archs=20, channels=4, layers=1, image=8), equal=dict(channels=4, image=8))
TOLERANCE = 1e-5  # a float32 path's distance to float64 that passes whatever the other's


def use_path(path: str) -> None:
  """Kernels of ``path`` from the next trace on (JAX keeps the traces of scan bodies)."""
  os.environ['JAXNAS_KERNELS'] = path
  jax.clear_caches()


def random_images(n: int, image: int) -> data.Dataset:
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, image, image, 3), dtype=np.uint8)
  y = rng.integers(0, 10, n)
  return data.from_arrays(x, y, x[:8], y[:8], num_classes=10)


def search_rows(sizes: dict):
  for path in kernels.KERNEL_PATHS:
    use_path(path)
    runs = [('darts1', {}), ('darts2', {})]
    if path == default_path():
      runs += [('darts1 bf16', dict(compute_dtype='bfloat16')),
               (f'sge Q={sizes["sge_q"]}', dict(sge_q=sizes['sge_q']))]
    for name, kw in runs:
      r = time_search_step(sizes['search'], sizes['steps'], method=name.split()[0], **kw)
      yield dict(part='search', path=path, method=name, **sizes['search'], **r)


def free_rows(sizes: dict):
  from jaxnas.free import SALIENCIES, FreeConfig, free
  use_path(default_path())
  s = sizes['free']
  ds = random_images(s['batch'], s['image'])
  for space in ('darts', 'nb201'):
    layers = s['layers'] if space == 'darts' or s['layers'] is None else 1
    for name in SALIENCIES:
      r = free(FreeConfig(space=space, saliency=name, batch_size=s['batch'], channels=s['channels'],
                          layers=layers), ds)
      yield dict(part='free', space=space, method=name, batch=s['batch'], image=s['image'],
                 seconds=r.seconds, seconds_compiled=r.seconds_compiled)


def zc_rows(sizes: dict):
  from jaxnas.spaces import get_space
  from jaxnas.zc import score_genotypes
  use_path(default_path())
  s = sizes['zc']
  sp = get_space('nb201')
  t0 = time.perf_counter()
  r = score_genotypes(sp, sp.sample_distinct(s['archs'], 0), 'synflow',
                      random_images(8, s['image']), s['channels'], s['layers'])
  yield dict(part='zc', space='nb201', method='synflow', via=r.via, archs=s['archs'],
             seconds=time.perf_counter() - t0, archs_per_second_compiled=r.archs_per_second)


def _difference(a, b) -> float:
  """The largest difference of two results' leaves, relative to each leaf's largest entry
  in ``a`` (or a thousandth of the largest entry of all, for a leaf that is zero up to
  rounding: the gradient of a bias that a BatchNorm cancels)."""
  a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  a, b = [np.asarray(u, np.float64) for u in a], [np.asarray(v, np.float64) for v in b]
  top = max(float(np.max(np.abs(u))) for u in a)
  return max(float(np.max(np.abs(u - v))) / max(float(np.max(np.abs(u))), 1e-3 * top, 1e-30)
             for u, v in zip(a, b))


def _float64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), jax.device_get(tree))


def compare_paths(fn, inputs) -> dict:
  """``fn(inputs)`` on each kernel path in float32 on the device, against the same
  computation in float64 on the host CPU (the ``cpu`` path, equal to the ``xla`` path
  to 1e-10 in float64: tests/test_ops.py). Float32 sums in another order differ by an
  amount that depends on the machine, so the bound is not a constant: each path's
  distance to the float64 result is its rounding error, and the paths agree when
  neither is over 10 times the other's (or 1e-5): a wrong kernel is off by orders of
  magnitude more than rounding."""
  out = {}
  for path in kernels.KERNEL_PATHS:
    use_path(path)
    out[path] = jax.device_get(fn(inputs))
  use_path('cpu')
  with jax.enable_x64(), jax.default_device(jax.devices('cpu')[0]):
    reference = jax.device_get(fn(_float64(inputs)))
  errors = {p: _difference(reference, out[p]) for p in kernels.KERNEL_PATHS}
  worst, best = max(errors.values()), min(errors.values())
  return dict(difference=_difference(*(out[p] for p in kernels.KERNEL_PATHS)),
              **{f'error_{p}': e for p, e in errors.items()}, ok=worst <= max(10 * best, TOLERANCE))


def equal_rows(sizes: dict):
  import optax

  from jaxnas import hypergrad
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  c, size = sizes['equal']['channels'], sizes['equal']['image']
  with jax.default_matmul_precision('highest'):
    for name in sorted(ops.OPS):
      for stride in (1, 2):
        x = jax.random.normal(jax.random.key(1), (2, size, size, c))
        op = ops.get_op(name, c, c, stride, affine=True)
        v = op.init(jax.random.key(0), x, False)
        r = jax.random.normal(jax.random.key(2), (2, size // stride, size // stride, c))

        def op_loss(params, x, r, stats, op=op):
          y, _ = op.apply({'params': params, 'batch_stats': stats}, x, True, mutable=['batch_stats'])
          return jnp.sum(y * r)
        row = compare_paths(lambda i: jax.value_and_grad(op_loss, (0, 1))(*i),
                            (v.get('params', {}), x, r, v.get('batch_stats', {})))
        yield dict(part='equal', what=f'{name} stride {stride}', **row)
    for space in ('darts', 'nb201'):
      sp = get_space(space)
      model = sp.supernet(c, 3 if space == 'darts' else 1, 10)
      alpha = sp.init_alpha(jax.random.key(1), 0.1)
      x = jax.random.normal(jax.random.key(2), (4, size, size, 3))
      y = jnp.arange(4) % 10
      v = init_variables(model, jax.random.key(0), x[:1], alpha)
      u = jax.tree_util.tree_map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape),
                                 v['params'])

      def supernet(inputs, model=model, y=y):
        params, stats, alpha, x, u = inputs

        def loss(params, alpha):
          logits, _ = model.apply({'params': params, 'batch_stats': stats}, x, alpha, train=True,
                                  mutable=['batch_stats'])
          return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return (jax.value_and_grad(loss, (0, 1))(params, alpha),
                hypergrad.base.exact_mixed_product(loss, params, alpha, u))
      row = compare_paths(supernet, (v['params'], v.get('batch_stats', {}), alpha, x, u))
      yield dict(part='equal', what=f'{space} supernet: loss, gradients, mixed product', **row)


def bf16_rows(sizes: dict):
  """The α gradient of darts1's step in bfloat16 against float32's (cosine), one step
  from the initial state on each of 4 batches, on small supernets (C=8, DARTS 3 cells,
  NAS-Bench-201 1 cell per stage, batch 32, 16x16 images with a pattern per class)."""
  from jaxnas import config as config_lib
  from jaxnas.search import Search, SearchConfig
  use_path(default_path())
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 320)
  x = (rng.random((10, 16, 16, 3))[y] * 0.5 + rng.random((320, 16, 16, 3)) * 0.5).astype(np.float32)
  ds = data.from_arrays(x[:256], y[:256], x[256:], y[256:], num_classes=10)
  for space in ('darts', 'nb201'):
    grads = {}
    for dtype in ('float32', 'bfloat16'):
      run = Search(config_lib.build(
          SearchConfig, space=space, channels=8, layers=3 if space == 'darts' else 1,
          batch_size=32, epochs=1, compute_dtype=dtype, alpha_optimizer='sgd', alpha_lr=1.0,
          alpha_weight_decay=0.0, workdir=os.devnull), ds)
      grads[dtype] = []
      for step in range(4):
        state = run.init_state()
        alpha0 = jax.device_get(state.alpha)
        state, _ = run.step_fn(state, run.batch(0, step), run.epochs)
        grads[dtype].append({k: (alpha0[k] - np.asarray(v)).ravel() for k, v in state.alpha.items()})
    for k in grads['float32'][0]:
      cos = [a[k] @ b[k] / np.linalg.norm(a[k]) / np.linalg.norm(b[k])
             for a, b in zip(grads['float32'], grads['bfloat16'])]
      yield dict(part='bf16', space=space, cells=k, cosines=[float(c) for c in cos],
                 mean=float(np.mean(cos)))


def default_path() -> str:
  os.environ.pop('JAXNAS_KERNELS', None)
  return kernels.kernel_path()


def describe(row: dict) -> str:
  part = row['part']
  if part == 'search':
    return (f"search  {row['path']:4s} {row['method']:12s} compile {row['compile_s']:7.1f} s  "
            f"step {row['step_s']:8.3f} s")
  if part == 'free':
    return (f"free    {row['space']:6s} {row['method']:8s} {row['seconds']:7.1f} s (compile "
            f"included), {row['seconds_compiled']:7.3f} s compiled")
  if part == 'zc':
    return (f"zc      nb201 synflow {row['archs']} cells: {row['seconds']:7.1f} s (compile "
            f"included), {row['archs_per_second_compiled']:8.1f} cells/s compiled ({row['via']})")
  if part == 'bf16':
    return (f"bf16    {row['space']:6s} {row['cells']:6s} α-gradient cosine with float32: mean "
            f"{row['mean']:.4f}, batches " + ' '.join(f'{c:.4f}' for c in row['cosines']))
  return (f"equal   {row['what']:52s} {row['difference']:9.2e} (to float64: cpu "
          f"{row['error_cpu']:8.2e}, xla {row['error_xla']:8.2e}) {'ok' if row['ok'] else 'DIFFERS'}")


PARTS = {'search': search_rows, 'free': free_rows, 'zc': zc_rows, 'bf16': bf16_rows,
         'equal': equal_rows}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--smoke', action='store_true', help='tiny sizes (a few minutes on a CPU)')
  p.add_argument('--parts', default=','.join(PARTS), help='of ' + ', '.join(PARTS))
  p.add_argument('--out', default=os.path.join(RESULTS, 'device_check.json'))
  args = p.parse_args(argv)
  unknown = set(args.parts.split(',')) - set(PARTS)
  if unknown:
    p.error(f'unknown part(s) {", ".join(sorted(unknown))}: choose from {", ".join(PARTS)}')
  sizes = SMOKE if args.smoke else FULL
  device = jax.devices()[0]
  head = dict(part='device', backend=jax.default_backend(), device=device.device_kind,
              devices=jax.device_count(), kernel_path=default_path(), jax=jax.__version__,
              smoke=args.smoke)
  print(f"backend {head['backend']}, {head['devices']} x {head['device']}, jaxnas kernels "
        f"'{head['kernel_path']}' by default, jax {head['jax']}{' (smoke sizes)' if args.smoke else ''}",
        flush=True)
  rows, t0 = [head], time.perf_counter()
  for part in args.parts.split(','):
    for row in PARTS[part](sizes):
      rows.append(row)
      print(describe(row), flush=True)
      write_results(args.out, rows, quiet=True)
  default_path()
  bad = [r['what'] for r in rows if r['part'] == 'equal' and not r['ok']]
  print(f'wrote {args.out}; {time.perf_counter() - t0:.0f} s in all; '
        + (f'the paths differ on: {", ".join(bad)}' if bad else 'the kernel paths agree'))
  return 1 if bad else 0


if __name__ == '__main__':
  sys.exit(main())
