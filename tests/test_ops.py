"""Kernels against XLA's own convolution / reduce_window and NumPy."""
import functools
import json
import os
import subprocess

import flax.linen as nn
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxnas import kernels, ops


def grouped_conv(x, kernel, stride, dilation):
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  return lax.conv_general_dilated(x, kernel[:, :, None, :], (stride, stride), [(pad, pad)] * 2,
                                  rhs_dilation=(dilation, dilation),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  feature_group_count=x.shape[-1])


def test_batch_norm_is_exact_for_channels_far_from_zero():
  # E[x²] − E[x]² (Flax's default, one pass) cancels catastrophically where a channel's
  # mean dwarfs its spread: here it is off by orders of magnitude in float32. Supernet
  # channels are often so (NAS-Bench-201's convolution biases before BN, α at 1e-3);
  # that noise made SNIP move by 2% when the batch rows were permuted.
  x = 1000 + 0.01 * np.random.default_rng(0).standard_normal((64, 4, 4, 3))
  x = x.astype(np.float32)
  bn = ops.batch_norm(train=True, affine=False)
  y, _ = bn.apply(bn.init(jax.random.key(0), x), x, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  want = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + 1e-5)
  np.testing.assert_allclose(y, want, atol=2e-2)


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('affine', [True, False])
def test_batch_norm_is_flax_batch_norm_with_pytorchs_running_variance(train, affine):
  # the same variables and outputs as Flax's nn.BatchNorm with PyTorch's momentum and eps
  # and the two-pass variance, after two updates; the running mean as Flax's, the running
  # variance as torch.nn.BatchNorm2d's: updated with the unbiased batch variance
  rng = np.random.default_rng(0)
  x1, x2 = (jnp.asarray(3 + rng.standard_normal((8, 4, 4, 5)), jnp.float32) for _ in range(2))
  ours = ops.batch_norm(train, affine)
  flax = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_scale=affine, use_bias=affine, use_fast_variance=False)
  v = ours.init(jax.random.key(0), x1)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(
      flax.init(jax.random.key(0), x1))
  if affine:
    v = {'params': {'scale': jnp.arange(1., 6.), 'bias': -jnp.arange(5.)},
         'batch_stats': v['batch_stats']}
  state = {'ours': v, 'flax': v}
  for x in (x1, x2):
    (y, s), (y_ref, s_ref) = (m.apply(state[k], x, mutable=['batch_stats'])
                              for k, m in (('ours', ours), ('flax', flax)))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    old = state['ours']['batch_stats']
    if train:   # PyTorch: var ← 0.9 var + 0.1 · Σ(x − x̄)²/(n − 1), n = 8·4·4 values a channel
      x64 = np.asarray(x, np.float64)
      want_var = 0.9 * np.asarray(old['var']) + 0.1 * x64.var((0, 1, 2), ddof=1)
    else:
      want_var = np.asarray(old['var'])
    np.testing.assert_allclose(s['batch_stats']['mean'], s_ref['batch_stats']['mean'], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s['batch_stats']['var'], want_var, rtol=1e-6, atol=1e-6)
    state = {'ours': dict(state['ours'], **s), 'flax': dict(state['flax'], **s)}


