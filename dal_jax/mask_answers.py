"""Mask answers: the files an annotator's masks come in and go out as.

* **Index PNGs** (any tool that paints masks): a Pillow mode ``L`` or ``P`` image of the pool's
  size whose pixel values are class indices, 255 where the annotator labeled nothing
  (:func:`write_mask` writes them with a palette, so they open in colour; :func:`read_answer_png`
  reads and checks them).
* **Label Studio brush and polygon results**: a ``brushlabels`` result holds a mask as Label
  Studio's RLE, the bit-packed run-length code of thi.ng's ``rle-pack`` that the Label Studio
  frontend writes (a 32-bit count, a 5-bit word size minus one, four 4-bit run-length field sizes
  minus one, then blocks: one bit repeat/literal, two bits choosing the field size, the run
  length minus one, then one word repeated or the literal words), over the RGBA bytes of the
  image with the mask in the alpha channel. :func:`rle_encode` / :func:`rle_decode` implement
  that code from its description; :func:`brush_rle` / :func:`brush_mask` go between it and a
  boolean ``[H, W]`` mask. A ``polygonlabels`` result is a polygon in percent of the image's
  width and height, filled with Pillow.

:func:`results_to_mask` turns one annotation's results into a class mask: pixels no brush stroke
or polygon covers are the first class (the background), later results paint over earlier ones.
"""

from __future__ import annotations

import io
import os

import numpy as np

from dal_jax import masks as masks_lib

NOT_LABELED = masks_lib.NOT_LABELED
BRUSH_CONTROL = "label"  # the BrushLabels / PolygonLabels name in a project's labeling config
_RLE_SIZES = (3, 4, 8, 16)


class _BitWriter:

  def __init__(self):
    self.bits: list[str] = []

  def write(self, value: int, size: int) -> None:
    self.bits.append(format(int(value), f"0{size}b"))

  def getvalue(self) -> list[int]:
    s = "".join(self.bits)
    s += "0" * (-len(s) % 8)
    return [int(s[i:i + 8], 2) for i in range(0, len(s), 8)]


def rle_encode(values: np.ndarray) -> list[int]:
  """Label Studio's brush RLE of a 1-D ``uint8`` array: the header, then one repeat block per
  run of equal values (runs longer than 65,536 split), each with the smallest length field that
  holds it."""
  values = np.asarray(values)
  if values.ndim != 1 or values.dtype != np.uint8:
    raise ValueError(f"rle_encode takes a 1-D uint8 array, got {values.dtype} {values.shape}")
  out = _BitWriter()
  out.write(len(values), 32)
  out.write(8 - 1, 5)
  for s in _RLE_SIZES:
    out.write(s - 1, 4)
  if len(values):
    change = np.nonzero(np.diff(values))[0] + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(values)]])
    for start, end in zip(starts.tolist(), ends.tolist()):
      while start < end:
        length = min(end - start, 1 << _RLE_SIZES[-1])
        field = next(i for i, s in enumerate(_RLE_SIZES) if length - 1 < (1 << s))
        out.write(1, 1)
        out.write(field, 2)
        out.write(length - 1, _RLE_SIZES[field])
        out.write(int(values[start]), 8)
        start += length
  return out.getvalue()


def rle_decode(rle) -> np.ndarray:
  """The ``uint8`` values of a Label Studio brush RLE (a list of byte values); a truncated or
  malformed code raises ``ValueError``."""
  try:
    data = bytes(int(v) for v in rle)
  except (TypeError, ValueError):
    raise ValueError("a brush 'rle' must be a list of byte values (0-255)") from None
  bits = "".join(format(b, "08b") for b in data)
  pos = 0

  def read(size):
    nonlocal pos
    if pos + size > len(bits):
      raise ValueError("a brush 'rle' ends early (truncated)")
    v = int(bits[pos:pos + size], 2) if size else 0
    pos += size
    return v

  num = read(32)
  word = read(5) + 1
  sizes = [read(4) + 1 for _ in range(4)]
  if word > 8:
    raise ValueError(f"a brush 'rle' with {word}-bit words; masks use 8-bit words")
  if num > len(bits) * (1 << 16):
    raise ValueError(f"a brush 'rle' claims {num} values, more than its {len(data)} bytes hold")
  out = np.zeros(num, np.uint8)
  i = 0
  while i < num:
    repeat = read(1)
    j = i + 1 + read(sizes[read(2)])
    if j > num:
      raise ValueError(f"a brush 'rle' runs past its {num} values")
    if repeat:
      out[i:j] = read(word)
      i = j
    else:
      while i < j:
        out[i] = read(word)
        i += 1
  return out


