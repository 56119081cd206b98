"""Data sets, search splits, augmentation and a deterministic, resumable batch order.

Data sets
  * ``digits`` (the default): scikit-learn's bundled handwritten digits, 1,797
    real 8x8 grey images of 10 classes, no download. Fixed split: a
    permutation drawn with ``numpy.random.default_rng(0)``; its first 1,437
    images (80%) are the training set, the other 360 the test set. Pixel
    values 0..16 are scaled to [0, 1].
  * ``cifar10``, ``cifar100``, ``svhn_cropped``, ``mnist``, ``fashion_mnist``,
    ``imagenet16-120`` (``imagenet_resized/16x16`` restricted to its first 120
    classes, as NAS-Bench-201 defines ImageNet16-120): read with
    ``tfds.data_source`` from prepared ArrayRecord files, which needs no
    TensorFlow at run time.
  * ``npz:PATH``: a user's arrays, keys ``x_train``, ``y_train``, ``x_test``,
    ``y_test``; images (N, H, W) or (N, H, W, C), uint8 in 0..255 or float in
    [0, 1]; labels integers in [0, num_classes).

Every data set is held in memory as float32 NHWC images in [0, 1]; batches are
normalised with the per-channel mean and std of the data set.

Order: the batch at (seed, epoch, step) is a pure function of those numbers
(:func:`batch_indices`), so a run resumed at any step sees exactly the
batches an uninterrupted run sees. (One module over 300 lines: the data sets, the
split and the order together are what a run reads, and a resumed run relies on all three.)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# name -> (tfds name, train split, test split, number of classes kept, mean, std)
TFDS = {
    'cifar10': ('cifar10', 'train', 'test', 10,
                (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    'cifar100': ('cifar100', 'train', 'test', 100,
                 (0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047)),
    'svhn_cropped': ('svhn_cropped', 'train', 'test', 10,
                     (0.4376821, 0.4437697, 0.47280442), (0.19803012, 0.20101562, 0.19703614)),
    'mnist': ('mnist', 'train', 'test', 10, (0.1307,), (0.3081,)),
    'fashion_mnist': ('fashion_mnist', 'train', 'test', 10, (0.2860,), (0.3530,)),
    'imagenet16-120': ('imagenet_resized/16x16', 'train', 'validation', 120,
                       (122.68 / 255, 116.66 / 255, 104.01 / 255),
                       (63.22 / 255, 61.26 / 255, 65.09 / 255)),
}
EMBEDDED = ('digits',)
NAMES = EMBEDDED + tuple(TFDS)
DIGITS_TRAIN = 1437


class DataNotFoundError(FileNotFoundError):
  """A tensorflow-datasets data set is not prepared in the data directory."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Images (N, H, W, C) float32 in [0, 1], integer labels, normalisation statistics."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])

  def normalize(self, x):
    """(x - mean) / std per channel; works on NumPy and JAX arrays."""
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------

def _check_images(x, y, split: str, num_classes: int | None):
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f'x_{split} must have shape (N, H, W) or (N, H, W, C), got {x.shape}')
  if len(x) != len(y):
    raise ValueError(f'x_{split} has {len(x)} images but y_{split} has {len(y)} labels')
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'y_{split} must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}')
  if len(x) == 0:
    raise ValueError(f'x_{split} is empty')
  if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'y_{split} has labels in [{y.min()}, {y.max()}], outside [0, {num_classes})')
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
      raise ValueError(f'x_{split} contains NaN or Inf')
    if x.min() < 0 or x.max() > 1:
      raise ValueError(f'float images x_{split} must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]')
  else:
    raise ValueError(f'x_{split} must be uint8 or float, got {x.dtype}')
  return x, y.astype(np.int32)


def from_arrays(x_train, y_train, x_test, y_test, name: str = 'arrays',
                num_classes: int | None = None, mean=None, std=None) -> Dataset:
  """A data set from a user's arrays (see the module docstring for the accepted forms).

  ``num_classes`` defaults to 1 + the largest training label; mean and std
  default to the per-channel statistics of the training images.
  """
  if num_classes is None:
    num_classes = int(np.max(y_train)) + 1
  x_train, y_train = _check_images(x_train, y_train, 'train', num_classes)
  x_test, y_test = _check_images(x_test, y_test, 'test', num_classes)
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(f'train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ in shape')
  if mean is None:
    mean = tuple(float(m) for m in x_train.mean(axis=(0, 1, 2)))
  if std is None:
    std = tuple(max(float(s), 1e-6) for s in x_train.std(axis=(0, 1, 2)))
  return Dataset(name, x_train, y_train, x_test, y_test, num_classes, tuple(mean), tuple(std))