@pytest.mark.parametrize('train', [True, False])
def test_grouped_batch_norm_is_one_batch_norm_per_group(train):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 8, 4, 4, 5)) * np.arange(1, 4)[:, None, None, None, None],
                  jnp.float32)
  stats = {'mean': jnp.asarray(rng.standard_normal((3, 5)), jnp.float32),
           'var': jnp.asarray(1 + rng.random((3, 5)), jnp.float32)}
  params = {'scale': jnp.asarray(rng.standard_normal((3, 5)), jnp.float32),
            'bias': jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)}
  y, new = ops.BatchNorm(train, True, groups=True).apply(
      {'params': params, 'batch_stats': stats}, x, mutable=['batch_stats'])
  for g in range(3):
    pick = lambda t: jax.tree_util.tree_map(lambda a: a[g], t)
    y_g, new_g = ops.batch_norm(train, True).apply(
        {'params': pick(params), 'batch_stats': pick(stats)}, x[g], mutable=['batch_stats'])
    np.testing.assert_allclose(y[g], y_g, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(pick(new), new_g, rtol=1e-6, atol=1e-6)


# 7 x 8 maps go through the matrix product, 9 x 10 through the shifted slices
@pytest.mark.parametrize('size', [7, 9])
@pytest.mark.parametrize('k,stride,dilation', [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 2),
                                               (3, 1, 2), (5, 2, 1)])
def test_depthwise_conv_matches_grouped_conv(k, stride, dilation, size):
  assert (size * (size + 1) <= kernels.DENSE_DEPTHWISE_PIXELS) == (size == 7)
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, size, size + 1, 3))
  w = jax.random.normal(kw, (k, k, 3))
  got = kernels.depthwise_conv(x, w, stride, dilation)
  want = grouped_conv(x, w, stride, dilation)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, want.shape)
  grads = jax.grad(lambda x, w: jnp.sum(kernels.depthwise_conv(x, w, stride, dilation) * g), (0, 1))(x, w)
  ref = jax.grad(lambda x, w: jnp.sum(grouped_conv(x, w, stride, dilation) * g), (0, 1))(x, w)
  for a, b in zip(grads, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # forward over reverse (darts2 and GraSP on the DARTS space) through either path
  def grad_of(conv):
    return jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride, dilation)) * g), 1)
  tx, tw = jax.random.normal(kg, x.shape), jax.random.normal(kw, w.shape)
  hvp = [jax.jvp(grad_of(c), (x, w), (tx, tw))[1] for c in (kernels.depthwise_conv, grouped_conv)]
  np.testing.assert_allclose(*hvp, rtol=1e-3, atol=1e-3)


def dense_conv(x, kernel, stride, padding, dilation):
  return lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                  rhs_dilation=(dilation, dilation),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('k,stride,padding,dilation,size', [
    (3, 1, 1, 1, 8), (3, 2, 1, 1, 7), (5, 2, 2, 2, 9), (2, 2, 0, 1, 8), (5, 1, 0, 1, 6)])
def test_conv2d_and_its_vjp_match_xla_convolution(k, stride, padding, dilation, size):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, size, size + 1, 3))
  w = jax.random.normal(kw, (k, k, 3, 4))
  want = dense_conv(x, w, stride, padding, dilation)
  np.testing.assert_allclose(kernels.conv2d(x, w, stride, padding, dilation), want, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, want.shape)

  def loss(conv):  # a nonlinear loss, so that the second derivative is not trivial
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride, padding, dilation)) * g)
  got = jax.grad(loss(kernels.conv2d), (0, 1))(x, w)
  ref = jax.grad(loss(dense_conv), (0, 1))(x, w)
  for a, b in zip(got, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # reverse over reverse (darts2, GraSP) differentiates the hand-written VJP itself
  hvp = [jax.grad(lambda x, w: jnp.vdot(jax.grad(loss(c), 1)(x, w), w), (0, 1))(x, w)
         for c in (kernels.conv2d, dense_conv)]
  for a, b in zip(*hvp):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_conv2d_second_derivative_under_scan_and_remat():
  # darts2's mixed product on NAS-Bench-201: the α-pullback of a weight gradient taken
  # through rematerialised scan bodies of convolutions
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  w = 0.5 * jax.random.normal(jax.random.key(1), (3, 3, 3, 3))

  def mixed_product(conv):
    def inner(w, a):
      def body(h, _):
        return jax.checkpoint(lambda h: jnp.sin(conv(h, w, 1, 1, 1)))(h), None
      return jnp.sum(lax.scan(body, a * x, None, length=2)[0])
    g, pullback = jax.vjp(lambda a: jax.grad(inner)(w, a), 0.5)
    return pullback(g)[0]
  np.testing.assert_allclose(mixed_product(kernels.conv2d), mixed_product(dense_conv), rtol=1e-4)


@pytest.mark.parametrize('stride', [1, 2])
def test_max_pool_matches_reduce_window(stride):
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  want = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                           [(0, 0), (1, 1), (1, 1), (0, 0)])
  np.testing.assert_array_equal(kernels.max_pool_3x3(x, stride), want)


