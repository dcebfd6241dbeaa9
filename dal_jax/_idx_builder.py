"""A TensorFlow-free tensorflow-datasets builder for MNIST-format IDX files.

tfds's stock ``fashion_mnist`` builder needs TensorFlow to prepare and its checksums do not match
the files Debian ships, so dal_jax prepares IDX files with this builder: numpy reads the IDX files
(gzipped or not), tfds writes ``array_record`` shards, and readers use tfds random access
(``builder.as_data_source()``), all offline.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): big-endian header
``0x00 0x00 <dtype=0x08 (uint8)> <ndim>``, then ``ndim`` uint32 sizes, then the data.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import hashlib
import os
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(directory: str, stem: str) -> str:
  for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"IDX file {stem!r} (or {stem}.gz) not found in {directory!r}")


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into a uint8 array.

  Raises:
    ValueError: if the file is not a valid uint8 IDX file (bad magic, truncated data).
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
    raise ValueError(f"corrupt IDX file {path!r}: {e}") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
    raise ValueError(f"corrupt IDX file {path!r}: bad magic number {raw[:4].hex()} "
                     "(expected 0000 08 0n for unsigned-byte data)")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"corrupt IDX file {path!r}: truncated header")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  size = int(np.prod(shape))
  if len(raw) - header != size:
    raise ValueError(f"corrupt IDX file {path!r}: header promises {size} bytes of data for shape "
                     f"{shape}, file holds {len(raw) - header}")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_idx_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns ``(images [N, H, W, 1] uint8, labels [N] uint8)`` for ``train`` or ``test``."""
  image_stem, label_stem = SPLIT_FILES[split]
  image_path, label_path = _find(directory, image_stem), _find(directory, label_stem)
  images, labels = read_idx(image_path), read_idx(label_path)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
    raise ValueError(f"IDX files in {directory!r} ({split}) disagree: images {images.shape}, "
                     f"labels {labels.shape}")
  if images.shape[0] == 0:
    raise ValueError(f"IDX file {image_path!r} holds 0 images")
  return images, labels


def source_files(directory: str) -> list[str]:
  """The four IDX files of a directory (train/test images and labels)."""
  return [_find(directory, stem) for stems in SPLIT_FILES.values() for stem in stems]


def check_idx_dir(directory: str) -> int:
  """Reads both splits and checks they make a classification dataset; returns C.

  Raises:
    ValueError: naming the file: no images, a single class, test labels outside the train
      labels' range, or image shapes that differ between the splits.
  """
  train_x, train_y = read_idx_split(directory, "train")
  test_x, test_y = read_idx_split(directory, "test")
  num_classes = int(train_y.max()) + 1
  if len(np.unique(train_y)) < 2:
    raise ValueError(f"IDX file {_find(directory, SPLIT_FILES['train'][1])!r}: every training "
                     f"label is {int(train_y[0])}; a classification pool needs >= 2 classes")
  if int(test_y.max()) >= num_classes:
    bad = int(np.argmax(test_y >= num_classes))
    raise ValueError(f"IDX file {_find(directory, SPLIT_FILES['test'][1])!r}: test label "
                     f"{int(test_y[bad])} (row {bad}) is outside the training labels' range "
                     f"[0, {num_classes})")
  if train_x.shape[1:] != test_x.shape[1:]:
    raise ValueError(f"IDX files in {directory!r}: train images are {train_x.shape[1:]}, test "
                     f"images {test_x.shape[1:]}")
  return num_classes


def config_name(name: str) -> str:
  """A tfds-safe config name for a user-given dataset name."""
  clean = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
  if not clean or not clean[0].isalpha():
    clean = "d_" + clean
  return clean


class IdxConfig(tfds.core.BuilderConfig):
  """One IDX dataset: its name and the directory holding its four IDX files."""

  def __init__(self, *, source_dir: str, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.source_dir = source_dir


class DalIdxImages(tfds.core.GeneratorBasedBuilder):
  """Images and labels from MNIST-format IDX files (Fashion-MNIST, MNIST, KMNIST, ...)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = []  # configs are made per dataset by `idx_builder`

  def _info(self) -> tfds.core.DatasetInfo:
    train_x, train_y = read_idx_split(self.builder_config.source_dir, "train")
    num_classes = int(train_y.max()) + 1
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"IDX images from {self.builder_config.source_dir}",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=train_x.shape[1:], dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=num_classes),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # record i is row i of the IDX files
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    return {split: self._generate_examples(split) for split in SPLIT_FILES}

  def _generate_examples(self, split):
    images, labels = read_idx_split(self.builder_config.source_dir, split)
    for i in range(labels.shape[0]):
      yield i, {"image": images[i], "label": int(labels[i])}


def content_key(paths: list[str], root: str | None = None) -> str:
  """12 hex digits of SHA-256 over each file's (relative) name, size and bytes: the key of a
  prepared copy, so a changed file is prepared anew and two directories of the same name are
  never confused."""
  h = hashlib.sha256()
  for path in paths:
    name = os.path.relpath(path, root) if root else os.path.basename(path)
    h.update(f"{name}\0{os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()[:12]


def idx_builder(name: str, source_dir: str, data_dir: str | None) -> DalIdxImages:
  """Returns the (prepared, if needed) tfds builder for IDX files in ``source_dir``, keyed by
  the files' content (``<name>_<content key>``)."""
  key = content_key(source_files(source_dir))
  config = IdxConfig(name=f"{config_name(name)}_{key}", source_dir=source_dir,
                     description=f"IDX files from {source_dir}")
  builder = DalIdxImages(config=config, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    check_idx_dir(source_dir)
    print(f"dal_jax: preparing {source_dir} (content key {key}) into {builder.data_dir}",
          file=sys.stderr, flush=True)
    # tfds prints "Downloading and preparing dataset" although nothing is downloaded: hidden.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
