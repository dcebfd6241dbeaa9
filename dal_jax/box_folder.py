"""One's own detection data: a folder of images with a COCO JSON of their boxes.

Layout (dataset name ``coco:<dir>``)::

  <dir>/images/<name>.<png|jpg|...>     the images
  <dir>/annotations.json                COCO: images (file_name relative to images/), boxes,
                                        categories (their names, in id order, are the classes)
  <dir>/test/images, test/annotations.json   optional: a test split laid out the same way

Images are resized to the first image's size (boxes scaled with them, from each image's
``width`` / ``height``); an image listed without annotations has no object. Every image of
``images/`` must be listed (the pool of a simulation is labeled throughout: a project starts
from images without boxes instead). Labels are ``[N, B, 5]`` rows with ``B`` the most boxes of
an image (:mod:`dal_jax.tasks.detection`). A bad file (an image the JSON does not list or lists
without a file, a box outside its image or without size, an unknown category) is refused with
one line naming it.
"""

from __future__ import annotations

import os

import numpy as np

from dal_jax import box_answers
from dal_jax import pool as pool_lib


def _categories(obj, path: str) -> list[str]:
  cats = obj.get("categories") if isinstance(obj, dict) else None
  if not isinstance(cats, list) or not cats or not all(
      isinstance(c, dict) and isinstance(c.get("name"), str) and "id" in c for c in cats):
    raise ValueError(f"{path}: 'categories' must list {{'id', 'name'}} objects (the classes)")
  return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def _split(root: str, classes: list[str] | None, size=None):
  from PIL import Image

  images_dir, path = os.path.join(root, "images"), os.path.join(root, "annotations.json")
  if not os.path.isdir(images_dir) or not os.path.isfile(path):
    raise ValueError(f"COCO folder {root!r} needs images/ and annotations.json")
  obj = box_answers.load_json(path, "COCO")
  if not box_answers.is_coco(obj):
    raise ValueError(f"{path}: not a COCO file (no 'images' and 'annotations')")
  classes = classes or _categories(obj, path)
  files = sorted(f for f in os.listdir(images_dir)
                 if not f.startswith(".") and f.lower().endswith(pool_lib.IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f"{images_dir!r} holds no images ({', '.join(pool_lib.IMAGE_EXTENSIONS)})")
  if size is None:
    with Image.open(os.path.join(images_dir, files[0])) as first:
      size = (first.size[1], first.size[0])
      channels = 1 if first.mode in ("L", "1", "I", "F") or first.mode.startswith("I;16") else 3
  else:
    size, channels = size
  known = set(files)
  found = {item: rows for _, item, rows in box_answers.coco_answers(
      path, obj, classes, size, lambda name: name if name in known else None)}
  missing = [f for f in files if f not in found]
  if missing:
    raise ValueError(f"{path}: image {os.path.join(images_dir, missing[0])!r} is not listed "
                     f"({len(missing)} images are not); list every image, without annotations "
                     "when it has no object")
  x = np.stack([pool_lib.decode_image(os.path.join(images_dir, f), size, channels)
                for f in files])
  return x, [found[f] for f in files], classes, (size, channels)


def _rows(found: list[list], max_boxes: int) -> np.ndarray:
  out = np.zeros((len(found), max_boxes, 5), np.int32)
  out[..., 0] = -1
  for i, rows in enumerate(found):
    if rows:
      out[i, :len(rows)] = rows
  return out


def load_coco_folder(root: str):
  """``(train, test)`` :class:`dal_jax.data.Dataset` of a COCO folder (test empty without a
  ``test/`` split): images ``[N, H, W, C]`` float32 in [0, 1], boxes ``[N, B, 5]`` int32."""
  from dal_jax import data as data_lib

  if not os.path.isdir(root):
    raise ValueError(f"COCO folder {root!r} does not exist")
  x, found, classes, geometry = _split(root, None)
  test_root = os.path.join(root, "test")
  tx, tfound = np.zeros((0, *x.shape[1:]), x.dtype), []
  if os.path.isdir(test_root):
    tx, tfound, _, _ = _split(test_root, classes, geometry)
  most = max([len(r) for r in found + tfound] + [1])
  return (data_lib.as_dataset(x, _rows(found, most), len(classes)),
          data_lib.as_dataset(tx, _rows(tfound, most), len(classes)))