@pytest.mark.parametrize('stride', [1, 2])
def test_avg_pool_excludes_padding(stride):
  x = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype(np.float32)
  got = np.asarray(kernels.avg_pool_3x3(jnp.asarray(x), stride))
  want = np.zeros_like(got)
  for i in range(got.shape[1]):
    for j in range(got.shape[2]):
      ys = range(max(0, i * stride - 1), min(6, i * stride + 2))
      xs = range(max(0, j * stride - 1), min(6, j * stride + 2))
      want[0, i, j] = np.mean([x[0, a, b] for a in ys for b in xs], axis=0)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_adaptive_avg_pool_matches_numpy():
  x = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
  got = np.asarray(kernels.adaptive_avg_pool(jnp.asarray(x), 2))
  # bins of a 3-wide axis into 2: [0, 2) and [1, 3)
  want = np.stack([np.stack([x[:, a:a + 2, b:b + 2].mean((1, 2)) for b in (0, 1)], 1)
                   for a in (0, 1)], 1)
  np.testing.assert_allclose(got, want)


def test_factorized_reduce_halves_and_checks():
  op = ops.FactorizedReduce(6)
  x = jnp.ones((2, 8, 8, 4))
  v = op.init(jax.random.key(0), x, False)
  assert op.apply(v, x, False).shape == (2, 4, 4, 6)
  with pytest.raises(ValueError, match='even number of output channels'):
    ops.FactorizedReduce(5).init(jax.random.key(0), x, False)


def test_unknown_op_lists_known():
  with pytest.raises(ValueError, match=r"unknown operation 'conv_9x9'.*sep_conv_3x3"):
    ops.get_op('conv_9x9', 4, 4, 1, True)


@pytest.mark.parametrize('name', sorted(ops.OPS))
def test_every_op_keeps_or_halves_shape(name):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  for stride in (1, 2):
    op = ops.get_op(name, 4, 4, stride, affine=True)
    v = op.init(jax.random.key(0), x, False)
    y, _ = op.apply(v, x, True, mutable=['batch_stats'])
    assert y.shape == (2, 8 // stride, 8 // stride, 4)
    assert np.isfinite(np.asarray(y)).all()


# --- the two kernel paths (kernels.kernel_path): the same numbers -----------------

def _on_each_path(monkeypatch, fn):
  """``{path: fn()}``, each path forced (:func:`kernels.use`) and traced afresh (JAX keeps
  the traces of the functions ``fn`` jits, keyed by function, not by the path)."""
  out = {}
  for path in kernels.KERNEL_PATHS:
    with kernels.use(path):
      jax.clear_caches()
      out[path] = fn()
  return out


def _assert_same(results, rtol, atol):
  a, b = (jax.tree_util.tree_leaves(results[p]) for p in kernels.KERNEL_PATHS)
  assert len(a) == len(b) > 0
  for u, v in zip(a, b):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


@pytest.mark.parametrize('name', sorted(ops.OPS))
def test_every_op_and_its_gradients_are_the_same_on_both_kernel_paths(monkeypatch, name):
  # float64: forward output, parameter and input gradients to 1e-10, at 8x8 (the
  # depthwise convolutions as banded matrices on the CPU path) and 16x16 (as slices)
  with jax.enable_x64():
    for size, stride in ((8, 1), (16, 1), (16, 2)):
      x = jax.random.normal(jax.random.key(1), (2, size, size, 4), jnp.float64)
      op = ops.get_op(name, 4, 4, stride, affine=True)
      v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), op.init(jax.random.key(0), x, False))
      r = jax.random.normal(jax.random.key(2), (2, size // stride, size // stride, 4), jnp.float64)

      def loss(params, x):
        y, _ = op.apply(dict(v, params=params), x, True, mutable=['batch_stats'])
        return jnp.sum(y * r)
      # jitted: op by op, each path (its caches cleared) would compile every primitive again
      _assert_same(_on_each_path(monkeypatch, lambda: jax.jit(jax.value_and_grad(loss, (0, 1)))(
          v.get('params', {}), x)), 1e-10, 1e-10)


def test_pooling_is_the_same_on_both_kernel_paths(monkeypatch):
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3), jnp.float64)
    for fn in (lambda x: kernels.max_pool_3x3(x, 2), lambda x: kernels.avg_pool(x, 5, 3, 0),
               lambda x: kernels.avg_pool_3x3(x, 2)):
      _assert_same(_on_each_path(monkeypatch, lambda: jax.vjp(fn, x)[1](fn(x))), 1e-12, 1e-12)


