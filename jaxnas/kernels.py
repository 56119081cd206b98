"""Kernels of the candidate operations, NHWC: written for XLA on CPU, or XLA's own.

Two implementations of each op (:func:`kernel_path` picks one when a function
is traced): ``'cpu'``, the kernels below with their derivatives written for
XLA CPU, and ``'xla'``, XLA's own (``lax.conv_general_dilated``, grouped for
the depthwise convolution, JAX's derivatives): what cuDNN and the GPU and TPU
compilers are built for. Pooling is the same shifted slices on both
(:func:`avg_pool`). Both compute the same numbers (tests/test_ops.py). Why each
CPU kernel exists (measured: docs/performance.md):

* depthwise convolution is a sum of strided, shifted slices times per-channel
  weights with a hand-written VJP: XLA CPU's grouped convolution is ~50x slower.
  On small maps (<= 64 pixels) it is one matrix product per channel instead,
  with a banded (Toeplitz) matrix: as fast there, and a few ops where the
  slices are hundreds, so that a supernet compiles faster;
* max and average pooling are separable maxima / sums over shifted slices, and
  the `count_include_pad=False` divisor of average pooling is a NumPy constant;
* dense k x k convolutions have a hand-written VJP made of a forward
  convolution (input gradient) and k*k matrix products (kernel gradient):
  inside a ``lax.scan`` body XLA CPU leaves the transposed convolutions JAX
  derives in non-canonical layouts and runs them ~25-100x slower than at top
  level.

These are functions of arrays; the Flax layers that hold their weights are in
:mod:`jaxnas.ops`. (One module over 300 lines: each kernel beside its derivative and
the reason it exists.)
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
KERNEL_PATHS = ('cpu', 'xla')


_PATH: contextvars.ContextVar[str | None] = contextvars.ContextVar('jaxnas_kernels', default=None)


@contextlib.contextmanager
def use(path: str):
  """Within the block, ops are traced on kernel path ``path`` ('cpu' or 'xla'),
  whatever ``$JAXNAS_KERNELS`` and the backend say. A function traced under one
  path keeps it when called later (as JAX keeps any trace): choose before tracing."""
  if path not in KERNEL_PATHS:
    raise ValueError(f'kernel path {path!r}: must be one of {", ".join(KERNEL_PATHS)}')
  token = _PATH.set(path)
  try:
    yield
  finally:
    _PATH.reset(token)


_FORWARD_OVER_REVERSE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    'jaxnas_forward_over_reverse', default=False)


@contextlib.contextmanager
def forward_over_reverse():
  """Within the block, derivatives are traced to be differentiated again in forward
  mode (``jax.jvp`` of a gradient): the rules of the hand-written VJPs call no custom
  VJP, which a tangent cannot pass. A second derivative by reverse over reverse is
  traced outside such a block. Part of :func:`trace_key`."""
  token = _FORWARD_OVER_REVERSE.set(True)
  try:
    yield
  finally:
    _FORWARD_OVER_REVERSE.reset(token)


def trace_key() -> tuple[str, bool]:
  """What a traced piece depends on besides its inputs: the kernel path and whether
  it is traced for forward over reverse."""
  return kernel_path(), _FORWARD_OVER_REVERSE.get()


def kernel_path() -> str:
  """The kernel path ops are traced on now: the innermost :func:`use` block's, else
  ``$JAXNAS_KERNELS`` if set ('cpu' or 'xla'), else 'cpu' on the CPU backend and
  'xla' on every other (GPU, TPU). Read when an op is traced; the caches of traced
  pieces (:func:`jaxnas.spaces.cells.edge_scan`, the program cache) hold it in
  their keys."""
  path = _PATH.get() or os.environ.get('JAXNAS_KERNELS', '')
  if path:
    if path not in KERNEL_PATHS:
      raise ValueError(f'JAXNAS_KERNELS={path!r}: must be one of {", ".join(KERNEL_PATHS)}')
    return path
  return 'cpu' if jax.default_backend() == 'cpu' else 'xla'


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
  if kernel_path() == 'xla':
    one = _dw_xla
  elif x.shape[-3] * x.shape[-2] <= DENSE_DEPTHWISE_PIXELS:
    return _dw_matmul(x, kernels, stride, dilations)
  else:
    one = _dw_slices
  return jnp.stack([one(x if x.ndim == 4 else x[g], kern, stride, d)
                    for g, (kern, d) in enumerate(zip(kernels, dilations))])


def _dw_xla(x, kernel, stride, dilation):
  """XLA's grouped convolution (one group per channel)."""
  k, c = kernel.shape[0], kernel.shape[-1]
  pad = dilation * (k - 1) // 2
  return lax.conv_general_dilated(x, kernel.reshape(k, k, 1, c), (stride,) * 2, [(pad, pad)] * 2,
                                  rhs_dilation=(dilation,) * 2, dimension_numbers=_CONV_DIMS,
                                  feature_group_count=c)


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


