"""Acquisitions for object detection (:mod:`dal_jax.tasks.detection`).

A detector predicts, per cell of its grid, a distribution over background and the C classes
(``[S, N, h, w, C + 1]`` log-probs, background first). The generic per-element scores (entropy,
margin, BALD, ...) already score those cells; the scores here weight a cell by its
*objectness* ``o = 1 - p(background)`` so that confident background does not dilute an image's
score, and reduce per image with the acquisition's ``reduction`` (``max``, ``mean``, ``sum`` or
``top_q_mean``, the mean of the most uncertain fraction):

* :func:`box_entropy`: ``o · H(q)``, the entropy of the class distribution given an object
  ``q_c = p_c / o`` (the classification uncertainty of a would-be box);
* :func:`box_margin`: ``o · (1 - (q_(1) - q_(2)))``, one minus the margin between the two most
  probable classes given an object (the per-box uncertainty behind lightly's prediction-margin
  scores).

Two scores read the model itself, on transformed inputs:

* :func:`localization_stability` — Kao et al. 2018 ("Localization-Aware Active Learning for
  Object Detection"): the boxes detected on the clean image are compared with those detected
  after adding Gaussian noise of growing strength; a box's stability is its mean (over the
  noise levels) best IoU with the noisy detections, an image's the confidence-weighted mean over
  its boxes, and the score is one minus that (unstable localisation first);
* :func:`flip_consistency` — in the spirit of CALD (Yu et al. 2022, "Consistency-based Active
  Learning for Object Detection"): each confident box of the image is matched to the best box
  detected on its horizontally flipped copy (mirrored back); a box's inconsistency is
  ``1 - IoU + JS`` (JS: the Jensen-Shannon divergence between the two cells' class
  distributions) and the image scores its most inconsistent box, weighted by confidence.
  CALD's two-stage pipeline and its other augmentations are not reproduced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dal_jax.acquisition import _scores
from dal_jax.tasks import detection as det

_EPS = 1e-12


def _objectness_split(log_probs):
  """``(objectness [N, ...], q [N, ..., C])`` from ``[S, N, ..., C + 1]`` class log-probs
  (background first), after the mean over the samples."""
  p = jnp.exp(_scores.mean_log_probs(log_probs))  # [N, ..., C + 1]
  o = 1.0 - p[..., 0]
  q = p[..., 1:] / jnp.maximum(jnp.sum(p[..., 1:], axis=-1, keepdims=True), _EPS)
  return o, q


def box_entropy(log_probs: jax.Array, *, where=None) -> jax.Array:
  """Objectness-weighted class entropy per cell: ``o · H(p(class | object))`` (detection)."""
  log_probs, where = _scores._prepare(log_probs, where)
  o, q = _objectness_split(log_probs)
  h = -jnp.sum(jnp.where(q > 0, q * jnp.log(jnp.maximum(q, _EPS)), 0.0), axis=-1)
  return _scores.apply_where(o * h, where)


def box_margin(log_probs: jax.Array, *, where=None) -> jax.Array:
  """Objectness-weighted one-minus-margin per cell: ``o · (1 - (q_(1) - q_(2)))``
  (detection)."""
  log_probs, where = _scores._prepare(log_probs, where)
  o, q = _objectness_split(log_probs)
  top2 = jax.lax.top_k(q, 2)[0]
  return _scores.apply_where(o * (1.0 - (top2[..., 0] - top2[..., 1])), where)


def _detect(model, variables, x):
  outputs = model.apply(variables, x, train=False)[0]
  if outputs.ndim != 4 or outputs.shape[-1] < det.BOX_CHANNELS + 2:
    raise ValueError(f"this score reads a detector's outputs [N, h, w, C + 5] (class logits "
                     f"with background, then box regressions; model 'centernet'); the model "
                     f"gives {tuple(outputs.shape)}")
  return det.decode_outputs(outputs), det.log_probs(outputs)


def _weighted_mean(values, weights):
  return jnp.sum(values * weights, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), _EPS)


def localization_stability(model, variables, x, *, key, noise_levels: int = 6,
                           noise_step: float = 8 / 255, boxes: int = 5) -> jax.Array:
  """``[N]`` one minus the localization stability (Kao et al. 2018) of each image's ``boxes``
  most confident detections under Gaussian input noise of standard deviation ``m ·
  noise_step`` for ``m = 1..noise_levels`` (inputs in [0, 1])."""
  ref, _ = _detect(model, variables, x)
  conf = ref.scores[:, :boxes]
  ref_boxes = ref.boxes[:, :boxes]
  stabilities = []
  for m in range(1, noise_levels + 1):
    noise = jax.random.normal(jax.random.fold_in(key, m), x.shape, x.dtype)
    noisy, _ = _detect(model, variables, x + m * noise_step * noise)
    iou = det.box_iou(ref_boxes, noisy.boxes)  # [N, boxes, K]
    iou = jnp.where((noisy.scores > 0)[:, None, :], iou, 0.0)
    stabilities.append(jnp.max(iou, axis=-1))
  stability = jnp.mean(jnp.stack(stabilities), axis=0)  # [N, boxes]
  return 1.0 - _weighted_mean(stability, conf)


def flip_consistency(model, variables, x, *, key=None, boxes: int = 5) -> jax.Array:
  """``[N]`` the largest confidence-weighted inconsistency ``1 - IoU + JS`` between each image's
  ``boxes`` most confident detections and those on its horizontal mirror image (mirrored back;
  in the spirit of CALD, Yu et al. 2022)."""
  del key
  ref, lp = _detect(model, variables, x)
  flipped, lp_f = _detect(model, variables, x[:, :, ::-1])
  width = x.shape[2]
  mirrored = flipped.boxes.at[..., 1].set(width - flipped.boxes[..., 3]).at[..., 3].set(
      width - flipped.boxes[..., 1])
  iou = det.box_iou(ref.boxes[:, :boxes], mirrored)  # [N, boxes, K]
  iou = jnp.where((flipped.scores > 0)[:, None, :], iou, 0.0)
  best_iou = jnp.max(iou, axis=-1)
  # JS divergence of each reference box's cell distribution and the mirrored map's at that cell.
  n, h, w, _ = lp.shape
  p = jnp.exp(lp).reshape(n, h * w, -1)
  p_f = jnp.exp(lp_f[:, :, ::-1]).reshape(n, h * w, -1)
  cy = jnp.clip(((ref.boxes[:, :boxes, 0] + ref.boxes[:, :boxes, 2]) / 2 / det.STRIDE)
                .astype(jnp.int32), 0, h - 1)
  cx = jnp.clip(((ref.boxes[:, :boxes, 1] + ref.boxes[:, :boxes, 3]) / 2 / det.STRIDE)
                .astype(jnp.int32), 0, w - 1)
  cell = cy * w + cx
  a = jnp.take_along_axis(p, cell[..., None], axis=1)
  b = jnp.take_along_axis(p_f, cell[..., None], axis=1)
  mid = (a + b) / 2

  def kl(u, v):
    return jnp.sum(jnp.where(u > 0, u * (jnp.log(jnp.maximum(u, _EPS))
                                         - jnp.log(jnp.maximum(v, _EPS))), 0.0), axis=-1)

  js = (kl(a, mid) + kl(b, mid)) / 2
  conf = ref.scores[:, :boxes]
  return jnp.max(conf * (1.0 - best_iou + js), axis=-1)
