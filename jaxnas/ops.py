"""Candidate operations of the DARTS and NAS-Bench-201 cell spaces (Flax Linen, NHWC).

The kernels are written for XLA on CPU as well as for accelerators (the
measurements behind each choice: docs/performance.md):

* depthwise convolution is a sum of strided, shifted slices times per-channel
  weights with a hand-written VJP: XLA CPU's grouped convolution is ~50x slower.
  On small maps (<= 64 pixels) it is one matrix product per channel instead,
  with a banded (Toeplitz) matrix: as fast there, and a few ops where the
  slices are hundreds, so that a supernet compiles faster;
* max and average pooling are separable maxima / sums over shifted slices, and
  the `count_include_pad=False` divisor of average pooling is a NumPy constant;
* 1x1 convolutions are matrix products;
* dense k x k convolutions have a hand-written VJP made of a forward
  convolution (input gradient) and k*k matrix products (kernel gradient):
  inside a ``lax.scan`` body XLA CPU leaves the transposed convolutions JAX
  derives in non-canonical layouts and runs them ~25-100x slower than at top
  level (a 5-layer scan of 3x3 convs at batch 32, 32x32x16: 1349 ms -> 58 ms
  forward+backward).

Every operation is built from one registry, :data:`OPS`, by name, with the
signature ``factory(c_in, c_out, stride, affine) -> nn.Module``; a module is
called as ``op(x, train)``.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

def _out_size(size: int, k: int, stride: int, dilation: int, pad: int) -> int:
  return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _taps(xp: Array, k: int, stride: int, dilation: int, out_hw: tuple[int, int]):
  """The k*k strided windows of a padded NHWC tensor, row-major over taps."""
  ho, wo = out_hw
  b, _, _, c = xp.shape
  for i in range(k):
    for j in range(k):
      y0, x0 = i * dilation, j * dilation
      yield lax.slice(xp, (0, y0, x0, 0),
                      (b, y0 + (ho - 1) * stride + 1, x0 + (wo - 1) * stride + 1, c),
                      (1, stride, stride, 1))


def _dw_forward(x, kernel, stride, dilation):
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  ho = _out_size(x.shape[1], k, stride, dilation, pad)
  wo = _out_size(x.shape[2], k, stride, dilation, pad)
  # The barrier materialises the padded input once: otherwise XLA fuses its
  # producer (BN, ReLU) into each of the k*k windows, and compiles for long.
  xp = lax.optimization_barrier(jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))))
  w = kernel.reshape(k * k, -1)
  out = None
  for t, win in enumerate(_taps(xp, k, stride, dilation, (ho, wo))):
    out = win * w[t] if out is None else out + win * w[t]
  return out


# Maps of at most this many pixels take the depthwise convolution as a matrix
# product (_dw_matmul). Measured, 14 edges x 6 DARTS depthwise convs under scan
# and remat, forward+backward, batch 64, C=16: at 8x8 53 ms either way with 9x
# fewer HLO ops (compile 1.8 s -> 0.7 s), at 4x4 19 -> 9 ms; at 16x16 the
# matrix is 3x slower (193 -> 554 ms), the slices win.
DENSE_DEPTHWISE_PIXELS = 64


def depthwise_conv(x: Array, kernel: Array, stride: int = 1, dilation: int = 1) -> Array:
  """Depthwise 'same' convolution, ``y[b,h,w,c] = Σ_ij x_pad[b, s·h + d·i, s·w + d·j, c] K[i,j,c]``.

  ``kernel`` has shape (k, k, C); padding is d(k-1)/2 on each side, as in
  PyTorch's ``Conv2d(C, C, k, s, d(k-1)/2, d, groups=C)``. Maps of at most
  :data:`DENSE_DEPTHWISE_PIXELS` pixels go through :func:`_dw_matmul`, larger
  ones through the shifted slices of :func:`_dw_slices`; both admit forward
  mode over their gradients.
  """
  return depthwise_conv_stack(x, [kernel], stride, [dilation])[0]


def depthwise_conv_stack(x: Array, kernels, stride: int, dilations) -> Array:
  """``y[g] = depthwise_conv(x_g, kernels[g], stride, dilations[g])``, shape (G, B, Ho, Wo, C).

  ``x`` is one map (B, H, W, C) that every kernel reads, or (G, B, H, W, C), one
  per kernel; kernels may differ in size and dilation ('same' padding: one
  output size). On small maps all G are two matrix products (:func:`_dw_matmul`).
  """
  if x.shape[-3] * x.shape[-2] <= DENSE_DEPTHWISE_PIXELS:
    return _dw_matmul(x, kernels, stride, dilations)
  return jnp.stack([_dw_slices(x if x.ndim == 4 else x[g], kern, stride, d)
                    for g, (kern, d) in enumerate(zip(kernels, dilations))])


@functools.lru_cache(maxsize=None)
def _tap_matrix(n: int, n_out: int, k: int, stride: int, dilation: int, pad: int) -> np.ndarray:
  """``S[i, u, h] = 1`` where input row u feeds output row h through tap i (padding: no row)."""
  s = np.zeros((k, n, n_out), np.float32)
  for i in range(k):
    for h in range(n_out):
      u = h * stride + dilation * i - pad
      if 0 <= u < n:
        s[i, u, h] = 1.0
  return s


@functools.lru_cache(maxsize=None)
def _band_taps(h: int, w: int, shapes: tuple[tuple[int, int], ...], stride: int):
  """``(M, ho, wo)``, ``M[g, (u,v,h,w), (i,j)] = S_H[i,u,h] S_W[j,v,w]`` for kernel g of
  (size, dilation) ``shapes[g]``, taps zero-padded to the largest kernel's."""
  taps = max(k for k, _ in shapes) ** 2
  out = []
  for k, d in shapes:
    pad = d * (k - 1) // 2
    ho, wo = _out_size(h, k, stride, d, pad), _out_size(w, k, stride, d, pad)
    m = np.einsum('iuh,jvw->uvhwij', _tap_matrix(h, ho, k, stride, d, pad),
                  _tap_matrix(w, wo, k, stride, d, pad)).reshape(-1, k * k)
    out.append(np.pad(m, ((0, 0), (0, taps - k * k))))
  return np.stack(out), ho, wo


