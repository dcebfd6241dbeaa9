"""Semantic segmentation: a class per pixel (``[N, H, W]`` int labels, ``IGNORE`` = -1 where a
pixel is not labeled), per-pixel cross-entropy, mean IoU / per-class IoU / pixel accuracy.

A partly labeled mask (a queried region, or an image whose annotator skipped pixels) trains on
its labeled pixels alone: an item's loss is the mean cross-entropy of its labeled pixels (0 when
it has none). IoU is computed over the whole evaluated set, class by class (``TP / (TP + FP +
FN)`` over the labeled pixels), and the mean IoU averages the classes that occur in the labels
or the predictions (the convention of the PASCAL VOC and Cityscapes benchmarks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dal_jax.tasks._base import Task
from dal_jax.tasks._base import register_task

IGNORE = -1


def pixel_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[B, H, W, C], [B, H, W] -> [B]``: each image's mean cross-entropy over its labeled pixels
  (``labels >= 0``)."""
  valid = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
  axes = tuple(range(1, labels.ndim))
  return jnp.sum(jnp.where(valid, ce, 0.0), axis=axes) / jnp.maximum(jnp.sum(valid, axis=axes), 1)


def confusion(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """``[C, C]`` pixel counts ``[true class, predicted class]`` over the labeled pixels;
  ``scores`` are log-probabilities or logits ``[..., C]``."""
  c = scores.shape[-1]
  pred = jnp.argmax(scores, axis=-1).reshape(-1)
  y = labels.reshape(-1)
  valid = y >= 0
  idx = jnp.where(valid, y, 0) * c + pred
  return jnp.bincount(idx, weights=valid.astype(jnp.float32), length=c * c).reshape(c, c)


def iou_per_class(conf: jax.Array) -> jax.Array:
  """``[C]`` IoU of each class from a confusion matrix; NaN for a class absent from both the
  labels and the predictions."""
  tp = jnp.diagonal(conf)
  union = jnp.sum(conf, axis=0) + jnp.sum(conf, axis=1) - tp
  return jnp.where(union > 0, tp / jnp.where(union > 0, union, 1.0), jnp.nan)


def mean_iou(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean IoU over the classes that occur (in the labels or the predictions)."""
  return jnp.nanmean(iou_per_class(confusion(scores, labels)))


def pixel_accuracy(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of labeled pixels whose argmax is their label."""
  valid = labels >= 0
  hit = (jnp.argmax(scores, axis=-1) == labels) & valid
  return jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)


def pixel_nll(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean negative log-likelihood of the labeled pixels (nats)."""
  valid = labels >= 0
  picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def metrics(log_probs, labels) -> dict:
  """Test metrics (host values): ``miou``, ``iou_per_class`` (None for absent classes),
  ``accuracy`` (pixel accuracy) and ``nll``."""
  log_probs, labels = jnp.asarray(log_probs), jnp.asarray(np.asarray(labels, np.int32))
  per_class = np.asarray(iou_per_class(confusion(log_probs, labels)), np.float64)
  return {"miou": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else 0.0,
          "iou_per_class": [None if np.isnan(v) else float(v) for v in per_class],
          "accuracy": float(pixel_accuracy(log_probs, labels)),
          "nll": float(pixel_nll(log_probs, labels))}


def _minus_nll(logits, labels):
  return -pixel_nll(jax.nn.log_softmax(logits), labels)


SEGMENTATION = register_task(Task(
    name="segmentation",
    label_shape=lambda input_shape: tuple(input_shape[:-1]),
    loss=pixel_loss,
    criteria=(("miou", mean_iou), ("accuracy", pixel_accuracy), ("nll", _minus_nll)),
    headline="miou",
    metrics=metrics,
    doc="a class per pixel (-1: not labeled): per-pixel cross-entropy; mIoU, pixel accuracy",
    regions=True))