@pytest.mark.parametrize('space', ['darts', 'nb201'])
def test_a_supernet_and_its_second_derivatives_are_the_same_on_both_kernel_paths(monkeypatch, space):
  from jaxnas import hypergrad
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import forward_over_reverse, init_variables
  sp = get_space(space)
  model = sp.supernet(4, 2 if space == 'darts' else 1, 10)
  alpha = sp.init_alpha(jax.random.key(1), 0.1)
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))
  y = jnp.arange(4) % 10
  v = init_variables(model, jax.random.key(0), x[:1], alpha)

  def loss(params, alpha):
    logits, _ = model.apply(dict(v, params=params), x, alpha, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  u = jax.tree_util.tree_map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape),
                             v['params'])

  def run():
    fwd = forward_over_reverse(sp)
    # darts2's mixed product: forward over reverse wherever the kernels admit it
    product = (functools.partial(hypergrad.base.mixed_product_fwd, context=kernels.forward_over_reverse)
               if fwd else hypergrad.base.exact_mixed_product)

    @jax.jit  # one program: op-by-op dispatch compiles hundreds of small ones
    def passes(params, alpha):
      return jax.value_and_grad(loss, (0, 1))(params, alpha), product(loss, params, alpha, u)
    (value, grads), mixed = passes(v['params'], alpha)
    return value, grads, mixed, fwd
  out = _on_each_path(monkeypatch, run)
  # forward over reverse on both paths and spaces: XLA's kernels have no custom VJP, and
  # the CPU kernels' rules call none under kernels.forward_over_reverse
  assert out['xla'][3] and out['cpu'][3]
  _assert_same({p: o[:3] for p, o in out.items()}, 1e-4, 1e-6)
  if space == 'darts':   # (XLA's kernels take the same forward-over-reverse way on both spaces)
    return
  monkeypatch.setenv('JAXNAS_KERNELS', 'xla')  # and it is the exact product
  jax.clear_caches()
  exact = jax.jit(lambda p, a: hypergrad.base.exact_mixed_product(loss, p, a, u))(v['params'], alpha)
  np.testing.assert_allclose(jax.tree_util.tree_leaves(out['xla'][2])[0],
                             jax.tree_util.tree_leaves(exact)[0], rtol=1e-4, atol=1e-7)