def brush_rle(mask: np.ndarray) -> list[int]:
  """Label Studio brush RLE of a boolean ``[H, W]`` mask (RGBA bytes, 255 where it is on)."""
  mask = np.asarray(mask, bool)
  return rle_encode(np.repeat(mask.reshape(-1).astype(np.uint8) * 255, 4))


def brush_mask(rle, height: int, width: int) -> np.ndarray:
  """Boolean ``[H, W]`` mask of a brush RLE: the alpha channel at least half opaque."""
  values = rle_decode(rle)
  if values.size != height * width * 4:
    raise ValueError(f"a brush mask of {values.size} RGBA values does not fit the image's "
                     f"{height}x{width} pixels")
  return values.reshape(height, width, 4)[..., 3] >= 128


def polygon_mask(points, height: int, width: int) -> np.ndarray:
  """Boolean ``[H, W]`` mask of a polygon given in percent of the width and height (Label
  Studio's ``points``): the pixels whose centres lie inside it (even-odd rule)."""
  pts = np.asarray(points, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
    raise ValueError("a polygon needs at least 3 [x, y] points in percent of the image")
  x, y = pts[:, 0] * width / 100.0, pts[:, 1] * height / 100.0
  cy, cx = np.mgrid[0:height, 0:width] + 0.5
  inside = np.zeros((height, width), bool)
  for i in range(len(pts)):
    x1, y1, x2, y2 = x[i], y[i], x[i - 1], y[i - 1]
    if y1 == y2:
      continue
    crosses = (y1 > cy) != (y2 > cy)
    inside ^= crosses & (cx < x1 + (cy - y1) * (x2 - x1) / (y2 - y1))
  return inside


def results_to_mask(results, classes: list[str], shape: tuple[int, int]) -> np.ndarray | None:
  """One Label Studio annotation's ``result`` list -> ``[H, W]`` int32 class mask (the first class
  where nothing is painted), or None when it has no brush or polygon result. A result of a
  wrong size, an unknown class or a malformed RLE raises ``ValueError`` (without the file: the
  caller names it)."""
  h, w = shape
  mask = None
  for r in results:
    if not isinstance(r, dict) or r.get("from_name", BRUSH_CONTROL) not in (
        BRUSH_CONTROL, BRUSH_CONTROL + "_polygon"):
      continue
    kind = r.get("type")
    if kind not in ("brushlabels", "polygonlabels"):
      continue
    value = r.get("value")
    if not isinstance(value, dict):
      raise ValueError(f"a {kind} result without a 'value' object")
    names = value.get(kind)
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
      raise ValueError(f"a {kind} result must name one class in value.{kind}, got "
                       f"{names!r}")
    if names[0] not in classes:
      raise ValueError(f"unknown class {names[0]!r}; classes: {', '.join(classes)}")
    size = (r.get("original_height"), r.get("original_width"))
    if size != (None, None) and tuple(size) != (h, w):
      raise ValueError(f"a {kind} result drawn on a {size[0]}x{size[1]} image; the pool's "
                       f"images are {h}x{w}")
    if kind == "brushlabels":
      if value.get("format", "rle") != "rle" or "rle" not in value:
        raise ValueError("a brushlabels result needs value.rle (Label Studio's RLE format)")
      painted = brush_mask(value["rle"], h, w)
    else:
      painted = polygon_mask(value.get("points"), h, w)
    if mask is None:
      mask = np.zeros((h, w), np.int32)
    mask[painted] = classes.index(names[0])
  return mask


def mask_results(mask: np.ndarray, classes: list[str], *, skip_first: bool = True) -> list[dict]:
  """Label Studio ``brushlabels`` results of a class mask, one per class present (the first
  class, the background, left out with ``skip_first``): a pre-annotation an annotator
  corrects."""
  h, w = mask.shape
  out = []
  for c in np.unique(mask).tolist():
    if c < 0 or (skip_first and c == 0):
      continue
    out.append({"from_name": BRUSH_CONTROL, "to_name": "image", "type": "brushlabels",
                "original_width": w, "original_height": h, "image_rotation": 0,
                "value": {"format": "rle", "rle": brush_rle(mask == c),
                          "brushlabels": [classes[c]]}})
  return out


_PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48,
            145, 30, 180, 70, 240, 240, 240, 50, 230, 210, 245, 60, 250, 190, 212, 0, 128, 128,
            220, 190, 255, 170, 110, 40, 255, 250, 200, 128, 0, 0, 170, 255, 195, 128, 128, 0]


