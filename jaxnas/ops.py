"""Candidate operations of the DARTS and NAS-Bench-201 cell spaces (Flax Linen, NHWC).
One module for both spaces' ops: they share the registry, BatchNorm and the
convolution blocks.

The layers hold their weights and call the kernels of :mod:`jaxnas.kernels`
(convolutions and pooling written for XLA on CPU; why: docs/performance.md);
1x1 convolutions are matrix products.

Every operation is built from one registry, :data:`OPS`, by name, with the
signature ``factory(c_in, c_out, stride, affine) -> nn.Module``; a module is
called as ``op(x, train)``.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnas.kernels import avg_pool, avg_pool_3x3, conv2d, conv_xla, depthwise_conv, max_pool_3x3

Array = jax.Array


# ----------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------

# Parameter name -> fan-in from its shape (leading axes may stack edges or
# cells). Every parameter jaxnas creates is one of these, a bias beside one of
# them, or a BatchNorm scale/bias; `spaces.base.init_variables` relies on it.
FAN_IN = {
    'kernel': lambda s: int(np.prod(s[-4:-1])),   # dense k x k conv (k, k, c_in, c_out)
    'pointwise': lambda s: int(s[-2]),            # 1x1 conv (c_in, c_out)
    'depthwise': lambda s: int(s[-3] * s[-2]),    # depthwise conv (k, k, c)
    'weight': lambda s: int(s[-2]),               # linear (c_in, c_out)
}
# The axes of one layer's weight; any before them stack layers (edges, cells).
WEIGHT_NDIM = {'kernel': 4, 'pointwise': 2, 'depthwise': 3, 'weight': 2}


def torch_uniform(fan_in: int) -> Callable:
  """PyTorch's default conv/linear initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


RELU_CODES = 'relu_codes'   # collection of ReLU sign patterns (NASWOT), recorded when mutable
FEATURES = 'intermediates'  # collection of the pre-pooling feature map (Zen-score), as 'features'
PROBES = 'perturbations'    # Flax's collection of zero perturbations (Module.perturb): the Fisher proxy's


def param_dtype(dtype) -> jnp.dtype:
  """The dtype of the parameters of a layer whose input is ``dtype``: float32, but
  float64 for float64 inputs (the x64 tests)."""
  return jnp.float64 if dtype == jnp.float64 else jnp.float32


def cast_param(module: nn.Module, name: str, init: Callable, shape: tuple, dtype) -> Array:
  """``module``'s parameter ``name``, kept in :func:`param_dtype` and cast to ``dtype``
  (the activations') where it is used: under mixed precision (bfloat16 activations)
  gradients and optimiser states stay float32."""
  return module.param(name, init, shape, param_dtype(dtype)).astype(dtype)


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
  two passes (:func:`standardize`), and in the running variance the unbiased
  batch variance ``σ² n/(n − 1)``, n the values per channel, as
  ``torch.nn.BatchNorm2d`` (Flax's ``nn.BatchNorm`` keeps the biased one; the same
  variables: ``params`` scale and bias where ``affine``, ``batch_stats`` mean and
  var). The reference code reads the running variance: evaluation at test time,
  and Zen-NAS' BatchNorm term.

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
    dtype = x.dtype  # statistics and normalisation in float32 (or float64) under bfloat16
    x = x.astype(param_dtype(dtype))
    shape = x.shape[:int(self.groups)] + x.shape[-1:]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(shape, jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones(shape, jnp.float32))

    def bcast(v):  # (G, C) against (G, B, ..., C)
      return v.reshape(shape[:-1] + (1,) * (x.ndim - len(shape)) + shape[-1:])
    if self.train:
      y, mean, var = standardize(x, self.epsilon, self.groups)
      if not self.is_initializing():
        m, n = self.momentum, x.size // int(np.prod(shape))
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = (m * ra_mean.value + (1 - m) * mean).astype(ra_mean.value.dtype)
        ra_var.value = (m * ra_var.value + (1 - m) * unbiased).astype(ra_var.value.dtype)
    else:
      y = (x - bcast(ra_mean.value)) * lax.rsqrt(bcast(ra_var.value) + self.epsilon)
    if self.affine:
      y = y * bcast(self.param('scale', nn.initializers.ones, shape, jnp.float32))
      y = y + bcast(self.param('bias', nn.initializers.zeros, shape, jnp.float32))
    return y.astype(dtype)


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
      w = cast_param(self, 'pointwise', torch_uniform(c_in), (c_in, self.features), x.dtype)
      if self.stride > 1:
        x = x[:, ::self.stride, ::self.stride, :]
      y = jnp.dot(x, w)
    else:
      w = cast_param(self, 'kernel', torch_uniform(c_in * k * k), (k, k, c_in, self.features),
                     x.dtype)
      conv = conv2d if self.hand_vjp else conv_xla
      y = conv(x, w, self.stride, self.padding, self.dilation)
    if self.use_bias:
      y = y + cast_param(self, 'bias', torch_uniform(c_in * k * k), (self.features,), x.dtype)
    return y


class Weight(nn.Module):
  """One conv or linear weight (``kind`` a :data:`FAN_IN` name), PyTorch's initialiser;
  returned, not applied: for ops that apply several weights at once (a supernet's
  mixed op)."""
  kind: str
  shape: tuple[int, ...]

  @nn.compact
  def __call__(self, dtype=jnp.float32):
    return cast_param(self, self.kind, torch_uniform(FAN_IN[self.kind](self.shape)), self.shape,
                      dtype)


class Linear(nn.Module):
  """``y = x W + b`` with PyTorch's nn.Linear initialisation."""
  features: int

  @nn.compact
  def __call__(self, x):
    init = torch_uniform(x.shape[-1])
    w = cast_param(self, 'weight', init, (x.shape[-1], self.features), x.dtype)
    return jnp.dot(x, w) + cast_param(self, 'bias', init, (self.features,), x.dtype)


class DepthwiseConv(nn.Module):
  kernel_size: int
  stride: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    w = cast_param(self, 'depthwise', torch_uniform(k * k), (k, k, x.shape[-1]), x.dtype)
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
