"""Region queries for segmentation: the annotator labels square windows of an image, not whole
images, and the budget counts labeled pixels.

An image of ``H x W`` pixels is a grid of ``(H / r) x (W / r)`` windows of ``r x r`` pixels.
A window's score is the reduction (:func:`dal_jax.acquisition.reduce_scores`: mean, max, sum,
top-q mean) of a per-pixel score over its pixels; a window any of whose pixels is labeled
already is not a candidate. :func:`select_windows` picks the best windows one by one, and once a
window is picked its eight neighbours in the same image are passed over for the rest of the round
(the non-maximum masking of Xie et al. 2022, RIPU, §3.2), so a batch is not a block of adjacent
windows on one uncertain object; it turns to masked windows only when no other is left.

:func:`ripu` is RIPU's per-pixel score: the *region impurity* of a pixel — the entropy of the
predicted classes in its ``k x k`` neighbourhood, high on boundaries between classes — times its
predictive entropy (Xie, Yuan, Li, Liu & Cheng, "Towards Fewer Annotations: Active Learning via
Region Impurity and Prediction Uncertainty for Domain Adaptive Semantic Segmentation", CVPR 2022).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dal_jax.acquisition import _reduce
from dal_jax.acquisition import _scores


def grid(shape: tuple[int, ...], size: int) -> tuple[int, int]:
  """``(rows, columns)`` of ``size x size`` windows tiling an ``[H, W]`` image; raises when
  ``size`` does not divide H and W."""
  if len(shape) != 2:
    raise ValueError(f"region queries need images with [H, W] labels, got label shape {shape}")
  h, w = shape
  if not (isinstance(size, (int, np.integer)) and size >= 1 and h % size == 0 and w % size == 0):
    raise ValueError(f"region_size={size!r} must be an integer >= 1 dividing the image's "
                     f"{h}x{w} pixels")
  return h // size, w // size


def window_box(window: int, rows_cols: tuple[int, int], size: int) -> tuple[int, int, int, int]:
  """``(top, left, bottom, right)`` pixels of window ``window`` (row-major; exclusive ends)."""
  r, c = divmod(int(window), rows_cols[1])
  return r * size, c * size, (r + 1) * size, (c + 1) * size


def window_scores(scores: ArrayLike, asked: ArrayLike, size: int, *, reduction: str = "mean",
                  q: float = 0.1) -> jax.Array:
  """``[N, H, W]`` pixel scores -> ``[N, G]`` window scores (row-major windows of ``size x
  size``): the reduction of each window's pixel scores; ``-inf`` for a window with a pixel in
  ``asked`` ``[N, H, W]`` (labeled already)."""
  scores, asked = jnp.asarray(scores), jnp.asarray(asked, bool)
  if scores.ndim != 3 or asked.shape != scores.shape:
    raise ValueError(f"window scores need [N, H, W] pixel scores and an asked mask of that "
                     f"shape, got {scores.shape} and {asked.shape}")
  gh, gw = grid(tuple(scores.shape[1:]), size)
  n = scores.shape[0]

  def windows(a):
    return a.reshape(n, gh, size, gw, size).transpose(0, 1, 3, 2, 4).reshape(n * gh * gw, -1)

  reduced = _reduce.reduce_scores(windows(scores), reduction=reduction, q=q)
  taken = jnp.any(windows(asked), axis=1)
  return jnp.where(taken, -jnp.inf, reduced).reshape(n, gh * gw)


def select_windows(scores: ArrayLike, k: int, rows_cols: tuple[int, int], *,
                   suppress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """The ``k`` windows to label: ``(items [k], windows [k])``, best first.

  Windows are taken by descending score (ties: the lower item, then the lower window); with
  ``suppress``, a taken window's eight neighbours in its image are skipped while any candidate
  that is not a neighbour is left. ``-inf`` windows are never taken.
  """
  s = np.asarray(scores, np.float64)
  n, g = s.shape
  k = _scores.count(k)
  order = np.lexsort((np.arange(n * g), -s.reshape(-1)))  # descending score, then position
  order = order[np.isfinite(s.reshape(-1)[order]) | (s.reshape(-1)[order] > 0)]
  if len(order) < k:
    raise ValueError(f"only {len(order)} windows can still be labeled, fewer than k={k}")
  taken = np.zeros(n * g, bool)
  masked = np.zeros(n * g, bool)
  chosen = []
  rows, cols = rows_cols
  for _ in range(k):
    pick = next((u for u in order if not taken[u] and not masked[u]), None)
    if pick is None:  # every remaining window neighbours a taken one
      pick = next(u for u in order if not taken[u])
    taken[pick] = True
    chosen.append(pick)
    if suppress:
      item, w = divmod(int(pick), g)
      r, c = divmod(w, cols)
      for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
          if 0 <= r + dr < rows and 0 <= c + dc < cols:
            masked[item * g + (r + dr) * cols + c + dc] = True
  chosen = np.asarray(chosen, np.int64)
  return chosen // g, chosen % g


def region_impurity(log_probs: ArrayLike, *, neighbourhood: int = 3) -> jax.Array:
  """``[S, N, H, W, C] -> [N, H, W]``: the entropy of the predicted-class histogram (argmax of
  the mean prediction) over each pixel's ``neighbourhood x neighbourhood`` window (its pixels
  inside the image)."""
  log_probs = _scores.validate_log_probs(log_probs, per_element=True)
  if log_probs.ndim != 5:
    raise ValueError(f"region impurity needs [S, N, H, W, C] log-probs of images, got shape "
                     f"{log_probs.shape}")
  c = log_probs.shape[-1]
  pred = jnp.argmax(_scores.mean_log_probs(log_probs), axis=-1)
  one_hot = jax.nn.one_hot(pred, c, dtype=jnp.float32)
  window = (1, neighbourhood, neighbourhood, 1)
  box = lambda a: jax.lax.reduce_window(a, 0.0, jax.lax.add, window, (1, 1, 1, 1),  # noqa: E731
                                        "SAME")
  counts = box(one_hot)
  total = box(jnp.ones_like(one_hot[..., :1]))
  p = counts / total
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def ripu(log_probs: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
  """RIPU (Xie et al. 2022): region impurity × predictive entropy of each pixel.

  Args:
    log_probs: ``[S, N, H, W, C]`` per-pixel log-probabilities of images.
    where: optional ``[N, H, W]`` pixel mask.

  Returns:
    ``[N, H, W]`` scores (``-inf`` outside ``where``); reduced per window or image by the
    acquisition's ``reduction``.
  """
  log_probs = _scores.validate_log_probs(log_probs, per_element=True)
  if log_probs.ndim != 5:
    raise ValueError(f"ripu scores pixels of images: it needs [S, N, H, W, C] log-probs (a "
                     f"segmentation model's), got shape {log_probs.shape}")
  where = _scores.validate_where(where, log_probs.shape[1:-1])
  score = region_impurity(log_probs) * _scores.predictive_entropy(log_probs)
  return _scores.apply_where(score, where)