def mask_png(mask: np.ndarray) -> bytes:
  """PNG bytes of an ``[H, W]`` class mask (-1 -> 255, not labeled) as a palette image: the
  pixel values are the classes, the palette only colours them."""
  from PIL import Image

  mask = np.asarray(mask)
  if mask.ndim != 2 or mask.min(initial=0) < -1 or mask.max(initial=0) >= NOT_LABELED:
    raise ValueError(f"a mask is [H, W] classes in [0, 255) or -1, got {mask.shape}")
  img = Image.fromarray(np.where(mask < 0, NOT_LABELED, mask).astype(np.uint8), mode="P")
  palette = (_PALETTE * 16)[:255 * 3] + [255, 255, 255]
  img.putpalette(palette)
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


def read_answer_png(path: str, classes: list[str], shape: tuple[int, int]) -> np.ndarray:
  """``[H, W]`` int32 mask (-1 not labeled) of an index PNG answer, checked: an index image of
  the pool's size, every value a class index or 255."""
  mask = masks_lib.read_mask(path)
  if mask.shape != tuple(shape):
    raise ValueError(f"mask {path!r} is {mask.shape[0]}x{mask.shape[1]}; the pool's images are "
                     f"{shape[0]}x{shape[1]}")
  bad = np.unique(mask[(mask >= len(classes))])
  if bad.size:
    raise ValueError(f"mask {path!r} has values {bad.tolist()[:10]}; allowed: 0-{len(classes) - 1}"
                     f" (the classes) and 255 (not labeled)")
  return mask


def label_config(classes: list[str]) -> str:
  """A Label Studio labeling config for masks: brush and polygon tools over the classes."""
  from xml.sax.saxutils import quoteattr

  labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
  return (f'<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
          f'  <BrushLabels name="{BRUSH_CONTROL}" toName="image">\n{labels}\n  </BrushLabels>\n'
          f'  <PolygonLabels name="{BRUSH_CONTROL}_polygon" toName="image">\n{labels}\n'
          "  </PolygonLabels>\n</View>\n")


def answer_name(item_id: str) -> str:
  """The file name of an item's mask answer: its ID with the extension replaced by ``.png``
  (``photos/a.jpg`` -> ``photos/a.png``)."""
  return os.path.splitext(item_id)[0] + ".png"


def png_answers(folder: str, classes: list[str], shape: tuple[int, int], ids: set[str]):
  """``(where, id, mask)`` for each PNG under ``folder`` named :func:`answer_name` of a pool ID
  (or ``<id>.png``); a PNG that names no pool item, or two items, raises."""
  by_name: dict[str, list[str]] = {}
  for i in ids:
    by_name.setdefault(answer_name(i), []).append(i)
    by_name.setdefault(i + ".png", []).append(i)
  found = []
  for root, _, files in os.walk(folder):
    for f in sorted(files):
      if f.startswith(".") or not f.lower().endswith(".png"):
        continue
      path = os.path.join(root, f)
      name = os.path.relpath(path, folder).replace(os.sep, "/")
      match = sorted(set(by_name.get(name, [])))
      if len(match) != 1:
        raise ValueError(f"{path}: " + (f"names {match} (several pool items); name it "
                                        f"<id>.png, e.g. {match[0]}.png" if match else
                                        "no pool item has this name (an answer is named like "
                                        "its image, with .png)"))
      found.append((path, match[0], read_answer_png(path, classes, shape)))
  if not found:
    raise ValueError(f"{folder} holds no PNG masks named like the pool's images")
  ids_seen = [i for _, i, _ in found]
  twice = sorted({i for i in ids_seen if ids_seen.count(i) > 1})
  if twice:
    raise ValueError(f"{folder}: {twice[0]!r} is answered by two files; keep one")
  return sorted(found, key=lambda t: t[1])