def load_digits() -> Dataset:
  """The embedded data set: scikit-learn's digits with jaxnas' fixed 1,437 / 360 split."""
  from sklearn.datasets import load_digits as sk_digits
  d = sk_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  order = np.random.default_rng(0).permutation(len(x))
  tr, te = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
  return from_arrays(x[tr], d.target[tr], x[te], d.target[te], name='digits', num_classes=10)


def load_npz(path: str) -> Dataset:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no such .npz file: {path}')
  try:
    f = np.load(path)
  except Exception as e:
    raise ValueError(f'{path} is not a readable .npz file: {e}') from None
  with f:
    missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in f.files]
    if missing:
      raise ValueError(f'{path} lacks the keys {missing}; it needs x_train, y_train, x_test, y_test '
                       f'(it has {sorted(f.files)})')
    arrays = {k: f[k] for k in ('x_train', 'y_train', 'x_test', 'y_test')}
  return from_arrays(**arrays, name=f'npz:{path}')


def prepare_command(name: str, data_dir: str) -> str:
  return (f'pip install tensorflow && tfds build {TFDS[name][0]} --file_format=array_record '
          f'--data_dir {data_dir}')


def _read_split(tfds_name: str, split: str, data_dir: str, download: bool, keep_classes: int):
  import tensorflow_datasets as tfds
  try:
    src = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=download,
                           builder_kwargs={'file_format': 'array_record'} if download else None)
  except (NotImplementedError, FileNotFoundError, AssertionError) as e:
    raise DataNotFoundError(str(e)) from None
  images, labels = [], []
  for i in range(len(src)):  # item by item: slices are not supported by every source
    ex = src[i]
    if int(ex['label']) < keep_classes:
      images.append(np.asarray(ex['image']))
      labels.append(int(ex['label']))
  if not images:
    raise ValueError(f'{tfds_name}[{split}] has no examples with labels below {keep_classes}')
  return np.stack(images), np.asarray(labels, np.int32)


def load_tfds(name: str, data_dir: str | None = None, download: bool = False) -> Dataset:
  """A tensorflow-datasets data set, read without TensorFlow from prepared ArrayRecord files.

  Without ``download`` a data set that is not prepared under ``data_dir`` is a
  :class:`DataNotFoundError` at once, naming the directory and the command
  that prepares it on a connected machine (tfds' own download would retry
  for minutes offline).
  """
  tfds_name, train, test, classes, mean, std = TFDS[name]
  data_dir = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))
  try:
    x_tr, y_tr = _read_split(tfds_name, train, data_dir, download, classes)
    x_te, y_te = _read_split(tfds_name, test, data_dir, download, classes)
  except DataNotFoundError as e:
    raise DataNotFoundError(
        f'data set {name!r} ({tfds_name}) is not prepared as ArrayRecord in {data_dir}. '
        f'On a machine with internet, run:\n  {prepare_command(name, data_dir)}\n'
        f'and copy {os.path.join(data_dir, tfds_name.split("/")[0])} here, or pass --download '
        f'(needs TensorFlow and a connection). tfds said: {str(e).splitlines()[0]}') from None
  return from_arrays(x_tr, y_tr, x_te, y_te, name=name, num_classes=classes, mean=mean, std=std)


def check_name(name: str) -> str | None:
  """None if ``name`` names a data set :func:`load` knows, else what is wrong."""
  if name in NAMES or (name.startswith('npz:') and len(name) > 4):
    return None
  return f'must be one of {", ".join(NAMES)}, or npz:PATH'


def load(name: str = 'digits', data_dir: str | None = None, download: bool = False) -> Dataset:
  """A data set by name: ``digits``, a tfds name (see :data:`TFDS`) or ``npz:PATH``."""
  if name == 'digits':
    return load_digits()
  if name.startswith('npz:'):
    return load_npz(name[4:])
  if name in TFDS:
    return load_tfds(name, data_dir, download)
  raise ValueError(f'unknown data set {name!r}: it {check_name(name)}')


# ----------------------------------------------------------------------------
# Splits and order
# ----------------------------------------------------------------------------

class Split(NamedTuple):
  x: np.ndarray
  y: np.ndarray


