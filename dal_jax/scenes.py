"""Fashion-MNIST scenes: a segmentation (and detection) benchmark made offline from real images.

Each scene is a ``size x size`` grayscale canvas holding 1 to 4 Fashion-MNIST items at random
positions and scales. Its mask gives every pixel the class of the item whose pixels are on there
(intensity above ``threshold``; a later item covers an earlier one) plus one, and 0 (background)
elsewhere: 11 classes for Fashion-MNIST. Each scene also lists its items' boxes (class, top,
left, bottom, right of the item's "on" pixels; -1 rows pad to ``max_items``), for detection.
Scenes are a deterministic function of the seed and the source images.

:func:`scenes_builder` prepares them once through a TF-free tfds builder into ``array_record``
files (like the IDX datasets), train scenes from the source's train split and test scenes from
its test split; :func:`load_scenes` reads them back as arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


MAX_ITEMS = 4  # items per scene at most (the boxes' rows)
NUM_CLASSES = 11  # of a Fashion-MNIST scene's masks: background and the 10 item classes


class Scenes(NamedTuple):
  """``x`` ``[n, size, size, 1]`` uint8; ``masks`` ``[n, size, size]`` uint8 (0 background,
  class + 1 on items); ``boxes`` ``[n, max_items, 5]`` int32 rows (class, top, left, bottom,
  right), -1 rows for absent items (bottom/right exclusive)."""

  x: np.ndarray
  masks: np.ndarray
  boxes: np.ndarray


def compose_scenes(images: np.ndarray, labels: np.ndarray, n: int, *, seed: int, size: int = 64,
                   max_items: int = MAX_ITEMS, scale: tuple[float, float] = (0.7, 1.5),
                   threshold: float = 0.25) -> Scenes:
  """``n`` scenes from ``images`` ``[M, h, w]`` or ``[M, h, w, 1]`` uint8 with ``labels`` ``[M]``.

  Args:
    images, labels: the source items and their classes.
    n: scenes to make.
    seed: NumPy ``default_rng`` seed (the scenes are a function of it and the source).
    size: canvas side in pixels.
    max_items: at most this many items per scene (at least 1).
    scale: an item's side is ``round(h · u)``, ``u`` uniform in this range (capped to the
      canvas).
    threshold: an item's pixel is "on" (in the mask) above this fraction of 255.
  """
  from PIL import Image

  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels) or not len(images):
    raise ValueError(f"scene items must be uint8 [M, h, w] with M labels, got {images.dtype} "
                     f"{images.shape} and {np.shape(labels)}")
  if not (size >= images.shape[1] // 2 and max_items >= 1 and 0 < scale[0] <= scale[1]
          and 0 <= threshold < 1 and n >= 0):
    raise ValueError(f"bad scene settings: size={size}, max_items={max_items}, scale={scale}, "
                     f"threshold={threshold}, n={n}")
  rng = np.random.default_rng(seed)
  x = np.zeros((n, size, size), np.uint8)
  masks = np.zeros((n, size, size), np.uint8)
  boxes = np.full((n, max_items, 5), -1, np.int32)
  for i in range(n):
    for j in range(int(rng.integers(1, max_items + 1))):
      k = int(rng.integers(len(images)))
      side = int(min(size, max(4, round(images.shape[1] * rng.uniform(*scale)))))
      item = np.asarray(Image.fromarray(images[k]).resize((side, side), Image.BILINEAR))
      top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
      window = (slice(top, top + side), slice(left, left + side))
      on = item > threshold * 255
      x[i][window] = np.maximum(x[i][window], item)
      masks[i][window] = np.where(on, int(labels[k]) + 1, masks[i][window])
      rows, cols = np.nonzero(on)
      if rows.size:
        boxes[i, j] = (int(labels[k]), top + rows.min(), left + cols.min(), top + rows.max() + 1,
                       left + cols.max() + 1)
  return Scenes(x=x[..., None], masks=masks, boxes=boxes)


def scenes_builder(source_dir: str, data_dir: str | None, *, train: int, test: int,
                   size: int = 64, seed: int = 0):
  """The (prepared, if needed) tfds builder of scenes made from the IDX files in
  ``source_dir``, keyed by the files' content and the settings."""
  from dal_jax import _scenes_builder

  return _scenes_builder.scenes_builder(source_dir, data_dir, train=train, test=test, size=size,
                                        seed=seed)


def load_scenes(source_dir: str, data_dir: str | None = None, *, train: int = 5000,
                test: int = 1000, size: int = 64, seed: int = 0) -> tuple[Scenes, Scenes]:
  """``(train, test)`` scenes, prepared once into ``data_dir`` and read back (tfds random
  access)."""
  sources = scenes_builder(source_dir, data_dir, train=train, test=test, size=size,
                           seed=seed).as_data_source()

  def read(split):
    records = sources[split].__getitems__(list(range(len(sources[split]))))
    return Scenes(x=np.stack([r["image"] for r in records]),
                  masks=np.stack([r["mask"] for r in records]),
                  boxes=np.stack([r["boxes"] for r in records]))

  return read("train"), read("test")
