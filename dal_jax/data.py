"""Datasets as arrays, with a fixed pool / validation / test split.

Sources (all offline; nothing downloads at run time):

* ``fashion_mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), prepared once through dal_jax's TF-free tfds builder
  into ``array_record`` files under ``data_dir`` and read back with tfds random access.
* ``idx:<directory>``: any MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``, ...), prepared
  by the same builder.
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), a tiny real dataset for tests.
* ``scenes[:key=value,...]``: segmentation scenes composed from Fashion-MNIST items
  (:mod:`dal_jax.scenes`; ``y`` is the ``[N, H, W]`` mask, 11 classes, 0 = background; with
  ``labels=boxes`` the items' boxes for detection, ``[N, 4, 5]`` rows, 10 classes); keys
  ``size`` (canvas side, 64), ``train`` (5000) and ``test`` (1000) scenes, ``seed`` (0) and
  ``source`` (an IDX directory; Debian's Fashion-MNIST by default), e.g.
  ``scenes:size=32,train=2000``.
* ``masks:<directory>``: one's own segmentation data, images with PNG masks beside them
  (:mod:`dal_jax.masks`: ``images/``, ``masks/``, optional ``classes.txt`` and ``test/``).
* ``coco:<directory>``: one's own detection data, images with a COCO JSON of their boxes
  (:mod:`dal_jax.box_folder`: ``images/``, ``annotations.json``, optional ``test/``).
* any other name: a tfds dataset already prepared in ``data_dir`` (``tfds.data_source``, no
  download), e.g. ``mnist`` or ``cifar10`` prepared on a machine with internet.

Real pools are rarely balanced and clean, so :func:`make_splits` can make the pool long-tailed
(``imbalance_ratio``) and append out-of-distribution samples (``ood_fraction``), whose oracle label
is ``OOD_LABEL`` (-1): querying one spends budget but adds nothing to training.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

OOD_LABEL = -1
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class Dataset(NamedTuple):
  """Arrays of one split. ``x``: ``[N, H, W, C]`` float32 in [0, 1]; ``y``: ``[N, ...]`` int32
  labels of the task's shape (a class ``[N]``, ``OOD_LABEL`` for out-of-distribution pool
  samples; a mask ``[N, H, W]``)."""

  x: np.ndarray
  y: np.ndarray
  num_classes: int

  def __len__(self) -> int:
    return int(self.y.shape[0])


class Splits(NamedTuple):
  """The fixed splits of an experiment. ``pool_source`` maps pool positions to indices into the
  source train split (``-1`` for synthetic OOD samples)."""

  pool: Dataset
  val: Dataset
  test: Dataset
  pool_source: np.ndarray


def as_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int) -> Dataset:
  """A :class:`Dataset` of images (``[N, H, W]`` or ``[N, H, W, C]``; uint8 scaled to [0, 1])
  and int labels of any per-item shape."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  return Dataset(x=x.astype(np.float32), y=np.asarray(labels, np.int32), num_classes=num_classes)


def _from_tfds_source(source, num_classes: int) -> Dataset:
  items = source.__getitems__(list(range(len(source))))
  images = np.stack([it["image"] for it in items])
  labels = np.array([it["label"] for it in items])
  return as_dataset(images, labels, num_classes)


def check_idx_dir(name: str, source_dir: str) -> None:
  """Raises one line when the IDX directory of dataset ``name`` is missing (with the install
  command for Debian's Fashion-MNIST)."""
  if not os.path.isdir(source_dir):
    hint = (" Install it with `apt-get install dataset-fashion-mnist`."
            if source_dir == FASHION_MNIST_DIR else "")
    raise ValueError(f"dataset {name!r}: IDX directory {source_dir!r} does not exist.{hint}")


def _load_idx(name: str, source_dir: str, data_dir: str | None) -> tuple[Dataset, Dataset]:
  from dal_jax import _idx_builder  # imports tensorflow_datasets

  check_idx_dir(name, source_dir)
  builder = _idx_builder.idx_builder(name, source_dir, data_dir)
  sources = builder.as_data_source()
  c = builder.info.features["label"].num_classes
  return _from_tfds_source(sources["train"], c), _from_tfds_source(sources["test"], c)


def _load_digits() -> tuple[Dataset, Dataset]:
  from sklearn.datasets import load_digits

  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(y))  # fixed split, independent of the run seed
  train, test = order[:1297], order[1297:]
  return as_dataset(x[train], y[train], 10), as_dataset(x[test], y[test], 10)