def _dw_matmul(x, kernels, stride, dilations):
  """``y_g[b, :, c] = x_g[b, :, c] T_gc`` over flattened maps, with the banded (Toeplitz)
  matrices ``T_g[(u,v),(h,w),c] = Σ_ij S_H[i,u,h] S_W[j,v,w] K_g[i,j,c]`` built at once
  as ``T_g = M_g K_g`` (M a NumPy constant, :func:`_band_taps`): two matrix products
  for every kernel, differentiated by JAX."""
  h, w, c = x.shape[-3:]
  b, n = x.shape[-4], len(kernels)
  m, ho, wo = _band_taps(h, w, tuple((kern.shape[0], d) for kern, d in zip(kernels, dilations)),
                         stride)
  k_flat = jnp.stack([jnp.pad(kern.reshape(-1, c), ((0, m.shape[-1] - kern.shape[0] ** 2), (0, 0)))
                      for kern in kernels])  # (G, taps, C)
  t = lax.dot_general(m.astype(k_flat.dtype), k_flat, (((2,), (1,)), ((0,), (0,))))
  t = t.reshape(n, h * w, ho * wo, c)
  if x.ndim == 4:  # one map for every kernel
    y = lax.dot_general(x.reshape(b, h * w, c), t, (((1,), (1,)), ((2,), (3,))))  # (C, B, G, q)
    y = jnp.transpose(y, (2, 1, 3, 0))
  else:
    y = lax.dot_general(x.reshape(n, b, h * w, c), t,
                        (((2,), (1,)), ((0, 3), (0, 3))))  # (G, C, B, q)
    y = jnp.transpose(y, (0, 2, 3, 1))
  return y.reshape(n, b, ho, wo, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dw_slices(x: Array, kernel: Array, stride: int = 1, dilation: int = 1) -> Array:
  """The depthwise convolution as k*k shifted slices, with a hand-written VJP."""
  return _dw_forward(x, kernel, stride, dilation)


def _dw_fwd(x, kernel, stride, dilation):
  return _dw_forward(x, kernel, stride, dilation), (x, kernel)


def _dw_bwd(stride, dilation, res, g):
  x, kernel = res
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  # The transpose of a 'same' correlation is the stride-1 correlation of g with
  # the flipped kernel, g zero-upsampled by the stride first (and zero-filled
  # to x's size at the end): one pad, then the forward pass's k*k slices. (The
  # transpose JAX derives for the strided slices pads g once per tap.)
  if stride > 1:
    hi = [x.shape[a] - stride * (g.shape[a] - 1) - 1 for a in (1, 2)]
    g_up = lax.pad(g, jnp.zeros((), g.dtype),
                   ((0, 0, 0), (0, hi[0], stride - 1), (0, hi[1], stride - 1), (0, 0, 0)))
  else:
    g_up = g
  dx = _dw_forward(g_up, kernel[::-1, ::-1], 1, dilation)
  xp = lax.optimization_barrier(jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))))
  # One variadic reduction for all k*k taps: XLA emits a single loop over the
  # data instead of k*k passes (4.5x faster for a 5x5 kernel on CPU).
  prods = tuple(win * g for win in _taps(xp, k, stride, dilation, g.shape[1:3]))
  zeros = tuple(jnp.zeros((), g.dtype) for _ in prods)
  dk = jnp.stack(lax.reduce(prods, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)),
                            (0, 1, 2)))
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_dw_slices.defvjp(_dw_fwd, _dw_bwd)


