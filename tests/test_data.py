"""Data: the real tfds loading path under mock_data, the embedded set, user arrays,
splits, resumable order and augmentation properties."""
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxnas import data

SHAPES = {'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3), 'svhn_cropped': (32, 32, 3),
          'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1), 'imagenet16-120': (16, 16, 3)}


@pytest.mark.parametrize('name', sorted(data.TFDS))
def test_tfds_sources_through_data_source(name, tmp_path):
  n = 300 if name == 'imagenet16-120' else 12
  with tfds.testing.mock_data(num_examples=n):
    ds = data.load(name, data_dir=str(tmp_path))
  classes = data.TFDS[name][3]
  assert ds.num_classes == classes
  for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    assert x.shape[1:] == SHAPES[name] and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5  # scaled from uint8 0..255
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < classes
    if name == 'imagenet16-120':
      assert 0 < len(x) < n  # only the first 120 of 1000 classes are kept
    else:
      assert len(x) == n
  assert len(ds.mean) == len(ds.std) == SHAPES[name][-1]


def test_missing_tfds_data_fails_fast_and_says_what_to_do(tmp_path):
  t0 = time.perf_counter()
  with pytest.raises(data.DataNotFoundError) as e:
    data.load('cifar10', data_dir=str(tmp_path))
  assert time.perf_counter() - t0 < 10
  msg = str(e.value)
  assert str(tmp_path) in msg
  assert f'tfds build cifar10 --file_format=array_record --data_dir {tmp_path}' in msg
  assert '--download' in msg


def test_unknown_dataset_lists_known():
  with pytest.raises(ValueError, match=r"unknown data set 'cifar11'.*digits.*cifar10.*npz:PATH"):
    data.load('cifar11')


def test_digits_embedded_split():
  ds = data.load('digits')
  assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  assert set(np.unique(ds.y_train)) == set(range(10))
  again = data.load('digits')
  np.testing.assert_array_equal(ds.x_test, again.x_test)
  # the training mean/std normalise the training set to ~zero mean, unit std
  z = ds.normalize(ds.x_train)
  assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3


def test_npz_round_trip_and_errors(tmp_path):
  rng = np.random.default_rng(0)
  good = dict(x_train=rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8), y_train=rng.integers(0, 3, 20),
              x_test=rng.integers(0, 256, (7, 6, 6, 3), dtype=np.uint8), y_test=rng.integers(0, 3, 7))
  path = tmp_path / 'd.npz'
  np.savez(path, **good)
  ds = data.load(f'npz:{path}')
  assert ds.x_train.shape == (20, 6, 6, 3) and ds.num_classes == 3
  np.testing.assert_allclose(ds.x_test * 255, good['x_test'], atol=1e-4)

  def bad(match, **change):
    np.savez(path, **{**good, **change})
    with pytest.raises(ValueError, match=match):
      data.load(f'npz:{path}')
  np.savez(path, x_train=good['x_train'], y_train=good['y_train'])
  with pytest.raises(ValueError, match=r"lacks the keys \['x_test', 'y_test'\]"):
    data.load(f'npz:{path}')
  bad('has 20 images but y_train has 19 labels', y_train=good['y_train'][:19])
  bad(r'labels in \[0, 7\], outside \[0, 3\)', y_test=np.array([0, 1, 2, 7, 0, 0, 0]))
  bad(r'must have shape \(N, H, W\) or \(N, H, W, C\)', x_train=np.zeros((20, 6), np.uint8))
  bad(r'must lie in \[0, 1\]', x_train=np.full((20, 6, 6, 3), 3.0))
  with pytest.raises(FileNotFoundError, match='no such .npz file'):
    data.load(f'npz:{tmp_path}/missing.npz')
  (tmp_path / 'junk.npz').write_text('not a zip')
  with pytest.raises(ValueError, match='not a readable .npz'):
    data.load(f'npz:{tmp_path}/junk.npz')