def _prepared_dir(name: str, data_dir: str | None) -> str | None:
  """``data_dir/<name>/<version>`` (latest version) holding a prepared tfds dataset, if any."""
  import tensorflow_datasets as tfds

  root = os.path.join(data_dir or tfds.core.constants.DATA_DIR, *name.split("/"))
  if not os.path.isdir(root):
    return None
  versions = sorted((d for d in os.listdir(root)
                     if os.path.exists(os.path.join(root, d, "dataset_info.json"))),
                    key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
  return os.path.join(root, versions[-1]) if versions else None


def _load_tfds(name: str, data_dir: str | None) -> tuple[Dataset, Dataset]:
  import tensorflow_datasets as tfds

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises DatasetNotFoundError and friends
    directory = _prepared_dir(name, data_dir)
    if directory is None:
      raise ValueError(f"unknown dataset {name!r}: not one of {sorted(BUILTIN_DATASETS)} or "
                       f"'idx:<dir>', not a tfds builder ({type(e).__name__}), and not a prepared dataset "
                       f"directory under data_dir={data_dir!r}") from e
    builder = tfds.builder_from_directory(directory)  # prepared files, builder code not needed
  if not builder.is_prepared():
    raise ValueError(f"tfds dataset {name!r} is not prepared in data_dir={builder.data_dir!r}; "
                     "dal_jax never downloads at run time. Prepare it where there is internet "
                     "(tfds.builder(name).download_and_prepare(file_format='array_record')) and "
                     "pass --config.data_dir")
  if builder.info.supervised_keys is None:
    raise ValueError(f"tfds dataset {name!r} has no supervised (image, label) keys")
  sources = builder.as_data_source()
  image_key, label_key = builder.info.supervised_keys
  c = builder.info.features[label_key].num_classes

  def load(split):
    if split not in sources:
      raise ValueError(f"tfds dataset {name!r} has no {split!r} split (has {sorted(sources)})")
    items = sources[split].__getitems__(list(range(len(sources[split]))))
    return as_dataset(np.stack([it[image_key] for it in items]),
                       np.array([it[label_key] for it in items]), c)

  return load("train"), load("test")


BUILTIN_DATASETS = ("fashion_mnist", "digits", "scenes")
SCENE_OPTIONS = {"size": 64, "train": 5000, "test": 1000, "seed": 0, "source": FASHION_MNIST_DIR,
                 "labels": "masks"}
SCENE_LABELS = ("masks", "boxes")


def scene_options(name: str) -> dict:
  """The settings of a ``scenes[:key=value,...]`` dataset name (defaults filled in)."""
  options = dict(SCENE_OPTIONS)
  spec = name[len("scenes:"):] if name.startswith("scenes:") else ""
  for part in filter(None, spec.split(",")):
    key, eq, value = part.partition("=")
    if not eq or key not in SCENE_OPTIONS:
      raise ValueError(f"dataset {name!r}: {part!r} is not key=value with a key in "
                       f"{sorted(SCENE_OPTIONS)}")
    if key == "source":
      options[key] = os.path.abspath(os.path.expanduser(value))
      continue
    if key == "labels":
      if value not in SCENE_LABELS:
        raise ValueError(f"dataset {name!r}: labels={value!r} must be one of {SCENE_LABELS}")
      options[key] = value
      continue
    if not value.isdigit() or int(value) < (16 if key == "size" else 0 if key == "seed" else 1):
      raise ValueError(f"dataset {name!r}: {key}={value!r} must be an integer "
                       f">= {16 if key == 'size' else 0 if key == 'seed' else 1}")
    options[key] = int(value)
  return options


def _load_scenes(name: str, data_dir: str | None) -> tuple[Dataset, Dataset]:
  from dal_jax import scenes

  o = scene_options(name)
  check_idx_dir(name, o["source"])
  train, test = scenes.load_scenes(o["source"], data_dir, train=o["train"], test=o["test"],
                                   size=o["size"], seed=o["seed"])
  if o["labels"] == "boxes":  # detection: the items' boxes, 10 classes (no background class)
    from dal_jax.tasks import detection
    c = scenes.NUM_CLASSES - 1
    return (as_dataset(train.x, detection.pad_boxes(train.boxes), c),
            as_dataset(test.x, detection.pad_boxes(test.boxes), c))
  c = scenes.NUM_CLASSES
  return as_dataset(train.x, train.masks, c), as_dataset(test.x, test.masks, c)


def load_dataset(name: str, *, data_dir: str | None = None) -> tuple[Dataset, Dataset]:
  """Loads ``(train, test)`` arrays of a dataset by name (see the module docstring for names).

  Args:
    name: ``fashion_mnist``, ``digits``, ``idx:<directory>``, ``scenes[:key=value,...]``,
      ``masks:<directory>``, ``coco:<directory>`` or a prepared tfds dataset name.
    data_dir: tfds data directory (default: tfds's, ``~/tensorflow_datasets``).

  Raises:
    ValueError: unknown name, missing files, corrupt IDX files, or an unprepared tfds dataset.
  """
  if name == "digits":
    return _load_digits()
  if name == "fashion_mnist":
    return _load_idx("fashion_mnist", FASHION_MNIST_DIR, data_dir)
  if name == "scenes" or name.startswith("scenes:"):
    return _load_scenes(name, data_dir)
  if name.startswith("masks:"):
    from dal_jax import masks
    return masks.load_mask_folder(os.path.abspath(os.path.expanduser(name[len("masks:"):])))
  if name.startswith("coco:"):
    from dal_jax import box_folder
    return box_folder.load_coco_folder(os.path.abspath(os.path.expanduser(name[len("coco:"):])))
  if name.startswith("idx:"):
    source_dir = os.path.abspath(os.path.expanduser(name[4:]))
    return _load_idx(os.path.basename(source_dir.rstrip("/")) or "idx", source_dir, data_dir)
  return _load_tfds(name, data_dir)


def long_tail_counts(counts: np.ndarray, imbalance_ratio: float) -> np.ndarray:
  """Per-class sample counts for an exponential long tail (Cui et al. 2019): class c keeps
  ``n_max * ratio ** (-c / (C - 1))`` samples, so the most/least frequent ratio is
  ``imbalance_ratio``."""
  c = counts.shape[0]
  n_max = counts.min()
  target = np.floor(n_max * imbalance_ratio ** (-np.arange(c) / max(c - 1, 1))).astype(int)
  return np.maximum(np.minimum(target, counts), 1)


def make_splits(train: Dataset, test: Dataset, *, seed: int, val_size: int,
                pool_size: int | None = None, test_size: int | None = None,
                imbalance_ratio: float = 1.0, ood_fraction: float = 0.0) -> Splits:
  """Splits ``train`` into a fixed pool and validation set.

  Args:
    train: source training split.
    test: test split (optionally subsampled to ``test_size``; always balanced as given).
    seed: split seed (NumPy ``default_rng``: the split is part of the data, not model randomness).
    val_size: labeled validation examples for early stopping, drawn uniformly from ``train``
      before any imbalance is applied to the pool.
    pool_size: keep at most this many in-distribution pool points (default: all remaining).
    imbalance_ratio: ``>= 1``; ratio between the most and least frequent pool class.
    ood_fraction: in ``[0, 1)``; OOD samples appended to the pool, as a fraction of the pool size.
      They are pool images with their pixels randomly permuted (in-range intensities, no object).

  Returns:
    :class:`Splits`.
  """
  if val_size < 0 or val_size >= len(train):
    raise ValueError(f"val_size={val_size} must be in [0, {len(train)})")
  if imbalance_ratio < 1:
    raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
  if not 0 <= ood_fraction < 1:
    raise ValueError(f"ood_fraction must be in [0, 1), got {ood_fraction}")
  if train.y.ndim > 1 and (imbalance_ratio > 1 or ood_fraction > 0):
    raise ValueError(f"imbalance_ratio and ood_fraction need one class per item; these labels "
                     f"are shaped {train.y.shape[1:]} per item (keep them at 1 and 0)")
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(train))
  val_idx, pool_idx = order[:val_size], order[val_size:]
  if imbalance_ratio > 1:
    y = train.y[pool_idx]
    counts = np.bincount(y, minlength=train.num_classes)
    keep = long_tail_counts(counts, imbalance_ratio)
    pool_idx = np.concatenate([pool_idx[y == c][:keep[c]] for c in range(train.num_classes)])
    pool_idx = rng.permutation(pool_idx)
  if pool_size is not None:
    if pool_size < 1:
      raise ValueError(f"pool_size must be positive, got {pool_size}")
    pool_idx = pool_idx[:pool_size]
  x, y, source = train.x[pool_idx], train.y[pool_idx], pool_idx.astype(np.int64)
  n_ood = int(round(ood_fraction * len(pool_idx)))
  if n_ood:
    base = x[rng.choice(len(pool_idx), n_ood, replace=False)].reshape(n_ood, -1)
    ood = np.take_along_axis(base, rng.permuted(np.tile(np.arange(base.shape[1]), (n_ood, 1)),
                                                axis=1), axis=1).reshape((n_ood, *x.shape[1:]))
    perm = rng.permutation(len(pool_idx) + n_ood)
    x = np.concatenate([x, ood])[perm]
    y = np.concatenate([y, np.full(n_ood, OOD_LABEL, np.int32)])[perm]
    source = np.concatenate([source, np.full(n_ood, -1)])[perm]
  if test_size is not None:
    test = Dataset(test.x[:test_size], test.y[:test_size], test.num_classes)
  return Splits(pool=Dataset(x, y, train.num_classes),
                val=Dataset(train.x[val_idx], train.y[val_idx], train.num_classes),
                test=test, pool_source=source)
