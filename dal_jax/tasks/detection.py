"""Object detection: a set of boxes with classes per image, held with static shapes.

**Labels.** One item's label is ``[B, 5]`` int32 rows ``(class, top, left, bottom, right)`` in
pixels (bottom / right exclusive), padded to a fixed ``B`` with rows of class -1 and zero
coordinates (:func:`pad_boxes`). An image answered with no object at all is all padding rows:
still labeled (its zeros are ``>= 0``), so it trains as background; an image nobody asked about
is ``UNKNOWN`` everywhere.

**Outputs.** A detector (``dal_jax.models``' ``centernet``) predicts on a grid of stride
:data:`STRIDE`: per cell ``C + 1`` class logits (index 0 = background, object class c at
c + 1) and 4 box regressions ``(dy, dx, log h, log w)``, concatenated as ``[B, h, w, C + 5]``.
This is CenterNet (Zhou et al. 2019, "Objects as Points") with the per-class sigmoid heatmaps
replaced by one softmax over background and the classes, so that every acquisition written for
per-element class distributions (entropy, margin, BALD under MC dropout or ensembles) scores a
detector's cells as it scores a segmenter's pixels, and reductions per image apply unchanged.

**Loss** (per image, normalised by its number of objects as in CenterNet):

* class term, CenterNet's penalty-reduced focal loss in softmax form: at an object's centre cell
  ``(1 - p_c)^α · -log p_c``; at every other cell ``(1 - Y)^β · (1 - p_bg)^α · -log p_bg``
  where ``Y`` is the largest Gaussian bump of any object at that cell (``σ = size / 6`` cells
  along each axis), so cells next to a centre are barely pushed to background (α = 2, β = 4);
* box term: L1 of the centre's sub-cell offset and of the log size (in cells) at centre cells.

**Decoding** (:func:`decode`): CenterNet's peak extraction — a cell-class score counts when it
is the maximum of its 3x3 neighbourhood — then the ``max_detections`` best peaks, each a box
around ``(cell + offset) · STRIDE`` of size ``exp(log size) · STRIDE``, clipped to the image.

**Metrics**: COCO mAP@[.5:.95] (``map``) and mAP@0.5 (``map50``) from pycocotools' COCOeval,
the maintained reference evaluator, used directly (:func:`coco_map`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax.tasks._base import Task
from dal_jax.tasks._base import register_task

STRIDE = 4  # input pixels per output cell of a detector
BOX_CHANNELS = 4  # (dy, dx, log h, log w) per cell
ALPHA, BETA = 2.0, 4.0  # CenterNet's focal exponents
MAX_DETECTIONS = 20  # boxes decoded per image for metrics and exports


def pad_boxes(boxes, max_boxes: int | None = None) -> np.ndarray:
  """``[N, B, 5]`` rows ``(class, top, left, bottom, right)`` with absent rows (class < 0)
  made padding rows ``(-1, 0, 0, 0, 0)``; ``max_boxes`` pads (or refuses to cut) to that many
  rows."""
  boxes = np.array(boxes, np.int32)
  if boxes.ndim != 3 or boxes.shape[-1] != 5:
    raise ValueError(f"boxes must be shaped [N, B, 5] (class, top, left, bottom, right), got "
                     f"{boxes.shape}")
  boxes[boxes[..., 0] < 0] = (-1, 0, 0, 0, 0)
  if max_boxes is not None:
    if (boxes[:, max_boxes:, 0] >= 0).any():
      raise ValueError(f"an image has more than {max_boxes} boxes")
    out = np.zeros((len(boxes), max_boxes, 5), np.int32)
    out[..., 0] = -1
    out[:, :min(max_boxes, boxes.shape[1])] = boxes[:, :max_boxes]
    boxes = out
  return boxes


def check_boxes(boxes, image_shape, num_classes: int, *, where: str = "boxes") -> None:
  """Raises one line naming the first bad row of ``[N, B, 5]`` boxes: a class outside
  ``[0, num_classes)``, a box outside the ``(H, W)`` image, or one without positive size."""
  boxes = np.asarray(boxes)
  h, w = image_shape[:2]
  for i, j in zip(*np.nonzero(boxes[..., 0] >= 0)):
    c, top, left, bottom, right = (int(v) for v in boxes[i, j])
    what = None
    if c >= num_classes:
      what = f"class {c} is not in [0, {num_classes})"
    elif not (0 <= top < bottom <= h and 0 <= left < right <= w):
      what = (f"box (top {top}, left {left}, bottom {bottom}, right {right}) is not a box of "
              f"positive size inside the {h}x{w} image")
    if what:
      raise ValueError(f"{where}: item {i}, box {j}: {what}")


def split_outputs(outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``[..., C + 5] -> ([..., C + 1] class logits, [..., 4] box regressions)``."""
  return outputs[..., :-BOX_CHANNELS], outputs[..., -BOX_CHANNELS:]