_CONV_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _conv_forward(x, kernel, stride, padding, dilation):
  return lax.conv_general_dilated(x, kernel, (stride,) * 2, [(padding, padding)] * 2,
                                  rhs_dilation=(dilation,) * 2, dimension_numbers=_CONV_DIMS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: Array, kernel: Array, stride: int = 1, padding: int = 0, dilation: int = 1) -> Array:
  """Dense convolution ``y[b,h,w,o] = Σ_ijc x_pad[b, s·h + d·i, s·w + d·j, c] K[i,j,c,o]``.

  ``kernel`` is (k, k, C_in, C_out), zero padding ``padding`` on each side, as
  PyTorch's ``Conv2d(C_in, C_out, k, s, padding, d)``. The VJP is written in
  canonical layouts only (see the module docstring): the input gradient is
  this function again, of the stride-upsampled cotangent with the flipped,
  in/out-swapped kernel; the kernel gradient is one matrix product per tap.
  """
  return _conv_forward(x, kernel, stride, padding, dilation)


def _conv_fwd(x, kernel, stride, padding, dilation):
  # Through conv2d itself: a second derivative by reverse over reverse (GraSP,
  # unroll) then takes the primal's derivative by this VJP too, not by the slow
  # transposes; forward over reverse cannot pass it (a custom VJP has no JVP).
  # (The same for depthwise_conv fails inside JAX under remat + scan: residuals
  # mixed up. Its fwd is plain JAX, so forward over reverse passes it.)
  return conv2d(x, kernel, stride, padding, dilation), (x, kernel)


def _conv_bwd(stride, padding, dilation, res, g):
  x, kernel = res
  k, s, p, d = kernel.shape[0], stride, padding, dilation
  c_in = x.shape[3]
  ho, wo = g.shape[1:3]
  # dx_pad[m] = Σ_i g_up[m − d·i] K[i]: a correlation of the zero-upsampled g,
  # padded by d(k−1) and cropped by p, with the flipped kernel.
  lo = d * (k - 1) - p
  hi = [x.shape[a] - s * (g.shape[a] - 1) - 1 + p for a in (1, 2)]
  g_up = lax.pad(g, jnp.zeros((), g.dtype),
                 ((0, 0, 0), (lo, hi[0], s - 1), (lo, hi[1], s - 1), (0, 0, 0)))
  dx = conv2d(g_up, jnp.swapaxes(kernel[::-1, ::-1], 2, 3), 1, 0, d)
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  g2 = g.reshape(-1, g.shape[3])
  dk = jnp.stack([jnp.dot(win.reshape(-1, c_in).T, g2)
                  for win in _taps(xp, k, s, d, (ho, wo))])
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv2d.defvjp(_conv_fwd, _conv_bwd)