def test_search_split_is_darts_split():
  ds = data.load('digits')
  tr, va = data.search_split(ds, 0.5)
  assert len(tr.x) == 718 and len(va.x) == 719
  np.testing.assert_array_equal(tr.x, ds.x_train[:718])
  np.testing.assert_array_equal(va.y, ds.y_train[718:])
  with pytest.raises(ValueError, match='train_portion must be in'):
    data.search_split(ds, 1.0)


def test_order_is_a_permutation_per_epoch_and_a_pure_function_of_its_position():
  steps = data.steps_per_epoch(50, 8)   # 6 (2 rows dropped)
  epochs = [np.concatenate([data.batch_indices(3, e, s, 50, 8) for s in range(steps)])
            for e in range(2)]
  assert steps == 6 and all(len(e) == 48 and len(set(e.tolist())) == 48 for e in epochs)
  assert not np.array_equal(epochs[0], epochs[1])
  # the same (seed, epoch, step) is the same batch: what a resumed run reads; NumPy's own
  # permutation of default_rng([seed, epoch]) is the oracle
  np.testing.assert_array_equal(data.batch_indices(3, 1, 2, 50, 8),
                                np.random.default_rng([3, 1]).permutation(50)[16:24])
  assert not np.array_equal(data.batch_indices(4, 1, 2, 50, 8), data.batch_indices(3, 1, 2, 50, 8))


def test_eval_batches_cover_the_split_once():
  split = data.Split(np.zeros((23, 2, 2, 1), np.float32), np.arange(23, dtype=np.int32))
  out = list(data.eval_batches(split, 8))
  assert [k for _, _, k in out] == [8, 8, 7]
  assert all(x.shape == (8, 2, 2, 1) for x, _, _ in out)
  np.testing.assert_array_equal(np.concatenate([y[:k] for _, y, k in out]), np.arange(23))


def test_random_crop_is_a_window_of_the_zero_padded_image():
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 2), minval=0.1, maxval=1.0)
  out = np.asarray(data.random_crop(jax.random.key(1), x, 4))
  assert out.shape == x.shape
  xp = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets = set()
  for b in range(16):
    hits = [(i, j) for i in range(9) for j in range(9)
            if np.array_equal(xp[b, i:i + 8, j:j + 8], out[b])]
    assert len(hits) == 1
    offsets.add(hits[0])
  assert len(offsets) > 3  # offsets vary across the batch


def test_random_flip_is_an_exact_mirror():
  x = jax.random.normal(jax.random.key(0), (32, 5, 6, 3))
  out = np.asarray(data.random_flip(jax.random.key(2), x))
  xs = np.asarray(x)
  same = [np.array_equal(out[b], xs[b]) for b in range(32)]
  mirrored = [np.array_equal(out[b], xs[b, :, ::-1]) for b in range(32)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert 0 < sum(mirrored) < 32


def test_cutout_zeroes_exactly_the_clipped_square():
  h = w = 32
  mask = np.asarray(data.cutout_mask(jax.random.key(3), 256, h, w, 16))[..., 0]
  clipped = 0
  for m in mask:
    assert set(np.unique(m)) <= {0.0, 1.0}
    ys, xs = np.nonzero(m == 0)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # the zeros are exactly the rectangle they span ...
    assert (m[y1:y2, x1:x2] == 0).all() and (m == 0).sum() == (y2 - y1) * (x2 - x1)
    # ... which is a 16-square centred in the image, clipped at the border
    for lo, hi, size in ((y1, y2, h), (x1, x2, w)):
      if lo > 0 and hi < size:
        assert hi - lo == 16
      else:
        assert 0 < hi - lo <= 16
        clipped += 1
  assert clipped > 0
  x = np.ones((256, h, w, 1), np.float32)
  out = np.asarray(data.Augment(cutout=16)(jax.random.key(3), x, (0.5,), (0.25,)))
  # cutout comes after normalisation: the square is exactly 0, the rest (1 - 0.5) / 0.25
  assert set(np.unique(out)) == {0.0, 2.0}
  assert ((out == 0).sum(axis=(1, 2, 3)) > 0).all()