def log_probs(outputs: jax.Array) -> jax.Array:
  """Per-cell class log-probabilities ``[..., C + 1]`` (background first)."""
  return jax.nn.log_softmax(split_outputs(outputs)[0])


class Targets(NamedTuple):
  """One image's training targets on an ``[h, w]`` grid (``B`` box rows)."""

  valid: jax.Array  # [B] the row is an object
  cell: jax.Array  # [B] flat index of its centre cell
  cls: jax.Array  # [B] its class + 1 (the class channel)
  box: jax.Array  # [B, 4] (dy, dx, log h, log w) regression targets
  heat: jax.Array  # [h, w] the largest Gaussian bump at each cell


def targets(labels: jax.Array, grid: tuple[int, int]) -> Targets:
  """Training targets of one image's ``[B, 5]`` box rows on a ``grid = (h, w)`` of cells."""
  h, w = grid
  valid = labels[:, 0] >= 0
  top, left, bottom, right = (labels[:, i].astype(jnp.float32) / STRIDE for i in range(1, 5))
  cy, cx = (top + bottom) / 2, (left + right) / 2
  iy = jnp.clip(jnp.floor(cy), 0, h - 1)
  ix = jnp.clip(jnp.floor(cx), 0, w - 1)
  size_h = jnp.maximum(bottom - top, 1.0 / STRIDE)
  size_w = jnp.maximum(right - left, 1.0 / STRIDE)
  box = jnp.stack([cy - iy, cx - ix, jnp.log(size_h), jnp.log(size_w)], axis=-1)
  gy = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  gx = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  sy = jnp.maximum(size_h / 6, 0.25)[:, None, None]
  sx = jnp.maximum(size_w / 6, 0.25)[:, None, None]
  bumps = jnp.exp(-((gy - iy[:, None, None]) ** 2 / (2 * sy ** 2)
                    + (gx - ix[:, None, None]) ** 2 / (2 * sx ** 2)))
  heat = jnp.max(jnp.where(valid[:, None, None], bumps, 0.0), axis=0, initial=0.0)
  cell = (iy * w + ix).astype(jnp.int32)
  return Targets(valid=valid, cell=cell, cls=jnp.where(valid, labels[:, 0] + 1, 0), box=box,
                 heat=heat)


def _image_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """One image's loss: ``[h, w, C + 5]`` outputs, ``[B, 5]`` rows."""
  h, w, _ = outputs.shape
  logits, reg = split_outputs(outputs)
  lp = jax.nn.log_softmax(logits).reshape(h * w, -1)
  t = targets(labels, (h, w))
  positive = jnp.zeros(h * w, jnp.int32).at[t.cell].max(t.valid.astype(jnp.int32)) > 0
  lp_obj = lp[t.cell, t.cls]
  obj_term = jnp.where(t.valid, (1 - jnp.exp(lp_obj)) ** ALPHA * -lp_obj, 0.0)
  lp_bg = lp[:, 0]
  bg_term = (1 - t.heat.reshape(-1)) ** BETA * (-jnp.expm1(lp_bg)) ** ALPHA * -lp_bg
  bg_term = jnp.where(positive, 0.0, bg_term)
  box_term = jnp.where(t.valid[:, None], jnp.abs(reg.reshape(h * w, -1)[t.cell] - t.box), 0.0)
  count = jnp.maximum(jnp.sum(t.valid), 1)
  return (jnp.sum(obj_term) + jnp.sum(bg_term) + jnp.sum(box_term)) / count


def loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """``[N, h, w, C + 5], [N, B, 5] -> [N]`` each image's detection loss."""
  return jax.vmap(_image_loss)(outputs, labels)


def _minus_loss(outputs, labels):
  return -jnp.mean(loss(outputs, labels))


class Detections(NamedTuple):
  """Decoded detections, ``K = max_detections`` per image, best first: ``scores [..., K]``
  (class probability at a peak; 0 for padding), ``classes [..., K]`` int, ``boxes [..., K, 4]``
  float ``(top, left, bottom, right)`` in pixels."""

  scores: jax.Array
  classes: jax.Array
  boxes: jax.Array


def _decode_one(log_probs: jax.Array, reg: jax.Array, max_detections: int) -> Detections:
  h, w, c1 = log_probs.shape
  scores = jnp.exp(log_probs[..., 1:])  # [h, w, C]
  pooled = jax.lax.reduce_window(scores, -jnp.inf, jax.lax.max, (3, 3, 1), (1, 1, 1), "SAME")
  peaks = jnp.where(scores >= pooled, scores, 0.0).reshape(-1)
  k = min(max_detections, peaks.shape[0])
  best, idx = jax.lax.top_k(peaks, k)
  cell, cls = idx // (c1 - 1), idx % (c1 - 1)
  iy, ix = cell // w, cell % w
  r = reg.reshape(h * w, -1)[cell]
  cy, cx = (iy + r[:, 0]) * STRIDE, (ix + r[:, 1]) * STRIDE
  bh = jnp.exp(jnp.clip(r[:, 2], -8.0, 8.0)) * STRIDE
  bw = jnp.exp(jnp.clip(r[:, 3], -8.0, 8.0)) * STRIDE
  size = jnp.array([h * STRIDE, w * STRIDE, h * STRIDE, w * STRIDE], jnp.float32)
  boxes = jnp.clip(jnp.stack([cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2], -1), 0, size)
  return Detections(scores=best, classes=cls.astype(jnp.int32), boxes=boxes)


@functools.partial(jax.jit, static_argnames=("max_detections",))
def decode(log_probs: jax.Array, box_regression: jax.Array, *,
           max_detections: int = MAX_DETECTIONS) -> Detections:
  """Detections of ``[N, h, w, C + 1]`` class log-probs and ``[N, h, w, 4]`` regressions
  (compiled once per shape: the metrics, the acquisitions and a project's queries decode
  through it)."""
  return jax.vmap(lambda lp, r: _decode_one(lp, r, max_detections))(log_probs, box_regression)


