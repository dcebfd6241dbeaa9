"""A pool of one's own data: a folder of images, a ``.npy`` / ``.npz`` array, or a manifest.

Every item has a stable ID that users see instead of pool positions:

* a folder (searched recursively; PNG, JPEG, BMP, GIF, TIFF, WebP): the ID is the path relative
  to the folder (``shirts/0001.png``). With ``labels_from_folders`` an item whose first folder
  is a class name starts out labeled with that class;
* ``.npy`` (``[N, H, W]`` or ``[N, H, W, C]``) or ``.npz`` (``x`` or ``images``; optional ``y``
  or ``labels`` as class indices, ``ids``): IDs are ``ids`` or the row numbers ``"0"``, ``"1"``..;
* a ``.csv`` or ``.jsonl`` manifest with a ``path`` column (relative to the manifest's folder)
  and optional ``id`` (default: the path) and ``label`` (a class name) columns.

Images are decoded with Pillow, converted to grayscale or RGB and resized to the configured
shape; the decoded pool is cached as tfds ``array_record`` files (like the IDX path) under a key
derived from every file's relative path, size and bytes and the target shape, so a changed file
is decoded again and two folders with the same name are never confused. An image that cannot be
decoded is **skipped and named** (it is not in the pool); a source with no decodable image is
refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import NamedTuple

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class Pool(NamedTuple):
  """A decoded pool.

  Attributes:
    x: ``[N, H, W, C]`` float32 in [0, 1].
    ids: the N stable IDs.
    paths: the N source files (``""`` for array rows).
    known: ID -> class name for items that come labeled (class folders, manifest labels).
    skipped: ``(path, reason)`` of images that could not be decoded.
  """

  x: np.ndarray
  ids: list[str]
  paths: list[str]
  known: dict[str, str]
  skipped: list[tuple[str, str]]


class _Item(NamedTuple):
  id: str
  path: str
  label: str | None


def _read_text(path: str) -> str:
  try:
    with open(path, encoding="utf-8-sig") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _scan_folder(root: str, class_names, labels_from_folders: bool) -> list[_Item]:
  items = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in sorted(filenames):
      if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root).replace(os.sep, "/")
      label = None
      if labels_from_folders and "/" in rel:
        top = rel.split("/", 1)[0]
        label = top if class_names and top in class_names else None
      items.append(_Item(rel, path, label))
  items.sort(key=lambda it: it.id)
  if not items:
    raise ValueError(f"pool folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
  return items


def _scan_manifest(path: str) -> list[_Item]:
  text = _read_text(path)
  base = os.path.dirname(os.path.abspath(path))
  if path.endswith(".jsonl"):
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          rows.append((line_no, json.loads(line)))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}, line {line_no}: not JSON ({e.msg})") from None
  else:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "path" not in reader.fieldnames:
      raise ValueError(f"{path}: a manifest needs a 'path' column (and optional 'id', 'label'); "
                       f"got columns {reader.fieldnames}")
    rows = [(i + 2, r) for i, r in enumerate(reader)]
  items, seen = [], set()
  for line_no, row in rows:
    if not isinstance(row, dict) or not row.get("path"):
      raise ValueError(f"{path}, line {line_no}: no 'path'")
    item_id = str(row.get("id") or row["path"])
    if item_id in seen:
      raise ValueError(f"{path}, line {line_no}: duplicate id {item_id!r}")
    seen.add(item_id)
    items.append(_Item(item_id, os.path.join(base, row["path"]), row.get("label") or None))
  if not items:
    raise ValueError(f"manifest {path!r} lists no items")
  return items


def _load_array(path: str, class_names) -> Pool:
  try:
    loaded = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise ValueError(f"{path}: not a readable .npy/.npz file ({e})") from None
  ids, labels = None, None
  if isinstance(loaded, np.lib.npyio.NpzFile):
    key = "x" if "x" in loaded else "images" if "images" in loaded else None
    if key is None:
      raise ValueError(f"{path}: an .npz pool needs an 'x' (or 'images') array; has "
                       f"{sorted(loaded.files)}")
    x = loaded[key]
    ids = [str(i) for i in loaded["ids"]] if "ids" in loaded else None
    ykey = "y" if "y" in loaded else "labels" if "labels" in loaded else None
    labels = loaded[ykey] if ykey else None
  else:
    x = loaded
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] not in (1, 3):
    raise ValueError(f"{path}: pool arrays must be [N, H, W] or [N, H, W, C] with C 1 or 3 and "
                     f"N >= 1; got {x.shape}")
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  x = np.asarray(x, np.float32)
  if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
    raise ValueError(f"{path}: float pool arrays must hold values in [0, 1] (or use uint8)")
  ids = ids or [str(i) for i in range(x.shape[0])]
  if len(ids) != x.shape[0] or len(set(ids)) != len(ids):
    raise ValueError(f"{path}: 'ids' must be {x.shape[0]} distinct names")
  known = {}
  if labels is not None:
    if labels.shape != (x.shape[0],):
      raise ValueError(f"{path}: labels must be shaped [{x.shape[0]}], got {labels.shape}")
    for i, y in zip(ids, labels.tolist()):
      if y >= 0:  # negative: unlabeled
        if not class_names or y >= len(class_names):
          raise ValueError(f"{path}: label {y} of item {i!r} is not a class index "
                           f"[0, {len(class_names or [])})")
        known[i] = class_names[y]
  return Pool(x=x, ids=ids, paths=[""] * len(ids), known=known, skipped=[])


def decode_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
  """One image as ``[H, W, C]`` uint8: Pillow decodes, converts (L or RGB) and resizes."""
  from PIL import Image

  with Image.open(path) as img:
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size[1], size[0]):
      img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, np.uint8)
  return arr[..., None] if channels == 1 else arr


def _decode_all(items: list[_Item], size, channels, progress: bool):
  from tqdm import tqdm  # a dependency of tensorflow-datasets

  images, ok = [], []
  for item in tqdm(items, desc="decoding images", unit="img", disable=not progress,
                   file=sys.stderr):
    try:
      images.append(decode_image(item.path, size, channels))
      ok.append(True)
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
      images.append(np.zeros((*size, channels), np.uint8))
      ok.append(f"{type(e).__name__}: {e}")
  return images, ok


def _cached_decode(items: list[_Item], size, channels, data_dir, progress: bool):
  """Decoded images through the tfds cache keyed by the files' content and the target shape."""
  from dal_jax import _idx_builder
  from dal_jax import _pool_builder

  missing = [it.path for it in items if not os.path.isfile(it.path)]
  if missing:
    raise ValueError(f"pool file {missing[0]!r} does not exist"
                     + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  key = _idx_builder.content_key([it.path for it in items])
  key = f"{key}_{size[0]}x{size[1]}x{channels}"
  builder = _pool_builder.pool_builder(key, items, size, channels, data_dir,
                                       lambda: _decode_all(items, size, channels, progress))
  source = builder.as_data_source()["train"]
  records = source.__getitems__(list(range(len(source))))
  images = np.stack([r["image"] for r in records])
  reasons = json.loads(builder.info.metadata["skipped"]) if builder.info.metadata else {}
  return images, reasons


def load_pool(source: str, *, image_size: tuple[int, int] = (28, 28), channels: int = 1,
              class_names: list[str] | None = None, labels_from_folders: bool = False,
              data_dir: str | None = None, progress: bool = True) -> Pool:
  """Loads a pool (see the module docstring for the sources).

  Args:
    source: a folder, an ``.npy`` / ``.npz`` file, or a ``.csv`` / ``.jsonl`` manifest.
    image_size: ``(H, W)`` every image is resized to.
    channels: 1 (grayscale) or 3 (RGB).
    class_names: the classes (to read labels given by folders, manifests or arrays).
    labels_from_folders: an image under a folder named like a class starts labeled.
    data_dir: tfds data directory of the decoded-pool cache (default ``~/tensorflow_datasets``).
    progress: print decoding progress on large pools.

  Raises:
    ValueError: a missing source, no images, an unreadable manifest or array.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
  if len(image_size) != 2 or min(image_size) < 1:
    raise ValueError(f"image_size must be (height, width) >= 1, got {image_size}")
  source = os.path.abspath(os.path.expanduser(source))
  if os.path.isdir(source):
    items = _scan_folder(source, class_names, labels_from_folders)
  elif not os.path.exists(source):
    raise ValueError(f"pool source {source!r} does not exist (a folder of images, .npy/.npz, or "
                     ".csv/.jsonl manifest)")
  elif source.endswith((".npy", ".npz")):
    return _load_array(source, class_names)
  elif source.endswith((".csv", ".jsonl")):
    items = _scan_manifest(source)
  else:
    raise ValueError(f"pool source {source!r}: expected a folder, .npy/.npz, or .csv/.jsonl")
  images, reasons = _cached_decode(items, tuple(image_size), channels, data_dir, progress)
  keep = [i for i, it in enumerate(items) if it.path not in reasons]
  skipped = [(it.path, reasons[it.path]) for it in items if it.path in reasons]
  for path, reason in skipped:
    print(f"dal_jax: skipped {path}: cannot decode ({reason})", file=sys.stderr, flush=True)
  if not keep:
    raise ValueError(f"pool {source!r}: none of its {len(items)} images could be decoded")
  bad = {it.label for it in items if it.label is not None and class_names
         and it.label not in class_names}
  if bad:
    raise ValueError(f"pool {source!r}: labels {sorted(bad)} are not among the classes "
                     f"{class_names}")
  kept = [items[i] for i in keep]
  return Pool(x=images[keep].astype(np.float32) / 255.0, ids=[it.id for it in kept],
              paths=[it.path for it in kept],
              known={it.id: it.label for it in kept if it.label is not None}, skipped=skipped)
