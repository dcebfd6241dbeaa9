"""One's own segmentation data: a folder of images with PNG masks beside them.

Layout (dataset name ``masks:<dir>``)::

  <dir>/images/<name>.<png|jpg|...>     the images (all of one size)
  <dir>/masks/<name>.png                their masks, same base name
  <dir>/classes.txt                     optional: one class name per line (class i = line i)
  <dir>/test/images, <dir>/test/masks   optional: a test split laid out the same way

A mask is an index image (Pillow mode ``L`` or ``P``: a palette PNG's indices are the classes)
whose pixel values are the classes; 255 marks a pixel nobody labeled (-1, not trained on). The
number of classes is the length of ``classes.txt``, else the largest class present plus one.
A bad folder (an image without a mask, a mask without an image, sizes that differ, a mask that is
not an index image, a class outside ``classes.txt``) is refused with one line naming the file.
"""

from __future__ import annotations

import os

import numpy as np

from dal_jax import pool as pool_lib

NOT_LABELED = 255  # a mask pixel nobody labeled


def read_mask(path: str) -> np.ndarray:
  """``[H, W]`` int32 classes of an index PNG (255 -> -1)."""
  from PIL import Image

  try:
    with Image.open(path) as img:
      img.load()
      if img.mode not in ("L", "P"):
        raise ValueError(f"mask {path!r} is a {img.mode} image; masks are index images (mode L "
                         "or P: pixel value = class, 255 = not labeled)")
      arr = np.asarray(img, np.uint8)
  except OSError as e:
    raise ValueError(f"mask {path!r} cannot be read: {e}") from None
  return np.where(arr == NOT_LABELED, -1, arr.astype(np.int32))


def _split(root: str) -> list[tuple[str, str, str]]:
  """``(name, image path, mask path)`` of a split's images, sorted by name."""
  images_dir, masks_dir = os.path.join(root, "images"), os.path.join(root, "masks")
  for d in (images_dir, masks_dir):
    if not os.path.isdir(d):
      raise ValueError(f"mask folder {root!r} needs images/ and masks/ subfolders; {d!r} is "
                       "missing")
  images = {os.path.splitext(f)[0]: os.path.join(images_dir, f) for f in os.listdir(images_dir)
            if not f.startswith(".") and f.lower().endswith(pool_lib.IMAGE_EXTENSIONS)}
  masks = {os.path.splitext(f)[0]: os.path.join(masks_dir, f) for f in os.listdir(masks_dir)
           if not f.startswith(".") and f.lower().endswith(".png")}
  if not images:
    raise ValueError(f"{images_dir!r} holds no images ({', '.join(pool_lib.IMAGE_EXTENSIONS)})")
  for name in sorted(set(images) ^ set(masks)):
    if name in images:
      raise ValueError(f"image {images[name]!r} has no mask {os.path.join(masks_dir, name)}.png")
    raise ValueError(f"mask {masks[name]!r} has no image of the same name in {images_dir!r}")
  return [(name, images[name], masks[name]) for name in sorted(images)]


def _read(items, size, channels) -> tuple[np.ndarray, np.ndarray]:
  from PIL import Image

  xs, ys = [], []
  for _, image_path, mask_path in items:
    with Image.open(image_path) as img:
      if img.size != (size[1], size[0]):
        raise ValueError(f"image {image_path!r} is {img.size[0]}x{img.size[1]}; every image of "
                         f"the folder must be {size[1]}x{size[0]} (the first one's size)")
    y = read_mask(mask_path)
    if y.shape != tuple(size):
      raise ValueError(f"mask {mask_path!r} is {y.shape[1]}x{y.shape[0]}; its image is "
                       f"{size[1]}x{size[0]}")
    xs.append(pool_lib.decode_image(image_path, size, channels))
    ys.append(y)
  return np.stack(xs), np.stack(ys)


def load_mask_folder(root: str):
  """``(train, test)`` :class:`dal_jax.data.Dataset` of a mask folder (test empty without a
  ``test/`` split); images as ``[N, H, W, C]`` float32 in [0, 1], masks ``[N, H, W]`` int32."""
  from PIL import Image

  from dal_jax import data as data_lib

  if not os.path.isdir(root):
    raise ValueError(f"mask folder {root!r} does not exist")
  train_items = _split(root)
  test_root = os.path.join(root, "test")
  test_items = _split(test_root) if os.path.isdir(test_root) else []
  with Image.open(train_items[0][1]) as first:
    size = (first.size[1], first.size[0])
    channels = 1 if first.mode in ("L", "1", "I", "F") or first.mode.startswith("I;16") else 3
  x, y = _read(train_items, size, channels)
  tx, ty = (_read(test_items, size, channels) if test_items else
            (np.zeros((0, *x.shape[1:]), np.uint8), np.zeros((0, *y.shape[1:]), np.int32)))
  names_path = os.path.join(root, "classes.txt")
  if os.path.exists(names_path):
    with open(names_path, encoding="utf-8") as f:
      num_classes = len([line for line in f.read().splitlines() if line.strip()])
  else:
    num_classes = max(2, int(max(y.max(), ty.max() if ty.size else 0)) + 1)
  for (items, masks) in ((train_items, y), (test_items, ty)):
    bad = np.nonzero((masks >= num_classes).reshape(len(masks), -1).any(axis=1))[0]
    if bad.size:
      i = int(bad[0])
      source = "classes.txt" if os.path.exists(names_path) else "the largest class found"
      raise ValueError(f"mask {items[i][2]!r} has class {int(masks[i].max())}; the classes are "
                       f"0..{num_classes - 1} ({source}) and 255 = not labeled")
  return data_lib.as_dataset(x, y, num_classes), data_lib.as_dataset(tx, ty, num_classes)