def decode_outputs(outputs: jax.Array, *, max_detections: int = MAX_DETECTIONS) -> Detections:
  """Detections of a detector's raw ``[N, h, w, C + 5]`` outputs."""
  logits, reg = split_outputs(outputs)
  return decode(jax.nn.log_softmax(logits), reg, max_detections=max_detections)


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[..., P, 4], [..., Q, 4] -> [..., P, Q]`` IoU of ``(top, left, bottom, right)`` boxes
  (0 where the union is empty)."""
  a, b = a[..., :, None, :], b[..., None, :, :]
  ih = jnp.clip(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0)
  iw = jnp.clip(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0)
  inter = ih * iw
  area = lambda z: jnp.clip(z[..., 2] - z[..., 0], 0) * jnp.clip(z[..., 3] - z[..., 1], 0)
  union = area(a) + area(b) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def coco_map(detections: Detections, labels, num_classes: int) -> dict[str, float]:
  """COCO box mAP of ``detections`` against ``[N, B, 5]`` label rows, by pycocotools' COCOeval
  (its console output silenced, thread-safely: see :func:`_quiet_pycocotools`): ``map`` (IoU .50:.05:.95), ``map50`` and ``map75``, every
  area, 100 detections per image at most. Detections with score 0 are padding. NaN when the
  labels hold no box (mAP is undefined without ground truth)."""
  COCO, COCOeval = _quiet_pycocotools()
  labels = np.asarray(labels)
  scores, classes, boxes = (np.asarray(a, np.float64) for a in detections)
  images = [{"id": i + 1} for i in range(len(labels))]
  gts = [{"id": n + 1, "image_id": int(i) + 1, "category_id": int(labels[i, j, 0]) + 1,
          "bbox": _xywh(labels[i, j, 1:]), "area": float(_area(labels[i, j, 1:])), "iscrowd": 0}
         for n, (i, j) in enumerate(zip(*np.nonzero(labels[..., 0] >= 0)))]
  if not gts:
    return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
  dets = [{"image_id": int(i) + 1, "category_id": int(classes[i, j]) + 1,
           "bbox": _xywh(boxes[i, j]), "score": float(scores[i, j])}
          for i, j in zip(*np.nonzero(scores > 0))]
  if not dets:
    return {"map": 0.0, "map50": 0.0, "map75": 0.0}
  gt = COCO()
  gt.dataset = {"images": images, "annotations": gts,
                "categories": [{"id": c + 1} for c in range(num_classes)]}
  gt.createIndex()
  evaluation = COCOeval(gt, gt.loadRes(dets), "bbox")
  evaluation.evaluate()
  evaluation.accumulate()
  evaluation.summarize()
  stats = evaluation.stats
  return {"map": max(float(stats[0]), 0.0), "map50": max(float(stats[1]), 0.0),
          "map75": max(float(stats[2]), 0.0)}


def _quiet_pycocotools():
  """pycocotools' ``COCO`` and ``COCOeval`` with their progress prints silenced. Their modules
  call the builtin ``print``; a module-level ``print`` shadows it for them alone (redirecting
  ``sys.stdout`` would also swallow other threads' output, and the runner runs strategies in
  threads)."""
  from pycocotools import coco
  from pycocotools import cocoeval

  for module in (coco, cocoeval):
    module.print = _no_print
  return coco.COCO, cocoeval.COCOeval


def _no_print(*args, **kwargs):
  del args, kwargs


def _xywh(box) -> list[float]:
  top, left, bottom, right = (float(v) for v in box)
  return [left, top, right - left, bottom - top]


def _area(box) -> float:
  return float((box[2] - box[0]) * (box[3] - box[1]))


def metrics(log_probs, labels, box_regression=None) -> dict:
  """Test metrics (host values): COCO ``map``, ``map50``, ``map75`` of the decoded detections
  and ``objects`` (the labeled boxes)."""
  if box_regression is None:
    raise ValueError("detection metrics need the model's box_regression output")
  lp = jnp.asarray(log_probs)
  dets = decode(lp, jnp.asarray(box_regression))
  labels = np.asarray(labels)
  out = coco_map(dets, labels, lp.shape[-1] - 1)
  out["objects"] = int((labels[..., 0] >= 0).sum())
  return out


DETECTION = register_task(Task(
    name="detection",
    label_shape=lambda input_shape: (None, 5),
    loss=loss,
    criteria=(("loss", _minus_loss),),
    headline="map50",
    metrics=metrics,
    doc="boxes with classes per image ([B, 5] rows, class -1 pads): CenterNet-style loss on a "
        "stride-4 grid; COCO mAP",
    log_probs=log_probs,
    metric_outputs=("box_regression",),
    label_classes=lambda labels: np.asarray(labels)[..., 0]))