def conv_xla(x, kernel, stride, padding, dilation):
  return lax.conv_general_dilated(x, kernel, (stride,) * 2, [(padding, padding)] * 2,
                                  rhs_dilation=(dilation,) * 2, dimension_numbers=_CONV_DIMS)


def conv2d(x: Array, kernel: Array, stride: int = 1, padding: int = 0, dilation: int = 1) -> Array:
  """Dense convolution ``y[b,h,w,o] = Σ_ijc x_pad[b, s·h + d·i, s·w + d·j, c] K[i,j,c,o]``.

  ``kernel`` is (k, k, C_in, C_out), zero padding ``padding`` on each side, as
  PyTorch's ``Conv2d(C_in, C_out, k, s, padding, d)``. On the 'cpu' path its VJP
  is written in canonical layouts only (see the module docstring): the input
  gradient is this convolution again, of the stride-upsampled cotangent with the
  flipped, in/out-swapped kernel; the kernel gradient is one matrix product per
  tap. On the 'xla' path, XLA's convolution and JAX's derivatives.
  """
  if kernel_path() == 'xla':
    return conv_xla(x, kernel, stride, padding, dilation)
  return _conv_cpu(x, kernel, stride, padding, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_cpu(x: Array, kernel: Array, stride: int = 1, padding: int = 0, dilation: int = 1) -> Array:
  return conv_xla(x, kernel, stride, padding, dilation)


def _inner_conv():
  # The convolution inside this VJP's rules. Through _conv_cpu itself: a second
  # derivative by reverse over reverse (GraSP, unroll) then takes their derivative by
  # this VJP too, not by the slow transposes. Under forward over reverse
  # (:func:`forward_over_reverse`), XLA's: a tangent cannot pass a custom VJP, and the
  # forward-mode derivative of XLA's convolution is forward convolutions, no
  # transposes. (_conv_cpu itself in the fwd rule of depthwise_conv fails inside JAX
  # under remat + scan, residuals mixed up; its rules are plain JAX.)
  return conv_xla if _FORWARD_OVER_REVERSE.get() else _conv_cpu


def _conv_fwd(x, kernel, stride, padding, dilation):
  return _inner_conv()(x, kernel, stride, padding, dilation), (x, kernel)


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
  dx = _inner_conv()(g_up, jnp.swapaxes(kernel[::-1, ::-1], 2, 3), 1, 0, d)
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  g2 = g.reshape(-1, g.shape[3])
  dk = jnp.stack([jnp.dot(win.reshape(-1, c_in).T, g2)
                  for win in _taps(xp, k, s, d, (ho, wo))])
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_conv_cpu.defvjp(_conv_fwd, _conv_bwd)


def max_pool_3x3(x: Array, stride: int = 1) -> Array:
  """3x3 max pooling, padding 1 (padding never wins), as separable shifted maxima (on
  both paths: see :func:`avg_pool`)."""
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
  """k x k average pooling with ``count_include_pad=False``, as separable shifted sums.

  Plain JAX on both kernel paths: ``lax.reduce_window``'s derivative cannot be
  differentiated forward inside a ``lax.scan`` (jax 0.10: "Linearization failed
  to produce known values"), and the cell stages are scans that darts2 and
  GraSP differentiate forward over reverse.
  """
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  b, hp, wp, c = xp.shape
  ho, wo = _out_size(h, k, stride, 1, pad), _out_size(w, k, stride, 1, pad)
  r = sum(lax.slice(xp, (0, i, 0, 0), (b, i + (ho - 1) * stride + 1, wp, c), (1, stride, 1, 1))
          for i in range(k))
  s = sum(lax.slice(r, (0, 0, j, 0), (b, ho, j + (wo - 1) * stride + 1, c), (1, 1, stride, 1))
          for j in range(k))
  return s / _avg_pool_count(h, w, stride, k, pad).astype(x.dtype)


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
