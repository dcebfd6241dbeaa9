"""A TensorFlow-free tensorflow-datasets builder that caches a decoded image pool.

Like ``_idx_builder``: the images are decoded once (Pillow, in ``dal_jax.pool``), written as
``array_record`` shards under ``data_dir/dal_image_pool/<content key>/``, and read back with tfds
random access. Record i is item i of the pool's sorted file list; the metadata names the files
that could not be decoded (their records hold zeros and are dropped by the reader).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds


class PoolConfig(tfds.core.BuilderConfig):
  """One decoded pool: its items, the target shape and the decoding function."""

  def __init__(self, *, items, size, channels, decode: Callable, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.items, self.size, self.channels, self.decode = items, size, channels, decode


class DalImagePool(tfds.core.GeneratorBasedBuilder):
  """Decoded pool images (uint8), in the order of the pool's file list."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = []  # one config per content key, made by `pool_builder`

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description="dal_jax decoded image pool",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(*c.size, c.channels), dtype=np.uint8)}),
        metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    # Decoded one image at a time; the files that cannot be decoded are named in the metadata
    # (written with the dataset info after the records).
    skipped = {}
    for i, (item, (image, reason)) in enumerate(zip(self.builder_config.items,
                                                    self.builder_config.decode())):
      if reason is not True:
        skipped[item.path] = reason
      yield i, {"image": image}
    self.info.metadata["skipped"] = json.dumps(skipped)


def pool_builder(key: str, items, size, channels, data_dir, decode, *, progress: bool = True
                 ) -> DalImagePool:
  """The (prepared, if needed) builder of a pool whose content key is ``key``."""
  config = PoolConfig(name=f"pool_{key}", items=items, size=size, channels=channels,
                      decode=decode, description="decoded pool")
  builder = DalImagePool(config=config, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared() and progress:
    print(f"dal_jax: decoding {len(items)} images into {builder.data_dir} (once per content)",
          file=sys.stderr, flush=True)
  if not builder.is_prepared():
    # tfds prints "Downloading and preparing dataset" although nothing is downloaded: hidden
    # (and stdout is the tool's answer).
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