def max_pool_3x3(x: Array, stride: int = 1) -> Array:
  """3x3 max pooling, padding 1 (padding never wins), as separable shifted maxima."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  b, hp, wp, c = xp.shape
  ho, wo = _out_size(hp - 2, 3, stride, 1, 1), _out_size(wp - 2, 3, stride, 1, 1)
  rows = [lax.slice(xp, (0, i, 0, 0), (b, i + (ho - 1) * stride + 1, wp, c), (1, stride, 1, 1))
          for i in range(3)]
  r = jnp.maximum(jnp.maximum(rows[0], rows[1]), rows[2])
  cols = [lax.slice(r, (0, 0, j, 0), (b, ho, j + (wo - 1) * stride + 1, c), (1, 1, stride, 1))
          for j in range(3)]
  return jnp.maximum(jnp.maximum(cols[0], cols[1]), cols[2])


@functools.lru_cache(maxsize=None)
def _avg_pool_count(h: int, w: int, stride: int, k: int, pad: int) -> np.ndarray:
  ones = np.pad(np.ones((h, w), np.float32), pad)
  ho, wo = _out_size(h, k, stride, 1, pad), _out_size(w, k, stride, 1, pad)
  cnt = np.zeros((ho, wo), np.float32)
  for i in range(k):
    for j in range(k):
      cnt += ones[i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride]
  return cnt[None, :, :, None]


def avg_pool(x: Array, k: int = 3, stride: int = 1, pad: int = 1) -> Array:
  """k x k average pooling with ``count_include_pad=False``, as separable shifted sums."""
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  b, hp, wp, c = xp.shape
  h, w = hp - 2 * pad, wp - 2 * pad
  ho, wo = _out_size(h, k, stride, 1, pad), _out_size(w, k, stride, 1, pad)
  r = sum(lax.slice(xp, (0, i, 0, 0), (b, i + (ho - 1) * stride + 1, wp, c), (1, stride, 1, 1))
          for i in range(k))
  s = sum(lax.slice(r, (0, 0, j, 0), (b, ho, j + (wo - 1) * stride + 1, c), (1, 1, stride, 1))
          for j in range(k))
  return s / _avg_pool_count(h, w, stride, k, pad)


def adaptive_avg_pool(x: Array, size: int) -> Array:
  """PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i·H/size), ceil((i+1)·H/size))."""
  def bins(n):
    return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]
  rows = [jnp.mean(x[:, a:b], axis=1, keepdims=True) for a, b in bins(x.shape[1])]
  x = jnp.concatenate(rows, axis=1)
  cols = [jnp.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in bins(x.shape[2])]
  return jnp.concatenate(cols, axis=2)


def avg_pool_3x3(x: Array, stride: int = 1) -> Array:
  return avg_pool(x, 3, stride, 1)


# ----------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------

# Parameter name -> fan-in from its shape (leading axes may stack edges or
# cells). Every parameter jaxnas creates is one of these, a bias beside one of
# them, or a BatchNorm scale/bias; `init_params_numpy` relies on it.
FAN_IN = {
    'kernel': lambda s: int(np.prod(s[-4:-1])),   # dense k x k conv (k, k, c_in, c_out)
    'pointwise': lambda s: int(s[-2]),            # 1x1 conv (c_in, c_out)
    'depthwise': lambda s: int(s[-3] * s[-2]),    # depthwise conv (k, k, c)
    'weight': lambda s: int(s[-2]),               # linear (c_in, c_out)
}


def torch_uniform(fan_in: int) -> Callable:
  """PyTorch's default conv/linear initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


