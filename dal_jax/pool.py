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
import hashlib
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
    x: ``[N, H, W, C]`` float32 in [0, 1]: an array (``.npy`` / ``.npz`` pools) or, for
      images, a :class:`dal_jax.streaming.Rows` view of the decoded-pool cache that reads
      items by index (the pool is never whole in memory).
    ids: the N stable IDs.
    paths: the N source files (``""`` for array rows).
    known: ID -> class name for items that come labeled (class folders, manifest labels).
    skipped: ``(path, reason)`` of files that are not in the pool: undecodable images, missing
      files and dangling links, names that are not UTF-8 or hold a line break.
    digests: the N items' content digests (SHA-256 of the file's bytes, or of an array row), so
      a project notices an item whose content changed under the same ID.
  """

  x: np.ndarray
  ids: list[str]
  paths: list[str]
  known: dict[str, str]
  skipped: list[tuple[str, str]]
  digests: list[str]


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


def _bad_name(name: str) -> str | None:
  """Why a file name cannot be an item ID (IDs go into CSV, JSON and Label Studio), or None."""
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    return "its name is not valid UTF-8; rename it"
  if any(c in name for c in "\r\n\x00"):
    return "its name holds a line break; rename it"
  return None


def _scan_folder(root: str, class_names, labels_from_folders: bool,
                 skipped: list[tuple[str, str]]) -> list[_Item]:
  items = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in sorted(filenames):
      if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root).replace(os.sep, "/")
      reason = _bad_name(rel)
      if reason:
        skipped.append((ascii(path)[1:-1], reason))
        continue
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
    for field in ("path", "id", "label"):
      if row.get(field) is not None and not isinstance(row[field], str):
        raise ValueError(f"{path}, line {line_no}: '{field}' must be a string, got "
                         f"{json.dumps(row[field])}")
    item_id = str(row.get("id") or row["path"])
    reason = _bad_name(item_id)
    if reason:
      raise ValueError(f"{path}, line {line_no}: id {item_id!r} cannot be used: "
                       + reason.replace("its name", "it"))
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
    try:
      x = loaded[key]
      ids = [str(i) for i in loaded["ids"].reshape(-1)] if "ids" in loaded else None
      ykey = "y" if "y" in loaded else "labels" if "labels" in loaded else None
      labels = loaded[ykey] if ykey else None
    except Exception as e:  # zipfile, numpy and pickle refusals of damaged members
      raise ValueError(f"{path}: a member cannot be read ({type(e).__name__}: {e}); arrays "
                       "must be plain numbers or strings") from None
  else:
    x = loaded
  if x.dtype.kind not in "uif" or x.dtype.kind == "f" and x.dtype.itemsize > 8:
    raise ValueError(f"{path}: pool arrays must hold numbers (uint8, or floats in [0, 1]); got "
                     f"dtype {x.dtype}")
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] not in (1, 3):
    raise ValueError(f"{path}: pool arrays must be [N, H, W] or [N, H, W, C] with C 1 or 3 and "
                     f"N >= 1; got {x.shape}")
  digests = [hashlib.sha256(row.tobytes()).hexdigest() for row in x]
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif x.dtype.kind != "f":
    raise ValueError(f"{path}: integer pool arrays must be uint8; got {x.dtype} (scale other "
                     "integers to floats in [0, 1])")
  x = np.asarray(x, np.float32)
  if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
    raise ValueError(f"{path}: float pool arrays must hold values in [0, 1] (or use uint8)")
  ids = ids if ids is not None else [str(i) for i in range(x.shape[0])]
  if len(ids) != x.shape[0] or len(set(ids)) != len(ids) or any(
      not i or _bad_name(i) for i in ids):
    raise ValueError(f"{path}: 'ids' must be {x.shape[0]} distinct non-empty names without "
                     "line breaks")
  known = {}
  if labels is not None:
    if labels.shape != (x.shape[0],):
      raise ValueError(f"{path}: labels must be shaped [{x.shape[0]}], got {labels.shape}")
    if labels.dtype.kind not in "iu":
      raise ValueError(f"{path}: labels must be integer class indices (-1: unlabeled); got "
                       f"dtype {labels.dtype}")
    for i, y in zip(ids, labels.tolist()):
      if y >= 0:  # negative: unlabeled
        if not class_names or y >= len(class_names):
          raise ValueError(f"{path}: label {y} of item {i!r} is not a class index "
                           f"[0, {len(class_names or [])})")
        known[i] = class_names[y]
  return Pool(x=x, ids=ids, paths=[""] * len(ids), known=known, skipped=[], digests=digests)


def _intensities(img) -> np.ndarray | None:
  """A high-bit-depth grayscale image as floats in [0, 1] scaled by its type's range (16-bit:
  65535; 32-bit integer: 2^31 - 1, or 2^32 - 1 when the TIFF says unsigned; float: as is), or
  None for 8-bit modes (Pillow converts those). Raises ``ValueError`` for values the type
  cannot mean as intensities."""
  if img.mode.startswith("I;16"):
    return np.asarray(img, np.float64) / 65535.0
  if img.mode == "I":
    arr = np.asarray(img)
    tags = getattr(img, "tag_v2", None)
    if tags is not None and tags.get(339) in (1, (1,)):  # TIFF SampleFormat: unsigned
      return arr.astype(np.uint32).astype(np.float64) / (2**32 - 1)
    if arr.min() < 0:
      raise ValueError("a signed 32-bit image with negative values (intensities must be >= 0)")
    return arr.astype(np.float64) / (2**31 - 1)
  if img.mode == "F":
    arr = np.asarray(img, np.float64)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
      raise ValueError("a floating-point image with values outside [0, 1] (or NaN)")
    return arr
  return None


def decode_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
  """One image as ``[H, W, C]`` uint8: Pillow decodes, converts (L or RGB) and resizes.

  16-bit and 32-bit integer images (microscopy, medical, depth) are scaled by their type's full
  range and floating-point images are read as intensities in [0, 1], before the 8-bit
  quantisation: never saturated by a plain mode conversion."""
  from PIL import Image

  with Image.open(path) as img:
    img.load()
    wide = _intensities(img)
    if wide is not None:
      img = Image.fromarray(wide.astype(np.float32), mode="F")
      if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
      arr = np.clip(np.rint(np.asarray(img, np.float64) * 255), 0, 255).astype(np.uint8)
      return arr[..., None] if channels == 1 else np.repeat(arr[..., None], 3, axis=-1)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size[1], size[0]):
      img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, np.uint8)
  return arr[..., None] if channels == 1 else arr


def _decode_all(items: list[_Item], size, channels, progress: bool):
  """``(image [H, W, C] uint8, True or the reason it cannot be decoded)`` per item, one at a
  time (the pool is never whole in memory; an undecodable image's record holds zeros)."""
  from tqdm import tqdm  # a dependency of tensorflow-datasets

  for item in tqdm(items, desc="decoding images", unit="img", disable=not progress,
                   file=sys.stderr):
    try:
      yield decode_image(item.path, size, channels), True
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
      yield np.zeros((*size, channels), np.uint8), f"{type(e).__name__}: {e}"


class DecodedImages:
  """The decoded pool's records read by index (tfds random access over its ``array_record``
  files): ``read(positions) -> [k, H, W, C]`` float32 in [0, 1], positions among the kept
  items. The pool's ``x`` is a :class:`dal_jax.streaming.Rows` view of it."""

  def __init__(self, source, records: np.ndarray, item_shape: tuple[int, ...], where: str):
    self.source, self.records = source, np.asarray(records, np.int64)
    self.item_shape, self.where = tuple(item_shape), where

  def read(self, positions) -> np.ndarray:
    idx = self.records[np.asarray(positions, np.int64).reshape(-1)].tolist()
    if not idx:
      return np.zeros((0, *self.item_shape), np.float32)
    try:
      images = np.stack([r["image"] for r in self.source.__getitems__(idx)])
      if images.shape[1:] != self.item_shape:
        raise ValueError(f"holds {images.shape}")
    except Exception as e:  # array_record / tfds raise many types for damaged files
      raise ValueError(f"the decoded-pool cache {self.where} is damaged ({type(e).__name__}); "
                       "delete that folder and it is decoded again") from None
    return images.astype(np.float32) / 255.0


def file_digest(path: str) -> str:
  """SHA-256 of a file's bytes (hex)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _cached_decode(items: list[_Item], size, channels, data_dir, progress: bool):
  """Decoded images through the tfds cache keyed by the files' content and the target shape:
  ``(tfds source of the n records, its folder, {path: reason} of undecodable files,
  digests [n])``."""
  from dal_jax import _pool_builder

  digests = [file_digest(it.path) for it in items]
  h = hashlib.sha256()
  for it, d in zip(items, digests):
    h.update(f"{os.path.basename(it.path)}\0{d}\0".encode())
  key = f"{h.hexdigest()[:12]}_{size[0]}x{size[1]}x{channels}"
  builder = _pool_builder.pool_builder(key, items, size, channels, data_dir,
                                       lambda: _decode_all(items, size, channels, progress),
                                       progress=progress)
  try:
    source = builder.as_data_source()["train"]
    reasons = json.loads(builder.info.metadata["skipped"]) if builder.info.metadata else {}
    if len(source) != len(items) or not isinstance(reasons, dict):
      raise ValueError(f"holds {len(source)} records")
  except Exception as e:  # array_record / tfds raise many types for damaged files
    raise ValueError(f"the decoded-pool cache {builder.data_dir} is damaged "
                     f"({type(e).__name__}); delete that folder and it is decoded again"
                     ) from None
  return source, str(builder.data_dir), reasons, digests


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
  unusable: list[tuple[str, str]] = []
  if os.path.isdir(source):
    items = _scan_folder(source, class_names, labels_from_folders, unusable)
  elif not os.path.exists(source):
    raise ValueError(f"pool source {source!r} does not exist (a folder of images, .npy/.npz, or "
                     ".csv/.jsonl manifest)")
  elif source.endswith((".npy", ".npz")):
    return _load_array(source, class_names)
  elif source.endswith((".csv", ".jsonl")):
    items = _scan_manifest(source)
  else:
    raise ValueError(f"pool source {source!r}: expected a folder, .npy/.npz, or .csv/.jsonl")
  for it in items:
    if not os.path.isfile(it.path):
      unusable.append((it.path, "dangling link" if os.path.islink(it.path) else "missing file"))
  missing = {p for p, _ in unusable}
  items = [it for it in items if it.path not in missing]
  if items:
    source, where, reasons, digests = _cached_decode(items, tuple(image_size), channels,
                                                     data_dir, progress)
  else:
    source, where, reasons, digests = None, "", {}, []
  keep = [i for i, it in enumerate(items) if it.path not in reasons]
  skipped = unusable + [(it.path, f"cannot decode ({reasons[it.path]})") for it in items
                        if it.path in reasons]
  for path, reason in skipped:
    print(f"dal_jax: skipped {path}: {reason}", file=sys.stderr, flush=True)
  if not keep:
    raise ValueError(f"pool {source!r}: none of its {len(items) + len(unusable)} images could "
                     "be read" + (f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
  bad = {it.label for it in items if it.label is not None and class_names
         and it.label not in class_names}
  if bad:
    raise ValueError(f"pool {source!r}: labels {sorted(bad)} are not among the classes "
                     f"{class_names}")
  kept = [items[i] for i in keep]
  from dal_jax import streaming

  images = DecodedImages(source, np.array(keep), (*image_size, channels), where)
  x = streaming.Rows(images, np.arange(len(keep)))
  x.numpy() if len(keep) <= 1 else x[[0, len(keep) - 1]].numpy()  # a damaged cache: now
  return Pool(x=x, ids=[it.id for it in kept],
              paths=[it.path for it in kept],
              known={it.id: it.label for it in kept if it.label is not None}, skipped=skipped,
              digests=[digests[i] for i in keep])
