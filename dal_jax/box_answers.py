"""Box answers: the files an annotator's boxes come in and go out as.

A box here is a row ``(class, top, left, bottom, right)`` in the pool image's pixels (bottom /
right exclusive), as the detection task holds it (:mod:`dal_jax.tasks.detection`).

* **COCO JSON** (any detection tool exports it): ``images`` (``id``, ``file_name``, optionally
  ``width`` / ``height``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` =
  ``[x, y, w, h]``) and ``categories`` (``id``, ``name``). An image's ``file_name`` names a pool
  item by its ID (what a project's queries write) or its path. Boxes are given in the image's own
  ``width x height`` pixels and scaled to the pool's size (the pool resizes every image); an
  image listed without annotations is answered "no object".
* **Label Studio rectangles**: ``rectanglelabels`` results hold ``x``, ``y``, ``width``,
  ``height`` in percent of the image and one label; rotated rectangles are refused (a box here is
  axis-aligned).

Every box is checked (a known class, finite coordinates, positive size, inside the image) and a
bad one refused with one line naming the file, the image and the box.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterator

from xml.sax.saxutils import quoteattr

RECT_CONTROL = "label"  # the RectangleLabels name in a detection project's labeling config
_EPS = 1e-6


def label_config(classes: list[str]) -> str:
  """A Label Studio labeling config: rectangles over the classes."""
  labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
  return (f'<View>\n  <Image name="image" value="$image"/>\n'
          f'  <RectangleLabels name="{RECT_CONTROL}" toName="image">\n{labels}\n'
          "  </RectangleLabels>\n</View>\n")


def load_json(path: str, what: str) -> Any:
  """A JSON file, or one line saying why it is not one."""
  try:
    with open(path, "rb") as f:
      return json.loads(f.read().decode("utf-8-sig"))
  except FileNotFoundError:
    raise ValueError(f"answers {path!r} do not exist") from None
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a {what} JSON file ({e}); a truncated file?") from None


def is_coco(obj) -> bool:
  return isinstance(obj, dict) and "images" in obj and "annotations" in obj


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pixel_box(top: float, left: float, bottom: float, right: float, shape, *, where: str,
              scale=(1.0, 1.0), size=None) -> list[int]:
  """``[top, left, bottom, right]`` in the pool image's integer pixels from a box given in an
  image of ``size = (height, width)`` (default the pool's ``shape``) and scaled by ``scale``;
  refused in one line when it has no positive size or leaves that image."""
  h, w = size or shape
  if not all(_number(v) for v in (top, left, bottom, right)):
    raise ValueError(f"{where}: box coordinates must be finite numbers")
  if not (bottom > top and right > left):
    raise ValueError(f"{where}: the box has no positive size (top {top:g}, left {left:g}, "
                     f"bottom {bottom:g}, right {right:g})")
  if top < -_EPS or left < -_EPS or bottom > h + _EPS or right > w + _EPS:
    raise ValueError(f"{where}: the box (top {top:g}, left {left:g}, bottom {bottom:g}, right "
                     f"{right:g}) leaves the {w:g}x{h:g} image")
  sy, sx = scale
  ph, pw = shape
  t = min(max(int(round(top * sy)), 0), ph - 1)
  l_ = min(max(int(round(left * sx)), 0), pw - 1)
  b = min(max(int(round(bottom * sy)), t + 1), ph)
  r = min(max(int(round(right * sx)), l_ + 1), pw)
  return [t, l_, b, r]


def coco_answers(path: str, obj, classes: list[str], shape: tuple[int, int],
                 resolve: Callable[[str], str | None]) -> Iterator[tuple[str, str, list]]:
  """``(where, item id, rows)`` of each image of a COCO JSON ``obj`` read from ``path``;
  ``resolve(file_name)`` gives the pool item an image names (None: unknown)."""
  if not (isinstance(obj.get("images"), list) and isinstance(obj.get("annotations"), list)):
    raise ValueError(f"{path}: a COCO file's 'images' and 'annotations' are lists")
  cats = obj.get("categories") or []
  names: dict[Any, str] = {}
  for c in cats:
    if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
      raise ValueError(f"{path}: a category needs an 'id' and a 'name'")
    if c["name"] not in classes:
      raise ValueError(f"{path}: category {c['name']!r} is not a class of the project; valid: "
                       f"{classes}")
    names[c["id"]] = c["name"]
  images: dict[Any, tuple[str, str, tuple[float, float]]] = {}
  seen: dict[str, Any] = {}
  for n, im in enumerate(obj["images"]):
    if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
      raise ValueError(f"{path}: image {n} needs an 'id' and a 'file_name'")
    where = f"{path}, image {im['file_name']!r}"
    item_id = resolve(im["file_name"])
    if item_id is None:
      raise ValueError(f"{where}: not a pool item (file_name must be an item ID or path)")
    if item_id in seen:
      raise ValueError(f"{where}: {item_id!r} is listed twice (images {seen[item_id]} and "
                       f"{im['id']})")
    if im["id"] in images:
      raise ValueError(f"{where}: image id {im['id']!r} is used twice")
    seen[item_id] = im["id"]
    size = (float(im.get("height", shape[0])), float(im.get("width", shape[1])))
    if not all(_number(v) and v > 0 for v in size):
      raise ValueError(f"{where}: width and height must be positive numbers")
    images[im["id"]] = (where, item_id, size)
  rows: dict[Any, list] = {i: [] for i in images}
  for n, a in enumerate(obj["annotations"]):
    if not isinstance(a, dict) or a.get("image_id") not in images:
      raise ValueError(f"{path}: annotation {a.get('id', n) if isinstance(a, dict) else n} "
                       "names no listed image (image_id)")
    where, _, size = images[a["image_id"]]
    where = f"{where}, annotation {a.get('id', n)}"
    if a.get("category_id") not in names:
      raise ValueError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'")
    bbox = a.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4):
      raise ValueError(f"{where}: 'bbox' must be [x, y, width, height]")
    x, y, bw, bh = bbox
    box = pixel_box(y, x, y + bh if _number(y) and _number(bh) else y,
                    x + bw if _number(x) and _number(bw) else x, shape, where=where,
                    scale=(shape[0] / size[0], shape[1] / size[1]), size=size)
    rows[a["image_id"]].append([classes.index(names[a["category_id"]]), *box])
  for image_id, (where, item_id, _) in images.items():
    yield where, item_id, rows[image_id]


def rectangle_rows(results, classes: list[str], shape: tuple[int, int], *, where: str) -> list:
  """Box rows of one Label Studio annotation's ``rectanglelabels`` results (percent units)."""
  out = []
  for n, r in enumerate(results):
    if not isinstance(r, dict) or r.get("type") != "rectanglelabels":
      continue
    v = r.get("value") or {}
    at = f"{where}, result {r.get('id', n)}"
    labels = v.get("rectanglelabels") or []
    if len(labels) != 1 or labels[0] not in classes:
      raise ValueError(f"{at}: a rectangle needs one label of {classes}, got {labels}")
    if _number(v.get("rotation", 0)) and abs(v.get("rotation", 0)) > _EPS:
      raise ValueError(f"{at}: a rotated rectangle ({v['rotation']:g} degrees) is not an "
                       "axis-aligned box; draw it without rotation")
    x, y, w, h = (v.get(k) for k in ("x", "y", "width", "height"))
    if not all(_number(u) for u in (x, y, w, h)):
      raise ValueError(f"{at}: x, y, width and height must be numbers (percent of the image)")
    box = pixel_box(y, x, y + h, x + w, shape, where=at,
                    scale=(shape[0] / 100, shape[1] / 100), size=(100.0, 100.0))
    out.append([classes.index(labels[0]), *box])
  return out


def rectangle_results(rows, classes: list[str], shape: tuple[int, int], scores=None
                      ) -> list[dict]:
  """Label Studio ``rectanglelabels`` results of box rows (pre-annotations)."""
  h, w = shape
  out = []
  for n, (c, top, left, bottom, right) in enumerate(rows):
    result = {"id": f"box{n}", "from_name": RECT_CONTROL, "to_name": "image",
              "type": "rectanglelabels", "original_width": w, "original_height": h,
              "image_rotation": 0,
              "value": {"x": 100 * left / w, "y": 100 * top / h,
                        "width": 100 * (right - left) / w, "height": 100 * (bottom - top) / h,
                        "rotation": 0, "rectanglelabels": [classes[int(c)]]}}
    if scores is not None:
      result["score"] = float(scores[n])
    out.append(result)
  return out


def coco_file(items: list[tuple[str, list, list | None]], classes: list[str],
              shape: tuple[int, int]) -> dict:
  """A COCO JSON object of ``(item id, rows, scores or None)`` per image (file_name = the ID;
  the pool's size; predicted boxes carry a ``score``)."""
  h, w = shape
  images, annotations = [], []
  for n, (item_id, rows, scores) in enumerate(items, 1):
    images.append({"id": n, "file_name": item_id, "width": w, "height": h})
    for j, (c, top, left, bottom, right) in enumerate(rows):
      ann = {"id": len(annotations) + 1, "image_id": n, "category_id": int(c) + 1,
             "bbox": [float(left), float(top), float(right - left), float(bottom - top)],
             "area": float((right - left) * (bottom - top)), "iscrowd": 0}
      if scores is not None:
        ann["score"] = round(float(scores[j]), 6)
      annotations.append(ann)
  return {"images": images, "annotations": annotations,
          "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