RELU_CODES = 'relu_codes'   # collection of ReLU sign patterns (NASWOT), recorded when mutable
FEATURES = 'intermediates'  # collection of the pre-pooling feature map (Zen-score), as 'features'


def relu(module: nn.Module, x: Array, batch_axis: int = 0) -> Array:
  """``max(x, 0)``; where ``module`` may write the :data:`RELU_CODES` collection,
  also records ``x > 0`` per sample, flattened, shape (B, -1) (NASWOT's binary codes;
  ``batch_axis`` 1 for a stack (G, B, ...) of G maps)."""
  if module.is_mutable_collection(RELU_CODES):
    codes = jnp.moveaxis(x > 0, batch_axis, 0)
    module.sow(RELU_CODES, 'codes', codes.reshape(codes.shape[0], -1))
  return nn.relu(x)


def standardize(x: Array, epsilon: float, groups: bool = False):
  """``(x̂, μ, σ²)``: ``x̂ = (x − μ)/√(σ² + ε)`` with μ and σ² = mean((x − μ)²) over
  every axis but the last (BatchNorm's batch statistics, the variance in two passes);
  with ``groups``, over every axis but the first and the last (μ, σ² of shape (G, C)).

  Differentiated by JAX. Against Flax's ``nn.BatchNorm`` (which subtracts μ twice
  and works through more casts and broadcasts), 14 edges x 6 BatchNorms under
  scan and remat, batch 32, C=16: compile 15-20% and forward+backward 10-25%
  shorter, at 32x32 and at 8x8, first and second order. (A hand-written JVP,
  ``r (dx − mean(dx) − x̂ mean(x̂ dx))``, made fewer kernels but ran 10-40% slower.)
  """
  axes = tuple(range(1 if groups else 0, x.ndim - 1))
  mean = jnp.mean(x, axes, keepdims=True)
  xc = x - mean
  var = jnp.mean(xc * xc, axes, keepdims=True)
  stat_shape = x.shape[:int(groups)] + (-1,)
  return xc * lax.rsqrt(var + epsilon), mean.reshape(stat_shape), var.reshape(stat_shape)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis, PyTorch's conventions: momentum 0.1 (a running
  statistic moves as ``0.9 old + 0.1 batch``), eps 1e-5, the batch variance in
  two passes (:func:`standardize`), the biased batch variance in the running
  one, as Flax's ``nn.BatchNorm`` (same variables: ``params`` scale and bias
  where ``affine``, ``batch_stats`` mean and var).

  Two passes, as PyTorch: Flax's default E[x²] − E[x]² cancels where a channel's
  mean dwarfs its spread (NAS-Bench-201's biases before BN, α at 1e-3), and its
  noise made SNIP and GraSP move by 2% and 11% of their largest entry when the
  batch rows were permuted.
  """
  train: bool
  affine: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  groups: bool = False  # x is (G, B, ..., C): G BatchNorms at once, every variable (G, C)

  @nn.compact
  def __call__(self, x):
    shape = x.shape[:int(self.groups)] + x.shape[-1:]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(shape, jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones(shape, jnp.float32))

    def bcast(v):  # (G, C) against (G, B, ..., C)
      return v.reshape(shape[:-1] + (1,) * (x.ndim - len(shape)) + shape[-1:])
    if self.train:
      y, mean, var = standardize(x, self.epsilon, self.groups)
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = (m * ra_mean.value + (1 - m) * mean).astype(ra_mean.value.dtype)
        ra_var.value = (m * ra_var.value + (1 - m) * var).astype(ra_var.value.dtype)
    else:
      y = (x - bcast(ra_mean.value)) * lax.rsqrt(bcast(ra_var.value) + self.epsilon)
    if self.affine:
      y = y * bcast(self.param('scale', nn.initializers.ones, shape, jnp.float32))
      y = y + bcast(self.param('bias', nn.initializers.zeros, shape, jnp.float32))
    return y


def batch_norm(train: bool, affine: bool, name: str | None = None) -> BatchNorm:
  """:class:`BatchNorm` with batch statistics when ``train``, running ones otherwise."""
  return BatchNorm(train, affine, name=name)


class Conv(nn.Module):
  """Dense k x k convolution (:func:`conv2d`), zero padding ``padding``; 1x1 ones are matmuls.

  ``hand_vjp=False``: XLA's own convolution and JAX's derivatives, for a conv
  outside any scan (where JAX's transposes are fast) that forward over
  reverse must pass with a tangent: :func:`conv2d`'s custom VJP cannot.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  use_bias: bool = False
  hand_vjp: bool = True

  @nn.compact
  def __call__(self, x):
    c_in, k = x.shape[-1], self.kernel_size
    if k == 1:
      w = self.param('pointwise', torch_uniform(c_in), (c_in, self.features), x.dtype)
      if self.stride > 1:
        x = x[:, ::self.stride, ::self.stride, :]
      y = jnp.dot(x, w)
    else:
      w = self.param('kernel', torch_uniform(c_in * k * k), (k, k, c_in, self.features), x.dtype)
      conv = conv2d if self.hand_vjp else _conv_forward
      y = conv(x, w, self.stride, self.padding, self.dilation)
    if self.use_bias:
      y = y + self.param('bias', torch_uniform(c_in * k * k), (self.features,), x.dtype)
    return y


class Weight(nn.Module):
  """One conv or linear weight (``kind`` a :data:`FAN_IN` name), PyTorch's initialiser;
  returned, not applied: for ops that apply several weights at once (a supernet's
  mixed op)."""
  kind: str
  shape: tuple[int, ...]

  @nn.compact
  def __call__(self, dtype=jnp.float32):
    return self.param(self.kind, torch_uniform(FAN_IN[self.kind](self.shape)), self.shape, dtype)


class Linear(nn.Module):
  """``y = x W + b`` with PyTorch's nn.Linear initialisation."""
  features: int

  @nn.compact
  def __call__(self, x):
    init = torch_uniform(x.shape[-1])
    w = self.param('weight', init, (x.shape[-1], self.features), x.dtype)
    return jnp.dot(x, w) + self.param('bias', init, (self.features,), x.dtype)


class DepthwiseConv(nn.Module):
  kernel_size: int
  stride: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    w = self.param('depthwise', torch_uniform(k * k), (k, k, x.shape[-1]), x.dtype)
    return depthwise_conv(x, w, self.stride, self.dilation)


class ReLUConvBN(nn.Module):
  """ReLU -> k x k conv -> BN (DARTS' and NAS-Bench-201's ReLUConvBN)."""
  c_out: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  affine: bool = True
  use_bias: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv(self.c_out, self.kernel_size, self.stride, self.padding,
             use_bias=self.use_bias)(relu(self, x))
    return batch_norm(train, self.affine)(x)


class DilConv(nn.Module):
  """ReLU -> dilated depthwise conv -> 1x1 conv -> BN."""
  c_out: int
  kernel_size: int
  stride: int
  dilation: int
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = DepthwiseConv(self.kernel_size, self.stride, self.dilation)(relu(self, x))
    x = Conv(self.c_out)(x)
    return batch_norm(train, self.affine)(x)


class SepConv(nn.Module):
  """Two stacked DilConv blocks with dilation 1; only the first is strided."""
  c_out: int
  kernel_size: int
  stride: int
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = DilConv(x.shape[-1], self.kernel_size, self.stride, 1, self.affine)(x, train)
    return DilConv(self.c_out, self.kernel_size, 1, 1, self.affine)(x, train)


class FactorizedReduce(nn.Module):
  """ReLU -> two 1x1 stride-2 convs on offset grids, concatenated -> BN."""
  c_out: int
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    if self.c_out % 2:
      raise ValueError(f'FactorizedReduce needs an even number of output channels, got {self.c_out}')
    if x.shape[1] % 2 or x.shape[2] % 2:
      raise ValueError(f'FactorizedReduce needs even height and width, got {x.shape[1:3]}')
    x = relu(self, x)
    a = Conv(self.c_out // 2, stride=2)(x)
    b = Conv(self.c_out // 2, stride=2)(x[:, 1:, 1:, :])
    return batch_norm(train, self.affine)(jnp.concatenate([a, b], axis=-1))


class Identity(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    return x


class Zero(nn.Module):
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    return jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])


class Pool(nn.Module):
  """3x3 max or average pooling."""
  kind: str
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    return max_pool_3x3(x, self.stride) if self.kind == 'max' else avg_pool_3x3(x, self.stride)


class ResNetBasicBlock(nn.Module):
  """NAS-Bench-201's residual reduction block between stages."""
  c_out: int
  stride: int = 2
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    c_in = x.shape[-1]
    y = ReLUConvBN(self.c_out, 3, self.stride, 1, self.affine)(x, train)
    y = ReLUConvBN(self.c_out, 3, 1, 1, self.affine)(y, train)
    if self.stride == 2:
      res = Conv(self.c_out)(avg_pool(x, 2, 2, 0))
    elif c_in != self.c_out:
      res = ReLUConvBN(self.c_out, 1, 1, 0, self.affine)(x, train)
    else:
      res = x
    return res + y


# ----------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------

def _skip(c_in, c_out, stride, affine, **kw):
  return Identity(**kw) if stride == 1 and c_in == c_out else FactorizedReduce(c_out, affine, **kw)


def _same_channels(factory):
  """DARTS ops keep the channel count."""
  def build(c_in, c_out, stride, affine, **kw):
    if c_in != c_out:
      raise ValueError(f'this operation keeps the channel count; got {c_in} -> {c_out}')
    return factory(c_out, stride, affine, **kw)
  return build


OPS: dict[str, Callable[..., nn.Module]] = {
    'none': lambda c_in, c_out, stride, affine, **kw: Zero(stride, **kw),
    'skip_connect': _skip,
    'max_pool_3x3': _same_channels(lambda c, s, a, **kw: Pool('max', s, **kw)),
    'avg_pool_3x3': _same_channels(lambda c, s, a, **kw: Pool('avg', s, **kw)),
    'sep_conv_3x3': _same_channels(lambda c, s, a, **kw: SepConv(c, 3, s, a, **kw)),
    'sep_conv_5x5': _same_channels(lambda c, s, a, **kw: SepConv(c, 5, s, a, **kw)),
    'sep_conv_7x7': _same_channels(lambda c, s, a, **kw: SepConv(c, 7, s, a, **kw)),
    'dil_conv_3x3': _same_channels(lambda c, s, a, **kw: DilConv(c, 3, s, 2, a, **kw)),
    'dil_conv_5x5': _same_channels(lambda c, s, a, **kw: DilConv(c, 5, s, 2, a, **kw)),
    # NAS-Bench-201 convolutions carry a bias exactly when BN has no affine part.
    'nor_conv_1x1': lambda c_in, c_out, s, a, **kw: ReLUConvBN(c_out, 1, s, 0, a, use_bias=not a, **kw),
    'nor_conv_3x3': lambda c_in, c_out, s, a, **kw: ReLUConvBN(c_out, 3, s, 1, a, use_bias=not a, **kw),
}


def get_op(op_name: str, c_in: int, c_out: int, stride: int, affine: bool, **module_kw) -> nn.Module:
  """Builds the operation ``name``; an unknown name is a ValueError listing the known ones.

  ``module_kw`` (``name=...``, ``parent=...``) go to the Flax module.
  """
  try:
    factory = OPS[op_name]
  except KeyError:
    raise ValueError(f'unknown operation {op_name!r}; known operations: {", ".join(OPS)}') from None
  return factory(c_in, c_out, stride, affine, **module_kw)
