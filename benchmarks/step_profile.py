"""Where a NAS-Bench-201 search step's seconds go: the supernet's passes, then its kernels.

    python benchmarks/step_profile.py                  # C=16, N=5, batch 64, 32x32
    python benchmarks/step_profile.py --parts kernels  # only the kernels at each stage's shape

``passes``: the supernet's forward (training mode), the gradient in the weights, in α,
and in both, each with and without remat. ``kernels``: one candidate op's kernels at
the shape of each stage (32x32x16, 16x16x32, 8x8x64): the 3x3 convolution forward and
forward+backward (the pullback of a fixed cotangent), the 1x1 convolution, BatchNorm
and average pooling forward+backward.
A stage has 5 cells of 6 edges: multiply a kernel's time by 30 per stage to compare it
with a pass. Each figure is the median of ``--repeat`` calls of the compiled program.
This machine's timings drift by up to 20% between runs: compare rows of one run.
Writes benchmarks/results/step_profile.json.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, compile_and_time, write_results  # noqa: E402


def timed(fn, *args, repeat: int) -> dict:
  import jax
  r = compile_and_time(jax.jit(fn).lower(*args), lambda compiled, _: compiled(*args), repeat)
  return dict(compile_s=round(r['compile_s'], 2), ms=round(1e3 * r['step_s'], 2))


def passes(channels: int, layers: int, batch: int, repeat: int):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxnas.spaces import nb201
  from jaxnas.spaces.base import init_variables
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, batch))
  alpha = {'cell': jnp.asarray(1e-3 * rng.normal(size=(6, 5)), jnp.float32)}
  for remat in (True, False):
    net = nb201.Supernet(channels, layers, 10, remat=remat)
    variables = init_variables(net, jax.random.key(0), x, alpha)

    def loss(params, alpha):
      logits, _ = net.apply({**variables, 'params': params}, x, alpha, train=True,
                            mutable=['batch_stats'])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(batch), y])
    for name, fn in (('forward', loss), ('grad w', jax.grad(loss)), ('grad α', jax.grad(loss, 1)),
                     ('grad w and α', jax.grad(loss, (0, 1)))):
      yield dict(part='passes', what=f'{name}, remat {remat}',
                 **timed(fn, variables['params'], alpha, repeat=repeat))


def kernels(batch: int, repeat: int):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxnas import kernels as k, ops
  rng = np.random.default_rng(0)
  for hw, c in ((32, 16), (16, 32), (8, 64)):
    x = jnp.asarray(rng.normal(size=(batch, hw, hw, c)), jnp.float32)
    k3 = jnp.asarray(0.1 * rng.normal(size=(3, 3, c, c)), jnp.float32)
    k1 = jnp.asarray(0.1 * rng.normal(size=(c, c)), jnp.float32)
    shape = f'{hw}x{hw}x{c}'
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)  # the cotangent of each op's output

    def backward(f):  # forward, then the pullback of g: what a gradient pass runs of an op
      return lambda *args: jax.vjp(f, *args)[1](g)
    conv3 = lambda x, w: k.conv2d(x, w, 1, 1)
    for name, fn, args in (
        ('conv 3x3 forward', conv3, (x, k3)),
        ('conv 3x3 forward+backward', backward(conv3), (x, k3)),
        ('conv 1x1 forward+backward', backward(jnp.dot), (x, k1)),
        ('BatchNorm forward+backward', backward(lambda x: ops.standardize(x, 1e-5)[0]), (x,)),
        ('avg pool forward+backward', backward(k.avg_pool_3x3), (x,))):
      yield dict(part='kernels', what=f'{name}, {shape}', **timed(fn, *args, repeat=repeat))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--parts', default='passes,kernels', help='comma-separated: passes, kernels')
  ap.add_argument('--channels', type=int, default=16)
  ap.add_argument('--layers', type=int, default=5)
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--repeat', type=int, default=5)
  ap.add_argument('--out', default=os.path.join(RESULTS, 'step_profile.json'))
  a = ap.parse_args(argv)
  parts = a.parts.split(',')
  if set(parts) - {'passes', 'kernels'}:
    ap.error(f'unknown part(s) {",".join(sorted(set(parts) - {"passes", "kernels"}))}: '
             f'choose from passes, kernels')
  import jaxnas.xla
  jaxnas.xla.configure()  # the command line's XLA flags, before JAX starts
  rows = []
  print(f'{"part":8s} {"what":44s} {"compile s":>9s} {"ms":>9s}')
  for part in parts:
    gen = (passes(a.channels, a.layers, a.batch, a.repeat) if part == 'passes'
           else kernels(a.batch, a.repeat))
    for row in gen:
      row.update(channels=a.channels, layers=a.layers, batch=a.batch)
      rows.append(row)
      print(f'{row["part"]:8s} {row["what"]:44s} {row["compile_s"]:9.2f} {row["ms"]:9.2f}', flush=True)
  write_results(a.out, rows, key=('part', 'what', 'channels', 'layers', 'batch'))


if __name__ == '__main__':
  main()
