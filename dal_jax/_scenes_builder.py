"""The TF-free tfds builder of Fashion-MNIST scenes (:mod:`dal_jax.scenes`): scenes composed from
the IDX items of a directory, written as ``array_record`` shards under
``data_dir/dal_scenes/<content key and settings>/`` and read back with tfds random access."""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import tensorflow_datasets as tfds

from dal_jax import _idx_builder
from dal_jax import scenes


class SceneConfig(tfds.core.BuilderConfig):
  """One set of scenes: the source directory and the settings."""

  def __init__(self, *, source_dir: str, train: int, test: int, size: int, seed: int, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.source_dir, self.train, self.test = source_dir, train, test
    self.size, self.seed = size, seed


class DalScenes(tfds.core.GeneratorBasedBuilder):
  """Scenes of IDX items with per-pixel masks and item boxes."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = []  # one config per source and settings, made by `scenes_builder`

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=f"scenes of the IDX items in {c.source_dir}",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(c.size, c.size, 1), dtype=np.uint8),
            "mask": tfds.features.Tensor(shape=(c.size, c.size), dtype=np.uint8),
            "boxes": tfds.features.Tensor(shape=(scenes.MAX_ITEMS, 5), dtype=np.int32)}),
        disable_shuffling=True)  # record i is scene i

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    c = self.builder_config
    return {"train": self._generate_examples("train", c.train, c.seed),
            "test": self._generate_examples("test", c.test, c.seed + 1)}

  def _generate_examples(self, split, n, seed):
    images, labels = _idx_builder.read_idx_split(self.builder_config.source_dir, split)
    s = scenes.compose_scenes(images, labels, n, seed=seed, size=self.builder_config.size)
    for i in range(n):
      yield i, {"image": s.x[i], "mask": s.masks[i], "boxes": s.boxes[i]}


def scenes_builder(source_dir: str, data_dir: str | None, *, train: int, test: int, size: int,
                   seed: int) -> DalScenes:
  key = _idx_builder.content_key(_idx_builder.source_files(source_dir))
  config = SceneConfig(name=f"scenes_{key}_{train}_{test}_{size}_{seed}", source_dir=source_dir,
                       train=train, test=test, size=size, seed=seed,
                       description="Fashion-MNIST scenes")
  builder = DalScenes(config=config, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    print(f"dal_jax: composing {train} + {test} scenes from {source_dir} into "
          f"{builder.data_dir}", file=sys.stderr, flush=True)
    # tfds prints "Downloading and preparing dataset" although nothing is downloaded: hidden.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