def test_a_model_traced_on_each_kernel_path_in_one_process_runs_that_path():
  # the edge scans are cached per kernel path: the same supernet traced on 'cpu', then
  # on 'xla', then on 'cpu' again, caches kept, holds the hand-written VJPs exactly when
  # traced on 'cpu'
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  sp = get_space('nb201')
  model = sp.supernet(4, 1, 10)
  alpha = sp.init_alpha(jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
  v = init_variables(model, jax.random.key(0), x[:1], alpha)

  def program(path):
    with kernels.use(path):
      return str(jax.make_jaxpr(lambda p: model.apply(dict(v, params=p), x, alpha, train=True,
                                                      mutable=['batch_stats']))(v['params']))
  on_cpu, on_xla, on_cpu_again = program('cpu'), program('xla'), program('cpu')
  assert 'custom_vjp' in on_cpu and 'custom_vjp' not in on_xla
  assert on_cpu_again == on_cpu


def test_kernel_path_by_backend_and_override(monkeypatch):
  monkeypatch.delenv('JAXNAS_KERNELS', raising=False)
  assert kernels.kernel_path() == 'cpu'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert kernels.kernel_path() == 'xla'
  monkeypatch.setenv('JAXNAS_KERNELS', 'cpu')
  assert kernels.kernel_path() == 'cpu'
  with kernels.use('xla'):   # the block's path first
    assert kernels.kernel_path() == 'xla'
  assert kernels.kernel_path() == 'cpu'
  monkeypatch.setenv('JAXNAS_KERNELS', 'cudnn')
  with pytest.raises(ValueError, match="JAXNAS_KERNELS='cudnn': must be one of cpu, xla"):
    kernels.kernel_path()
  with pytest.raises(ValueError, match="kernel path 'cudnn': must be one of cpu, xla"):
    with kernels.use('cudnn'):
      pass


def test_no_cpu_flags_or_compile_options_on_an_accelerator(monkeypatch):
  from jaxnas import xla
  flags = os.environ['XLA_FLAGS']   # conftest's, which set the optimisation level: kept
  assert '--xla_backend_optimization_level=0' in flags and xla.run_once_options('nb201') == {}
  monkeypatch.setenv('XLA_FLAGS', flags.replace('--xla_backend_optimization_level=0', ''))
  assert xla.run_once_options('nb201') == {'xla_backend_optimization_level': 1}
  assert xla.run_once_options('a new space') == {'xla_backend_optimization_level': 0}
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert xla.run_once_options('nb201') == {}
  for platforms, flags in (('cuda', ''), ('tpu', ''), ('cpu', ' '.join(xla.CPU_FLAGS))):
    monkeypatch.setenv('JAX_PLATFORMS', platforms)
    monkeypatch.setenv('XLA_FLAGS', '')
    xla.configure()
    assert os.environ['XLA_FLAGS'] == flags, platforms
  monkeypatch.delenv('JAX_PLATFORMS')
  monkeypatch.setattr(xla.importlib.util if hasattr(xla, 'importlib') else __import__('importlib').util,
                      'find_spec', lambda name: object() if name == 'jax_cuda12_plugin' else None)
  assert xla.expected_backend() == 'gpu'


def test_the_device_check_runs_and_writes_its_rows(tmp_path):
  # benchmarks/device_check.sh, one of its parts at smoke size (the whole check is for a
  # device: README, Benchmarks)
  root = os.path.join(os.path.dirname(__file__), '..')
  out = tmp_path / 'device_check.json'
  run = subprocess.run(['bash', os.path.join(root, 'benchmarks', 'device_check.sh'), '--smoke',
                        '--parts', 'zc', '--out', str(out)], capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.startswith("backend cpu, ") and "jaxnas kernels 'cpu' by default" in run.stdout
  rows = json.load(open(out))['rows']
  assert [r['part'] for r in rows] == ['device', 'zc']
  assert rows[1]['archs'] == 20 and rows[1]['archs_per_second_compiled'] > 0
  bad = subprocess.run(['bash', os.path.join(root, 'benchmarks', 'device_check.sh'), '--parts',
                        'gpu'], capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and 'unknown part(s) gpu: choose from search, free, zc, bf16, equal' in bad.stderr
