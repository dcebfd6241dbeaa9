"""Data: IDX reading and the TF-free tfds builder, splits, imbalance, OOD, errors."""

import gzip
import os

import numpy as np
import pytest

from dal_jax import _idx_builder
from dal_jax import data


def write_idx(path, array, *, gz=False):
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  opener = gzip.open if gz else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())


def make_idx_dir(tmp_path, *, n_train=60, n_test=20, classes=3, gz=True, seed=0):
  rng = np.random.default_rng(seed)
  d = tmp_path / "idx"
  d.mkdir()
  arrays = {}
  for split, n in (("train", n_train), ("t10k", n_test)):
    x = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    y = np.arange(n) % classes
    suffix = ".gz" if gz else ""
    write_idx(d / f"{split}-images-idx3-ubyte{suffix}", x, gz=gz)
    write_idx(d / f"{split}-labels-idx1-ubyte{suffix}", y, gz=gz)
    arrays[split] = (x, y)
  return d, arrays


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
  x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = str(tmp_path / ("a.idx" + (".gz" if gz else "")))
  write_idx(path, x, gz=gz)
  np.testing.assert_array_equal(_idx_builder.read_idx(path), x)


def test_corrupt_idx_files_raise(tmp_path):
  bad_magic = tmp_path / "bad"
  bad_magic.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 10)
  with pytest.raises(ValueError, match="bad magic"):
    _idx_builder.read_idx(str(bad_magic))
  truncated = tmp_path / "trunc"
  write_idx(truncated, np.zeros((4, 5)))
  truncated.write_bytes(truncated.read_bytes()[:-3])
  with pytest.raises(ValueError, match="header promises 20 bytes"):
    _idx_builder.read_idx(str(truncated))
  not_gzip = tmp_path / "x.gz"
  not_gzip.write_bytes(b"plain bytes")
  with pytest.raises(ValueError, match="corrupt IDX"):
    _idx_builder.read_idx(str(not_gzip))


def test_idx_dataset_through_tfds_builder(tmp_path):
  d, arrays = make_idx_dir(tmp_path)
  train, test = data.load_dataset(f"idx:{d}", data_dir=str(tmp_path / "tfds"))
  assert train.x.shape == (60, 6, 5, 1) and test.x.shape == (20, 6, 5, 1)
  assert train.num_classes == 3 and train.x.dtype == np.float32
  np.testing.assert_allclose(train.x[..., 0] * 255, arrays["train"][0], atol=1e-3)
  np.testing.assert_array_equal(train.y, arrays["train"][1])
  # Prepared files are array_record, and a second load reads them back (no re-preparation).
  files = [f for _, _, fs in os.walk(tmp_path / "tfds") for f in fs]
  assert any("array_record" in f for f in files)
  train2, _ = data.load_dataset(f"idx:{d}", data_dir=str(tmp_path / "tfds"))
  np.testing.assert_array_equal(train2.y, train.y)


def test_prepared_tfds_dataset_loads_by_name(tmp_path):
  d, arrays = make_idx_dir(tmp_path, seed=3)
  data_dir = str(tmp_path / "tfds")
  data.load_dataset(f"idx:{d}", data_dir=data_dir)  # prepares dal_idx_images/idx_<key>/1.0.0
  (config,) = os.listdir(os.path.join(data_dir, "dal_idx_images"))
  assert config.startswith("idx_")
  train, test = data.load_dataset(f"dal_idx_images/{config}", data_dir=data_dir)
  np.testing.assert_array_equal(train.y, arrays["train"][1])
  assert len(test) == 20


def test_unknown_and_missing_datasets(tmp_path):
  with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'"):
    data.load_dataset("no_such_dataset_xyz", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="does not exist"):
    data.load_dataset(f"idx:{tmp_path}/missing", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="not prepared"):
    data.load_dataset("mnist", data_dir=str(tmp_path))


def test_digits_and_splits():
  train, test = data.load_dataset("digits")
  assert train.x.shape == (1297, 8, 8, 1) and len(test) == 500
  s = data.make_splits(train, test, seed=0, val_size=100, pool_size=500)
  assert len(s.pool) == 500 and len(s.val) == 100
  assert not set(s.pool_source.tolist()) & set(
      np.nonzero(np.isin(np.arange(len(train)), s.pool_source, invert=True))[0].tolist())
  np.testing.assert_array_equal(train.y[s.pool_source], s.pool.y)
  s2 = data.make_splits(train, test, seed=0, val_size=100, pool_size=500)
  np.testing.assert_array_equal(s.pool_source, s2.pool_source)


def test_long_tail_and_ood():
  train, test = data.load_dataset("digits")
  s = data.make_splits(train, test, seed=1, val_size=100, imbalance_ratio=10.0, ood_fraction=0.2)
  counts = np.bincount(s.pool.y[s.pool.y >= 0], minlength=10)
  assert counts[0] / counts[-1] == pytest.approx(10.0, rel=0.15)
  assert np.all(np.diff(counts) <= 0)
  n_in = counts.sum()
  n_ood = np.sum(s.pool.y == data.OOD_LABEL)
  assert n_ood == round(0.2 * n_in)
  assert np.all(s.pool_source[s.pool.y == data.OOD_LABEL] == -1)
  # OOD samples keep the intensity histogram of a real image (pixels permuted).
  ood = s.pool.x[s.pool.y == data.OOD_LABEL][0].ravel()
  assert np.any([np.allclose(np.sort(ood), np.sort(x.ravel())) for x in train.x])


def test_split_argument_errors():
  train, test = data.load_dataset("digits")
  with pytest.raises(ValueError, match="imbalance_ratio"):
    data.make_splits(train, test, seed=0, val_size=10, imbalance_ratio=0.5)
  with pytest.raises(ValueError, match="ood_fraction"):
    data.make_splits(train, test, seed=0, val_size=10, ood_fraction=1.5)
  with pytest.raises(ValueError, match="val_size"):
    data.make_splits(train, test, seed=0, val_size=len(train))