def search_split(ds: Dataset, train_portion: float = 0.5) -> tuple[Split, Split]:
  """DARTS' split: the first ``train_portion`` of the training set trains the
  weights, the rest is the architecture-validation split."""
  if not 0 < train_portion < 1:
    raise ValueError(f'train_portion must be in (0, 1), got {train_portion}')
  n = int(np.floor(train_portion * len(ds.x_train)))
  if n == 0 or n == len(ds.x_train):
    raise ValueError(f'train_portion {train_portion} leaves an empty split of {len(ds.x_train)} images')
  return (Split(ds.x_train[:n], ds.y_train[:n]), Split(ds.x_train[n:], ds.y_train[n:]))


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Training steps per epoch: full batches only (the last partial batch is dropped)."""
  if batch_size > n:
    raise ValueError(f'batch size {batch_size} is larger than the {n} examples of the split')
  return n // batch_size


def batch_indices(seed: int, epoch: int, step: int, n: int, batch_size: int) -> np.ndarray:
  """Indices of the batch at (seed, epoch, step): slice ``step`` of a permutation
  drawn from ``default_rng([seed, epoch])``. A pure function of its arguments."""
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  return perm[step * batch_size:(step + 1) * batch_size]



def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
  """The whole split in order, ``(x, y, n_valid)``; the last batch is padded to
  ``batch_size`` (so that one compiled step serves all) and ``n_valid`` says
  how many of its rows are real."""
  n = len(split.x)
  for s in range(0, n, batch_size):
    x, y = split.x[s:s + batch_size], split.y[s:s + batch_size]
    k = len(x)
    if k < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - k,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(batch_size - k, y.dtype)])
    yield x, y, k


# ----------------------------------------------------------------------------
# Augmentation (on device, keyed)
# ----------------------------------------------------------------------------

def random_crop(key: jax.Array, x: jax.Array, padding: int = 4) -> jax.Array:
  """Zero-pads each image by ``padding`` and crops it back at a uniform offset."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(xp, offsets)


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1, :], x)


def cutout_mask(key: jax.Array, batch: int, h: int, w: int, length: int = 16) -> jax.Array:
  """DARTS' cutout: a ``length`` square centred uniformly on the image, clipped at
  the border; the mask is 0 inside it and 1 elsewhere, shape (batch, h, w, 1)."""
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (batch, 1, 1), 0, h)
  cx = jax.random.randint(kx, (batch, 1, 1), 0, w)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = ((rows >= cy - length // 2) & (rows < cy + length // 2) &
            (cols >= cx - length // 2) & (cols < cx + length // 2))
  return (~inside).astype(jnp.float32)[..., None]


@dataclasses.dataclass(frozen=True)
class Augment:
  """Augmentation settings. DARTS' evaluation recipe is ``Augment(crop=4, flip=True, cutout=16)``."""
  crop: int = 0
  flip: bool = False
  cutout: int = 0

  def __call__(self, key: jax.Array, x: jax.Array, mean, std) -> jax.Array:
    """Crop and flip the [0, 1] images, normalise, then cut out (as torchvision after Normalize)."""
    kc, kf, ko = jax.random.split(key, 3)
    if self.crop:
      x = random_crop(kc, x, self.crop)
    if self.flip:
      x = random_flip(kf, x)
    x = (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
    if self.cutout:
      x = x * cutout_mask(ko, x.shape[0], x.shape[1], x.shape[2], self.cutout)
    return x


NO_AUGMENT = Augment()
CIFAR_AUGMENT = Augment(crop=4, flip=True, cutout=16)


def default_train_augment(name: str) -> Augment:
  """Evaluation-training augmentation by data set: DARTS' CIFAR recipe (crop 4,
  flip, cutout 16) for CIFAR, NAS-Bench-201's crop 2 + flip for ImageNet16-120,
  crop only for SVHN (digits must not be mirrored), none for the rest."""
  if name in ('cifar10', 'cifar100'):
    return CIFAR_AUGMENT
  if name == 'imagenet16-120':
    return Augment(crop=2, flip=True)
  if name == 'svhn_cropped':
    return Augment(crop=4)
  return NO_AUGMENT


def search_augment(name: str) -> Augment:
  """Search augmentation by data set: the evaluation's crop and flip without cutout, on
  both halves of the split (quark0/darts ``train_search.py`` builds both loaders from
  ``_data_transforms_cifar10`` with ``cutout=False``)."""
  return dataclasses.replace(default_train_augment(name), cutout=0)
